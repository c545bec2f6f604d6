import copy
import math

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, TensorDataset

from defectaug.heads import (
    SOURCE_REAL,
    SOURCE_SYNTHETIC,
    GradientReversal,
    GRLSourceHead,
    SourceHeadModel,
    SourceTagged,
    attach_source_head,
    dann_schedule,
    gradient_reversal,
    source_loss,
)


def _tiny_backbone() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )


# ---------------------------------------------------------------- gradient reversal


@pytest.mark.parametrize("weight", [0.0, 0.25, 1.0, 0.37])
def test_gradient_is_reversed_and_scaled_exactly(weight):
    torch.manual_seed(1)
    x = torch.randn(4, 5)
    projection = torch.randn(5, 3)

    def downstream(t):
        return (t @ projection).tanh().sum()

    reference = x.clone().requires_grad_(True)
    downstream(reference).backward()

    reversed_input = x.clone().requires_grad_(True)
    out = gradient_reversal(reversed_input, weight)
    assert torch.equal(out, x)  # the forward pass is the identity: the very same values
    downstream(out).backward()
    expected = reference.grad * -torch.tensor(weight)
    # A float32 product against a Python-float product: equal up to rounding, not bit for bit.
    torch.testing.assert_close(reversed_input.grad, expected, rtol=1e-6, atol=0)
    if weight > 0:
        assert torch.all(torch.sign(reversed_input.grad) == -torch.sign(reference.grad))


def test_module_uses_the_weight_of_its_forward_pass():
    layer = GradientReversal(0.5)
    x = torch.ones(3, requires_grad=True)
    y = layer(x)
    layer.set_weight(2.0)  # a schedule step between forward and backward
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3,), -0.5))
    assert "weight" in dict(layer.named_buffers())
    assert float(layer.state_dict()["weight"]) == 2.0


def test_gradient_reversal_accepts_a_tensor_weight_and_rejects_bad_ones():
    x = torch.ones(2, requires_grad=True)
    gradient_reversal(x, torch.tensor([0.75])).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((2,), -0.75))
    with pytest.raises(ValueError, match="weight"):
        gradient_reversal(x, -1.0)
    with pytest.raises(ValueError, match="weight"):
        gradient_reversal(x, float("nan"))
    with pytest.raises(ValueError, match="weight"):
        gradient_reversal(x, torch.ones(2))
    with pytest.raises(TypeError, match="x"):
        gradient_reversal([1.0, 2.0], 1.0)
    with pytest.raises(ValueError, match="weight"):
        GradientReversal(-0.1)


# ---------------------------------------------------------------- schedule and state


