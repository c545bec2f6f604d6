"""Domain-adaptation heads for training a classifier on real + synthetic defect images.

Synthetic defects are never quite like real ones, and a classifier trained on both can learn to
tell them apart instead of learning the defect classes. DT-GAN (appendix B) and Defect-GAN (section
3.2) close that gap the same way: a small *source classifier* (real vs synthetic) is attached to the
backbone's pooled features through a Gradient Reversal Layer (Ganin & Lempitsky, 2015). The source
classifier learns to separate the two sources, while the reversed gradient pushes the backbone
towards features in which they cannot be separated. The usual classifier stays as it is.

Typical use::

    from torch.utils.data import ConcatDataset
    from defectaug.heads import SOURCE_REAL, SOURCE_SYNTHETIC, SourceTagged, attach_source_head

    data = ConcatDataset([SourceTagged(real, SOURCE_REAL), SourceTagged(fake, SOURCE_SYNTHETIC)])
    model = attach_source_head(torchvision.models.resnet18(num_classes=6), total_steps=10_000)
    for images, labels, sources in loader:
        class_logits, source_logits = model(images)
        loss = F.cross_entropy(class_logits, labels) + model.head.loss(source_logits, sources)
        loss.backward(); optimizer.step(); optimizer.zero_grad()
        model.head.step()  # advance the reversal-weight ramp once per iteration
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from defectaug._checks import check_int, check_number

__all__ = [
    "SOURCE_REAL",
    "SOURCE_SYNTHETIC",
    "GRLSourceHead",
    "GradientReversal",
    "SourceHeadModel",
    "SourceTagged",
    "attach_source_head",
    "dann_schedule",
    "gradient_reversal",
    "source_loss",
]

SOURCE_REAL = 0
SOURCE_SYNTHETIC = 1

ScheduleArg = Literal["dann", "constant"] | Callable[[float], float]


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
        # A copy of a tensor weight, so a schedule step between forward and backward does not
        # change the weight this forward pass was taken with.
        ctx.weight = weight.detach().clone() if isinstance(weight, torch.Tensor) else weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        weight = ctx.weight
        if isinstance(weight, torch.Tensor):
            # A 0-dim weight does not promote the gradient's dtype (bf16 stays bf16 under autocast).
            weight = weight.to(device=grad.device)
        return grad * -weight, None


def gradient_reversal(x: torch.Tensor, weight: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Identity in the forward pass; multiplies the incoming gradient by ``-weight`` in backward.

    ``weight`` is a number >= 0 or a one-element tensor (e.g. a buffer updated by a schedule; its
    value at call time is the one used by backward). ``weight = 0`` blocks the gradient entirely.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if isinstance(weight, torch.Tensor):
        if weight.numel() != 1 or not weight.is_floating_point():
            raise ValueError(
                f"weight: expected a one-element floating-point tensor, got shape "
                f"{tuple(weight.shape)} and dtype {weight.dtype}"
            )
        weight = weight.reshape(())
    else:
        weight = check_number(weight, "weight", 0)
    return _ReverseGradient.apply(x, weight)


class GradientReversal(nn.Module):
    """``nn.Module`` form of :func:`gradient_reversal`; ``weight`` is a (checkpointed) buffer."""

    weight: torch.Tensor

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("weight", torch.tensor(check_number(weight, "weight", 0)))

    def set_weight(self, weight: float) -> None:
        """Set the reversal weight in place (keeps the buffer's device and dtype)."""
        self.weight.fill_(check_number(weight, "weight", 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gradient_reversal(x, self.weight)

    def extra_repr(self) -> str:
        return f"weight={float(self.weight):.4g}"


def dann_schedule(progress: float, gamma: float = 10.0, max_weight: float = 1.0) -> float:
    """The DANN ramp ``max_weight * (2 / (1 + exp(-gamma * progress)) - 1)``: 0 at the start, then
    rising quickly towards ``max_weight``, so the source branch does not disturb early training."""
    progress = check_number(progress, "progress", 0, 1)
    return max_weight * (2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0)


def source_loss(
    logits: torch.Tensor,
    source_labels: torch.Tensor,
    *,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> torch.Tensor:
    """Cross-entropy of source logits ``[B, S]`` against source labels ``[B]`` (0 = real,
    1 = synthetic, see :data:`SOURCE_REAL` / :data:`SOURCE_SYNTHETIC`).

    Computed in float32 whatever the logits' dtype, so it is safe inside ``torch.autocast``. An
    empty batch (``B = 0``) gives a zero loss (still on the graph) rather than the NaN of an empty
    mean, so a step without source-labelled items leaves the weights as they are.
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or not logits.is_floating_point():
        got = (
            f"shape {tuple(logits.shape)} and dtype {logits.dtype}"
            if isinstance(logits, torch.Tensor)
            else type(logits).__name__
        )
        raise ValueError(f"logits: expected a float tensor [B, num_sources], got {got}")
    if not isinstance(source_labels, torch.Tensor):
        source_labels = torch.as_tensor(source_labels, device=logits.device)
    if (
        source_labels.dtype == torch.bool
        or source_labels.is_floating_point()
        or source_labels.is_complex()
    ):
        raise TypeError(
            f"source_labels: expected an integer tensor (0 = real, 1 = synthetic), "
            f"got dtype {source_labels.dtype}"
        )
    if source_labels.shape != logits.shape[:1]:
        raise ValueError(
            f"source_labels: expected shape {tuple(logits.shape[:1])} to match logits "
            f"{tuple(logits.shape)}, got {tuple(source_labels.shape)}"
        )
    num_sources = logits.shape[1]
    if source_labels.numel() and bool(((source_labels < 0) | (source_labels >= num_sources)).any()):
        raise ValueError(
            f"source_labels: expected values in [0, {num_sources - 1}] for {num_sources} sources, "
            f"got values in [{int(source_labels.min())}, {int(source_labels.max())}]"
        )
    if reduction == "mean" and logits.shape[0] == 0:
        # The mean of nothing is NaN, and one NaN loss poisons every weight through the optimizer.
        # An empty batch (e.g. no synthetic item in this step) contributes nothing instead: a zero
        # that stays on the autograd graph, so ``loss.backward()`` still works and adds no gradient.
        return logits.float().sum()
    return F.cross_entropy(
        logits.float(),
        source_labels.to(device=logits.device, dtype=torch.long),
        reduction=reduction,
    )


def _resync_after_load(module: nn.Module, incompatible_keys: Any) -> None:
    module._sync_step_mirror()


class GRLSourceHead(nn.Module):
    """Source classifier (real vs synthetic) behind a Gradient Reversal Layer.

    ``forward(features)`` takes pooled backbone features ``[B, in_features]`` (or ``[B, F, 1, 1]``)
    and returns source logits ``[B, num_sources]`` in the head's own dtype (features of any floating
    dtype, e.g. float64 or bfloat16, are cast to it). The MLP is ``depth`` linear layers with ReLU
    between them, initialised as in DT-GAN: normal with std 0.01 for the hidden layers, 0.05 for
    the output layer, biases 0. ``depth=2`` is their ResNet-50 head, ``depth=3`` their
    EfficientNet-b4 head.

    The reversal weight (lambda) follows ``schedule``:

    - ``"dann"``: ``max_weight * (2 / (1 + exp(-gamma * p)) - 1)`` with ``p = steps / total_steps``
      (clamped to 1); needs ``total_steps``.
    - ``"constant"``: always ``max_weight``.
    - a callable ``progress -> weight`` (a number >= 0) with the same ``p``; needs ``total_steps``.

    Call :meth:`step` once per training iteration (it does nothing in eval mode) or
    :meth:`set_progress` directly. The step counter (``steps``) and current lambda (``grl.weight``)
    are buffers, so a checkpoint resumes the ramp where it stopped.
    """

    steps: torch.Tensor

    def __init__(
        self,
        in_features: int,
        hidden: int = 1024,
        depth: int = 2,
        num_sources: int = 2,
        schedule: ScheduleArg = "dann",
        gamma: float = 10.0,
        max_weight: float = 1.0,
        total_steps: int | None = None,
        *,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value, minimum in (
            ("in_features", in_features, 1),
            ("hidden", hidden, 1),
            ("num_sources", num_sources, 2),
        ):
            check_int(value, name, minimum, what=f"an int >= {minimum}")
        if depth not in (2, 3) or isinstance(depth, bool):
            raise ValueError(
                f"depth: expected 2 (DT-GAN's ResNet-50 head) or 3 (their EfficientNet head), "
                f"got {depth!r}"
            )
        if isinstance(schedule, str):
            if schedule not in ("dann", "constant"):
                raise ValueError(
                    f"schedule: expected 'dann', 'constant' or a callable progress -> weight, "
                    f"got {schedule!r}"
                )
        elif not callable(schedule):
            raise TypeError(
                f"schedule: expected 'dann', 'constant' or a callable progress -> weight, "
                f"got {type(schedule).__name__}"
            )
        check_number(gamma, "gamma", 0, low_open=True)
        max_weight = check_number(max_weight, "max_weight", 0)
        if total_steps is None:
            if schedule != "constant":
                kind = repr(schedule) if isinstance(schedule, str) else "a callable"
                raise ValueError(
                    f"total_steps: required for schedule={kind} (progress = steps / total_steps); "
                    f"pass the number of training iterations"
                )
        else:
            check_int(total_steps, "total_steps", 1, what="an int >= 1 or None")
        check_number(dropout, "dropout", 0, 1, high_open=True)

        self.in_features = in_features
        self.hidden = hidden
        self.depth = depth
        self.num_sources = num_sources
        self.schedule = schedule
        self.gamma = float(gamma)
        self.max_weight = max_weight
        self.total_steps = total_steps

        self.grl = GradientReversal(0.0)
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth - 1):
            linear = nn.Linear(width, hidden)
            nn.init.normal_(linear.weight, std=0.01)
            nn.init.zeros_(linear.bias)
            layers += [linear, nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        output = nn.Linear(width, num_sources)
        nn.init.normal_(output.weight, std=0.05)
        nn.init.zeros_(output.bias)
        layers.append(output)
        self.classifier = nn.Sequential(*layers)

        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        # Python mirror of ``steps``: stepping never reads the buffer (no device sync per step).
        self._step_count = 0
        self.register_load_state_dict_post_hook(_resync_after_load)
        self.grl.set_weight(self._schedule_value(0.0))

    def _sync_step_mirror(self) -> None:
        self._step_count = int(self.steps)

    def _schedule_value(self, progress: float) -> float:
        if self.schedule == "constant":
            return self.max_weight
        if self.schedule == "dann":
            return dann_schedule(progress, self.gamma, self.max_weight)
        value = self.schedule(progress)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        return check_number(value, f"schedule (returned for progress {progress:.4g})", 0)

    @property
    def progress(self) -> float | None:
        """Progress in [0, 1] (``steps / total_steps``), or None without ``total_steps``."""
        if self.total_steps is None:
            return None
        return min(self._step_count / self.total_steps, 1.0)

    @property
    def reversal_weight(self) -> float:
        """The current lambda (the gradient reversal weight)."""
        return float(self.grl.weight)

    def step(self) -> float:
        """Advance the schedule by one training iteration and return the new lambda.

        In eval mode nothing changes (validation passes must not move the ramp).
        """
        if not self.training:
            return self.reversal_weight
        self._step_count += 1
        self.steps.fill_(self._step_count)
        if self.total_steps is None:
            return self.max_weight
        value = self._schedule_value(min(self._step_count / self.total_steps, 1.0))
        self.grl.set_weight(value)
        return value

    def set_progress(self, progress: float) -> float:
        """Jump the schedule to ``progress`` in [0, 1] and return the new lambda.

        With ``total_steps`` the step counter moves to ``round(progress * total_steps)``, so later
        :meth:`step` calls continue from there.
        """
        progress = check_number(progress, "progress", 0, 1)
        if self.total_steps is not None:
            self._step_count = round(progress * self.total_steps)
            self.steps.fill_(self._step_count)
        value = self._schedule_value(progress)
        self.grl.set_weight(value)
        return value

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not isinstance(features, torch.Tensor):
            raise TypeError(f"features: expected a torch.Tensor, got {type(features).__name__}")
        if features.ndim > 2 and all(size == 1 for size in features.shape[2:]):
            features = features.flatten(1)
        if features.ndim != 2 or features.shape[1] != self.in_features:
            raise ValueError(
                f"features: expected pooled features [B, {self.in_features}] (or "
                f"[B, {self.in_features}, 1, 1]), got shape {tuple(features.shape)}; check "
                f"in_features, or attach the head after the global pooling layer"
            )
        if not features.is_floating_point():
            raise TypeError(f"features: expected a floating-point tensor, got {features.dtype}")
        # Backbones in float64 or bfloat16 meet a head that stays in its own dtype (float32 unless
        # moved): the features are cast to it, and autograd casts the reversed gradient back.
        # Under autocast the Linear layers still run in the autocast dtype.
        dtype = self.classifier[0].weight.dtype
        return self.classifier(self.grl(features).to(dtype))

    def loss(
        self,
        logits: torch.Tensor,
        source_labels: torch.Tensor,
        *,
        reduction: Literal["mean", "sum", "none"] = "mean",
    ) -> torch.Tensor:
        """Source cross-entropy (float32, autocast-safe); see :func:`source_loss`."""
        if (
            isinstance(logits, torch.Tensor)
            and logits.ndim == 2
            and logits.shape[1] != self.num_sources
        ):
            raise ValueError(
                f"logits: expected {self.num_sources} source logits per item, got shape "
                f"{tuple(logits.shape)}"
            )
        return source_loss(logits, source_labels, reduction=reduction)

    def extra_repr(self) -> str:
        schedule = (
            self.schedule
            if isinstance(self.schedule, str)
            else getattr(self.schedule, "__name__", type(self.schedule).__name__)
        )
        return (
            f"in_features={self.in_features}, hidden={self.hidden}, depth={self.depth}, "
            f"num_sources={self.num_sources}, schedule={schedule}, gamma={self.gamma:g}, "
            f"max_weight={self.max_weight:g}, total_steps={self.total_steps}"
        )


class SourceTagged(Dataset):
    """Wrap a dataset so every item carries its source label: ``(*item, source)``.

    ``ConcatDataset([SourceTagged(real, SOURCE_REAL), SourceTagged(synthetic, SOURCE_SYNTHETIC)])``
    then yields ``(image, label, source)`` from ImageFolder-style datasets. A non-tuple item ``x``
    becomes ``(x, source)``; a dict item gets a ``"source"`` key.
    """

    def __init__(self, dataset: Dataset, source: int) -> None:
        if isinstance(source, bool) or not isinstance(source, int) or source < 0:
            raise ValueError(
                f"source: expected an int >= 0 (SOURCE_REAL = 0, SOURCE_SYNTHETIC = 1), "
                f"got {source!r}"
            )
        if not hasattr(dataset, "__getitem__"):
            raise TypeError(f"dataset: expected a map-style Dataset, got {type(dataset).__name__}")
        self.dataset = dataset
        self.source = source

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        if isinstance(item, dict):
            if "source" in item:
                raise KeyError(
                    "dataset: items already have a 'source' key; SourceTagged would overwrite it"
                )
            return {**item, "source": self.source}
        if isinstance(item, (tuple, list)):
            return (*item, self.source)
        return (item, self.source)

    def __repr__(self) -> str:
        return f"SourceTagged({self.dataset!r}, source={self.source})"


# Names torchvision, timm and common custom models give their global pooling layer.
_POOL_LAYER_NAMES = ("avgpool", "global_pool", "avg_pool", "gap", "pool")
_MAX_CANDIDATES = 8
_POOL_TYPES = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)


def _is_timm_style(model: nn.Module) -> bool:
    return all(
        callable(getattr(model, name, None)) for name in ("forward_features", "forward_head")
    )


def _candidate_layers(model: nn.Module) -> str:
    pooled = [
        name
        for name, module in model.named_modules()
        if name
        and (
            isinstance(module, (*_POOL_TYPES, nn.Flatten))
            or name.rsplit(".", 1)[-1] in _POOL_LAYER_NAMES
        )
    ]
    names = sorted(pooled, key=lambda name: name.count(".")) or [
        n for n, _ in model.named_children()
    ]
    shown = ", ".join(names[:_MAX_CANDIDATES])
    return shown + (
        f" (+{len(names) - _MAX_CANDIDATES} more)" if len(names) > _MAX_CANDIDATES else ""
    )


def _find_pool_layer(model: nn.Module) -> str | None:
    for name in _POOL_LAYER_NAMES:
        module = getattr(model, name, None)
        # torchvision's ``avgpool`` and timm's ``global_pool`` are global by convention; a layer
        # merely called ``pool`` may be a strided pooling used inside the network.
        if isinstance(module, nn.Module) and (
            name in ("avgpool", "global_pool") or isinstance(module, _POOL_TYPES)
        ):
            return name
    adaptive = [name for name, module in model.named_modules() if isinstance(module, _POOL_TYPES)]
    return adaptive[0] if len(adaptive) == 1 else None


def _resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer and name:
                return name, module
        raise ValueError(
            f"layer: the given {type(layer).__name__} is not a submodule of the model; candidate "
            f"layers: {_candidate_layers(model)}"
        )
    if not isinstance(layer, str):
        raise TypeError(
            f"layer: expected a submodule name (str) or module, got {type(layer).__name__}"
        )
    try:
        return layer, model.get_submodule(layer)
    except AttributeError:
        raise ValueError(
            f"layer: {type(model).__name__} has no submodule {layer!r}; candidate layers: "
            f"{_candidate_layers(model)}"
        ) from None


def _feature_size_after(model: nn.Module, layer_name: str, layer: nn.Module) -> int | None:
    """Width of the pooled features, read from the first ``nn.Linear`` registered after the layer
    (torchvision's ``fc`` / ``classifier`` consume the pooled features directly)."""
    if isinstance(layer, nn.Linear):
        return layer.out_features
    seen = False
    for name, module in model.named_modules():
        if name == layer_name:
            seen = True
        elif seen and isinstance(module, nn.Linear) and not name.startswith(layer_name + "."):
            return module.in_features
    return None


class SourceHeadModel(nn.Module):
    """A classifier with a source head on its pooled features; ``forward`` returns
    ``(class_logits, source_logits)``. The wrapped ``model`` is used unchanged, so its own
    classifier, ``state_dict`` keys (under ``model.``) and behaviour stay as they were."""

    def __init__(self, model: nn.Module, head: nn.Module, layer: str | None) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self.layer = layer

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Pooled features (before the head) and the model's own output for ``x``."""
        if self.layer is None:
            features = self.model.forward_features(x)
            pooled = self.model.forward_head(features, pre_logits=True)
            return pooled, self.model.forward_head(features)
        captured: list[Any] = []
        handle = self.model.get_submodule(self.layer).register_forward_hook(
            lambda module, args, output: captured.append(output)
        )
        try:
            class_logits = self.model(x)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RuntimeError(
                f"layer: {self.layer!r} ran {len(captured)} times in one forward pass; name a "
                f"layer that runs exactly once (the global pooling layer)"
            )
        features = captured[0]
        if not isinstance(features, torch.Tensor):
            raise TypeError(
                f"layer: {self.layer!r} returned a {type(features).__name__}, expected a tensor of "
                f"pooled features"
            )
        return features, class_logits

    def forward(self, x: torch.Tensor) -> tuple[Any, torch.Tensor]:
        features, class_logits = self.features_and_logits(x)
        return class_logits, self.head(features)


def attach_source_head(
    model: nn.Module,
    head: nn.Module | None = None,
    layer: str | nn.Module | None = None,
    **head_options: Any,
) -> SourceHeadModel:
    """Attach a source head (default: a :class:`GRLSourceHead`) to ``model``'s pooled features.

    The pooled-feature layer is found as follows:

    - ``layer`` given (a submodule name such as ``"avgpool"`` or the module itself): its output,
      captured with a forward hook, must be ``[B, F]`` or ``[B, F, 1, 1]``.
    - timm-style models (``forward_features`` + ``forward_head``): ``forward_head(...,
      pre_logits=True)``, width ``head_hidden_size`` or ``num_features``.
    - otherwise a child named ``avgpool`` (torchvision ResNet / EfficientNet / MobileNet / ...),
      ``global_pool``, ``avg_pool``, ``gap`` or ``pool``, or the model's only adaptive pooling
      layer.

    With ``head=None`` a ``GRLSourceHead(in_features, **head_options)`` is built; ``in_features`` is
    read from the model (``num_features``, or the first ``nn.Linear`` after the layer). Pass e.g.
    ``total_steps=...`` or ``schedule="constant"`` through ``head_options``. The original model,
    including its classifier, is not modified.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if head is not None and not isinstance(head, nn.Module):
        raise TypeError(f"head: expected an nn.Module or None, got {type(head).__name__}")
    if head is not None and head_options:
        raise ValueError(
            f"head_options: {', '.join(sorted(head_options))} only apply when head is None "
            f"(the head is built here); configure the given head instead"
        )

    layer_name: str | None
    in_features: int | None
    if layer is not None:
        layer_name, layer_module = _resolve_layer(model, layer)
        in_features = _feature_size_after(model, layer_name, layer_module)
    elif _is_timm_style(model):
        layer_name = None
        in_features = getattr(model, "head_hidden_size", None) or getattr(
            model, "num_features", None
        )
    else:
        layer_name = _find_pool_layer(model)
        if layer_name is None:
            raise ValueError(
                f"layer: could not find the pooled-feature layer of {type(model).__name__}; pass "
                f"layer=<name of the global pooling layer>; candidate layers: "
                f"{_candidate_layers(model)}"
            )
        layer_module = model.get_submodule(layer_name)
        if isinstance(getattr(model, "num_features", None), int):
            in_features = model.num_features
        else:
            in_features = _feature_size_after(model, layer_name, layer_module)

    if head is None:
        if not isinstance(in_features, int):
            where = f"layer {layer_name!r}" if layer_name else "the model"
            raise ValueError(
                f"head: cannot tell the feature width of {where} of {type(model).__name__}; pass "
                f"head=GRLSourceHead(in_features=..., ...)"
            )
        head = GRLSourceHead(in_features, **head_options)
        reference = next(model.parameters(), None)
        if reference is not None:
            head = head.to(device=reference.device, dtype=reference.dtype)
    return SourceHeadModel(model, head, layer_name)