def test_dann_schedule_values():
    head = GRLSourceHead(8, hidden=4, total_steps=100)
    assert head.set_progress(0.0) == 0.0
    assert head.set_progress(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert head.set_progress(0.5) == pytest.approx(0.9866142981514305, abs=1e-12)
    assert head.set_progress(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert head.reversal_weight == pytest.approx(0.9999092, abs=1e-7)
    half = GRLSourceHead(8, hidden=4, total_steps=10, max_weight=0.5, gamma=2.0)
    assert half.set_progress(1.0) == pytest.approx(0.5 * (2 / (1 + math.exp(-2)) - 1))
    assert dann_schedule(0.5) == pytest.approx(0.9866142981514305)


def test_step_ramps_per_iteration_and_saturates():
    head = GRLSourceHead(8, hidden=4, total_steps=4)
    assert head.reversal_weight == 0.0
    values = [head.step() for _ in range(6)]
    expected = [dann_schedule(min(i / 4, 1.0)) for i in range(1, 7)]
    assert values == pytest.approx(expected)
    assert values[0] < values[1] < values[2] < values[3] == values[5]
    assert int(head.steps) == 6 and head.progress == 1.0
    assert head.reversal_weight == pytest.approx(values[-1], rel=1e-6)


def test_constant_and_callable_schedules():
    constant = GRLSourceHead(8, hidden=4, schedule="constant", max_weight=0.3)
    assert constant.reversal_weight == pytest.approx(0.3)
    assert constant.step() == pytest.approx(0.3) and int(constant.steps) == 1
    assert constant.progress is None

    linear = GRLSourceHead(8, hidden=4, schedule=lambda p: 0.1 + p, total_steps=10)
    assert linear.reversal_weight == pytest.approx(0.1)
    for _ in range(5):
        linear.step()
    assert linear.reversal_weight == pytest.approx(0.6)


def test_callable_schedule_returning_a_bad_value_is_named():
    with pytest.raises(ValueError, match="schedule"):
        GRLSourceHead(8, hidden=4, schedule=lambda p: -1.0, total_steps=10)
    head = GRLSourceHead(
        8, hidden=4, schedule=lambda p: float("nan") if p > 0 else 0.0, total_steps=2
    )
    with pytest.raises(ValueError, match="schedule"):
        head.step()


def test_eval_mode_does_not_advance():
    head = GRLSourceHead(8, hidden=4, total_steps=10)
    head.step()
    before = head.reversal_weight
    head.eval()
    assert head.step() == before
    assert int(head.steps) == 1
    head.train()
    head.step()
    assert int(head.steps) == 2


def test_state_dict_round_trip_continues_the_ramp():
    head = GRLSourceHead(8, hidden=4, total_steps=50)
    for _ in range(7):
        head.step()
    state = copy.deepcopy(head.state_dict())
    assert int(state["steps"]) == 7
    assert float(state["grl.weight"]) == pytest.approx(dann_schedule(7 / 50), rel=1e-6)

    resumed = GRLSourceHead(8, hidden=4, total_steps=50)
    resumed.load_state_dict(state)
    assert int(resumed.steps) == 7
    assert resumed.reversal_weight == head.reversal_weight
    assert resumed.step() == head.step() == pytest.approx(dann_schedule(8 / 50))

    # Loading through a parent module (a checkpoint of the whole wrapped model) resyncs too.
    parent = nn.ModuleDict({"head": GRLSourceHead(8, hidden=4, total_steps=50)})
    parent.load_state_dict({f"head.{k}": v for k, v in state.items()})
    assert parent["head"].step() == pytest.approx(dann_schedule(8 / 50))

    progressed = GRLSourceHead(8, hidden=4, total_steps=50)
    progressed.set_progress(0.5)
    assert int(progressed.steps) == 25
    again = GRLSourceHead(8, hidden=4, total_steps=50)
    again.load_state_dict(progressed.state_dict())
    assert again.reversal_weight == progressed.reversal_weight


def test_set_progress_and_constructor_errors_name_the_argument():
    head = GRLSourceHead(8, hidden=4, total_steps=10)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="progress"):
            head.set_progress(bad)
    cases = [
        (dict(depth=4, total_steps=10), "depth"),
        (dict(depth=1, total_steps=10), "depth"),
        (dict(schedule="linear", total_steps=10), "schedule"),
        (dict(schedule="dann"), "total_steps"),
        (dict(schedule=lambda p: p), "total_steps"),
        (dict(total_steps=0), "total_steps"),
        (dict(total_steps=10, gamma=0.0), "gamma"),
        (dict(total_steps=10, max_weight=-1.0), "max_weight"),
        (dict(total_steps=10, num_sources=1), "num_sources"),
        (dict(total_steps=10, hidden=0), "hidden"),
        (dict(total_steps=10, dropout=1.0), "dropout"),
    ]
    for kwargs, name in cases:
        with pytest.raises((ValueError, TypeError), match=name):
            GRLSourceHead(8, **kwargs)
    with pytest.raises(TypeError, match="schedule"):
        GRLSourceHead(8, schedule=3, total_steps=10)
    with pytest.raises(ValueError, match="in_features"):
        GRLSourceHead(0, total_steps=10)


# ---------------------------------------------------------------- head structure and init


@pytest.mark.parametrize("depth", [2, 3])
def test_initialisation_follows_dt_gan(depth):
    torch.manual_seed(0)
    head = GRLSourceHead(512, hidden=1024, depth=depth, total_steps=10)
    linears = [m for m in head.classifier if isinstance(m, nn.Linear)]
    assert len(linears) == depth
    assert [lin.out_features for lin in linears] == [1024] * (depth - 1) + [2]
    for lin in linears[:-1]:
        assert lin.weight.std().item() == pytest.approx(0.01, rel=0.02)
        assert torch.count_nonzero(lin.bias) == 0
    assert linears[-1].weight.std().item() == pytest.approx(0.05, rel=0.1)
    assert torch.count_nonzero(linears[-1].bias) == 0


def test_forward_accepts_pooled_maps_and_rejects_wrong_shapes():
    head = GRLSourceHead(8, hidden=4, total_steps=10)
    assert head(torch.randn(3, 8)).shape == (3, 2)
    assert head(torch.randn(3, 8, 1, 1)).shape == (3, 2)
    with pytest.raises(ValueError, match="features"):
        head(torch.randn(3, 8, 4, 4))
    with pytest.raises(ValueError, match="features.*in_features"):
        head(torch.randn(3, 7))


def test_backbone_gets_reversed_gradients_and_head_gets_normal_ones():
    """The classic pitfall: the reversal must sit *between* backbone and head."""
    backbone = _tiny_backbone()
    head = GRLSourceHead(8, hidden=16, depth=3, total_steps=10)
    lam = head.set_progress(0.3)
    x = torch.rand(4, 3, 6, 6)
    sources = torch.tensor([SOURCE_REAL, SOURCE_SYNTHETIC, SOURCE_SYNTHETIC, SOURCE_REAL])

    reference_backbone, reference_head = copy.deepcopy(backbone), copy.deepcopy(head)
    # The reference skips the reversal layer: plain autograd through backbone + MLP.
    source_loss(reference_head.classifier(reference_backbone(x)), sources).backward()

    head.loss(head(backbone(x)), sources).backward()

    for (name, p), ref in zip(
        backbone.named_parameters(), reference_backbone.parameters(), strict=True
    ):
        assert ref.grad.abs().sum() > 0, name
        torch.testing.assert_close(p.grad, -lam * ref.grad, rtol=1e-5, atol=1e-9)
    for (name, p), ref in zip(head.named_parameters(), reference_head.parameters(), strict=True):
        assert ref.grad.abs().sum() > 0, name
        torch.testing.assert_close(p.grad, ref.grad, rtol=0, atol=0)


def test_source_loss_checks_labels():
    logits = torch.randn(3, 2)
    loss = source_loss(logits, torch.tensor([0, 1, 1]))
    assert torch.isclose(loss, nn.functional.cross_entropy(logits, torch.tensor([0, 1, 1])))
    assert source_loss(logits, [0, 1, 1]).shape == ()
    assert source_loss(logits, torch.tensor([0, 1, 1]), reduction="none").shape == (3,)
    with pytest.raises(ValueError, match="source_labels.*\\[0, 1\\]"):
        source_loss(logits, torch.tensor([0, 2, 1]))
    with pytest.raises(TypeError, match="source_labels"):
        source_loss(logits, torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="source_labels"):
        source_loss(logits, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="logits"):
        source_loss(torch.randn(3), torch.tensor([0, 1, 1]))
    head = GRLSourceHead(8, hidden=4, num_sources=3, total_steps=10)
    with pytest.raises(ValueError, match="logits"):
        head.loss(logits, torch.tensor([0, 1, 1]))


def test_source_loss_on_an_empty_batch_is_a_zero_on_the_graph():
    """A step with no source-labelled item must not turn the loss (and then the weights) NaN."""
    head = GRLSourceHead(8, hidden=4, total_steps=10)
    features = torch.randn(0, 8, requires_grad=True)
    loss = head.loss(head(features), torch.zeros(0, dtype=torch.long))
    assert loss.shape == () and loss.dtype == torch.float32 and float(loss.detach()) == 0.0
    assert loss.requires_grad
    loss.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and not bool(p.grad.any()), name
    logits = torch.zeros(0, 2)
    assert float(source_loss(logits, torch.zeros(0, dtype=torch.long), reduction="sum")) == 0.0
    assert source_loss(logits, torch.zeros(0, dtype=torch.long), reduction="none").shape == (0,)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_head_takes_features_of_another_float_dtype(dtype):
    head = GRLSourceHead(8, hidden=16, total_steps=10)
    head.set_progress(0.5)
    reference = copy.deepcopy(head)
    torch.manual_seed(0)
    features = torch.randn(4, 8).to(dtype).requires_grad_(True)
    logits = head(features)
    assert logits.dtype == torch.float32 and logits.shape == (4, 2)
    # The same as feeding the head float32 features (the cast is the only difference).
    torch.testing.assert_close(logits, reference(features.detach().float()))
    head.loss(logits, torch.tensor([0, 1, 0, 1])).backward()
    assert features.grad is not None and features.grad.dtype == dtype
    assert bool(torch.isfinite(features.grad.float()).all()) and bool(features.grad.any())
    with pytest.raises(TypeError, match="features: expected a floating-point tensor"):
        head(torch.ones(4, 8, dtype=torch.int64))


def test_autocast_cpu_bfloat16():
    model = attach_source_head(
        nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 4),
        ),
        layer="2",
        hidden=16,
        total_steps=10,
    )
    model.head.set_progress(1.0)
    x = torch.rand(4, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        class_logits, source_logits = model(x)
        assert source_logits.dtype == torch.bfloat16
        loss = nn.functional.cross_entropy(class_logits, torch.tensor([0, 1, 2, 3]))
        loss = loss + model.head.loss(source_logits, torch.tensor([0, 1, 0, 1]))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name

    x = torch.ones(4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = gradient_reversal(x.to(torch.bfloat16), 0.5)
    y.float().sum().backward()
    torch.testing.assert_close(x.grad, torch.full((4,), -0.5))


# ---------------------------------------------------------------- attach helper


@pytest.mark.parametrize(
    ("name", "width"),
    [("resnet18", 512), ("efficientnet_b0", 1280), ("mobilenet_v3_small", 576)],
)
def test_attach_on_torchvision_models(name, width):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None, num_classes=5)
    original_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected_logits = model(x)

    wrapped = attach_source_head(model, total_steps=100)
    assert isinstance(wrapped, SourceHeadModel) and wrapped.model is model
    assert wrapped.head.in_features == width
    wrapped.eval()
    with torch.no_grad():
        class_logits, source_logits = wrapped(x)
    # The original classifier is untouched: same logits, same parameters, no leftover hooks.
    torch.testing.assert_close(class_logits, expected_logits)
    assert source_logits.shape == (2, 2)
    assert model.state_dict().keys() == original_state.keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, original_state[key]), key  # untouched: the same stored values
    assert all(not m._forward_hooks for m in model.modules())
    assert {k for k in wrapped.state_dict() if k.startswith("head.")} >= {
        "head.steps",
        "head.grl.weight",
    }


def test_attach_gradients_flow_reversed_into_a_torchvision_backbone():
    torch.manual_seed(0)
    wrapped = attach_source_head(
        torchvision.models.resnet18(weights=None, num_classes=3), hidden=32, total_steps=10
    )
    wrapped.head.set_progress(1.0)
    x = torch.rand(2, 3, 32, 32)
    _, source_logits = wrapped(x)
    wrapped.head.loss(source_logits, torch.tensor([0, 1])).backward()
    assert wrapped.model.fc.weight.grad is None  # the class head gets nothing from the source loss
    assert wrapped.model.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in wrapped.head.parameters())


class _TimmStyle(nn.Module):
    """The timm convention: forward_features -> forward_head(pre_logits=...), num_features."""

    def __init__(self, num_classes=4, with_forward_head=True):
        super().__init__()
        self.num_features = 6
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc_norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, num_classes)
        if not with_forward_head:
            self.forward_head = None

    def forward_features(self, x):
        return self.stem(x).relu()

    def forward_head(self, x, pre_logits=False):
        x = self.fc_norm(self.global_pool(x))
        return x if pre_logits else self.head(x)

    def forward(self, x):
        if self.forward_head is None:
            return self.head(self.global_pool(self.forward_features(x)))
        return self.forward_head(self.forward_features(x))


@pytest.mark.parametrize("with_forward_head", [True, False])
def test_attach_on_timm_style_models(with_forward_head):
    torch.manual_seed(0)
    model = _TimmStyle(with_forward_head=with_forward_head)
    x = torch.rand(3, 3, 8, 8)
    wrapped = attach_source_head(model, hidden=8, total_steps=10)
    assert wrapped.head.in_features == 6
    class_logits, source_logits = wrapped(x)
    torch.testing.assert_close(class_logits, model(x))
    assert source_logits.shape == (3, 2)
    features, _ = wrapped.features_and_logits(x)
    if with_forward_head:
        torch.testing.assert_close(features, model.forward_head(model.forward_features(x), True))
    else:
        torch.testing.assert_close(features, model.global_pool(model.forward_features(x)))


def test_attach_with_a_named_layer_and_a_given_head():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("body", nn.Conv2d(3, 5, 3))
    model.add_module("squeeze", nn.AdaptiveMaxPool2d(1))
    model.add_module("flat", nn.Flatten())
    model.add_module("fc", nn.Linear(5, 2))
    head = GRLSourceHead(5, hidden=4, num_sources=3, schedule="constant")
    wrapped = attach_source_head(model, head=head, layer=model.squeeze)
    assert wrapped.layer == "squeeze" and wrapped.head is head
    class_logits, source_logits = wrapped(torch.rand(2, 3, 7, 7))
    assert class_logits.shape == (2, 2) and source_logits.shape == (2, 3)
    # Found automatically too: the model's only adaptive pooling layer.
    assert attach_source_head(model, schedule="constant").layer == "squeeze"


def test_attach_errors_list_candidate_layers():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(ValueError, match="layer.*candidate layers: 0, 1"):
        attach_source_head(model, schedule="constant")
    resnet = torchvision.models.resnet18(weights=None)
    with pytest.raises(ValueError, match="layer.*'pooling'.*candidate layers: avgpool"):
        attach_source_head(resnet, layer="pooling", schedule="constant")
    with pytest.raises(ValueError, match="layer.*not a submodule"):
        attach_source_head(resnet, layer=nn.AdaptiveAvgPool2d(1), schedule="constant")
    with pytest.raises(ValueError, match="total_steps"):
        attach_source_head(resnet)
    with pytest.raises(ValueError, match="head_options"):
        attach_source_head(resnet, head=GRLSourceHead(512, schedule="constant"), hidden=3)
    unknown_width = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1))
    with pytest.raises(ValueError, match="head.*in_features"):
        attach_source_head(unknown_width, schedule="constant")
    # A strided pooling merely *called* ``pool`` is not taken for the global pooling layer.
    strided = nn.Sequential()
    strided.add_module("body", nn.Conv2d(3, 4, 3))
    strided.add_module("pool", nn.MaxPool2d(2))
    with pytest.raises(ValueError, match="could not find the pooled-feature layer"):
        attach_source_head(strided, schedule="constant")

    class TwicePooled(nn.Module):
        def __init__(self):
            super().__init__()
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc((self.avgpool(x) + self.avgpool(x * 2)).flatten(1))

    with pytest.raises(RuntimeError, match="'avgpool' ran 2 times"):
        attach_source_head(TwicePooled(), schedule="constant")(torch.rand(1, 3, 4, 4))
    # A layer that is not pooled: the head names the shape problem at forward time.
    wrapped = attach_source_head(resnet, layer="layer4", schedule="constant")
    with pytest.raises(ValueError, match="features.*pooling"):
        wrapped(torch.rand(1, 3, 64, 64))


# ---------------------------------------------------------------- source labels on data


def test_source_tagged_concat_yields_source_labels():
    real = TensorDataset(torch.zeros(3, 1, 4, 4), torch.tensor([0, 1, 2]))
    synthetic = TensorDataset(torch.ones(2, 1, 4, 4), torch.tensor([1, 1]))
    data = ConcatDataset(
        [SourceTagged(real, SOURCE_REAL), SourceTagged(synthetic, SOURCE_SYNTHETIC)]
    )
    assert len(data) == 5
    image, label, source = data[4]
    assert source == SOURCE_SYNTHETIC and label == 1 and image.mean() == 1
    images, labels, sources = next(iter(DataLoader(data, batch_size=5)))
    assert sources.tolist() == [0, 0, 0, 1, 1] and sources.dtype == torch.int64
    assert SourceTagged([7, 8], 1)[0] == (7, 1)
    assert SourceTagged([{"image": 1}], 1)[0] == {"image": 1, "source": 1}
    with pytest.raises(ValueError, match="source"):
        SourceTagged(real, -1)
    with pytest.raises(ValueError, match="source"):
        SourceTagged(real, True)
