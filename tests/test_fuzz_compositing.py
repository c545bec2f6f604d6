"""Fuzzing the compositing functions at their public edge.

Random shapes (1 px sides, layers across the border or far outside the image), dtypes, channel
counts, value ranges, offsets and matte forms go into ``alpha_composite``, ``poisson_blend`` and
``improved_poisson_blend``. Each call must either refuse by name (a ``ValueError`` /
``TypeError`` whose message starts with the argument, and only for the inputs that are meant to
be refused) or return an image of the background's form with no NaN, within the valid range,
without touching its inputs, and equal to the background outside the region it may change.

Derandomized and without an example database, so a CI run is the same run everywhere.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from defectaug.compositing import alpha_composite, improved_poisson_blend, poisson_blend
from defectaug.compositing.improved import useful_band
from defectaug.compositing.poisson import blend_rectangle

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
DTYPES = [torch.uint8, *FLOATS]

#: How far a float result may sit from an exactly known value after the cast back to its dtype.
CAST_TOLERANCE = {
    torch.uint8: 0.51 / 255,
    torch.float16: 1e-3,
    torch.bfloat16: 8e-3,
    torch.float32: 1e-6,
    torch.float64: 1e-12,
}

#: Matte forms: the binary ones every function takes, integer ones that masks refuse.
MATTES = ["bool", "uint8-01", "uint8-0255", "float", "int64-01", "numpy-0255", "uint8-levels"]


def image(generator, shape, dtype, values):
    """A tensor of ``shape``: uint8 levels, or floats in [0, 1], a narrow range or beyond it."""
    unit = torch.rand(shape, generator=generator, dtype=torch.float64)
    if values == "edges":
        unit = unit.round()  # only 0 and 1: clamps and exact ends
    elif values == "narrow":
        unit = 0.45 + 0.1 * unit
    if dtype == torch.uint8:
        return (unit * 255).round().to(torch.uint8)
    if values == "beyond":
        unit = 2 * unit - 0.5  # floats are taken as they are, [-0.5, 1.5] included
    return unit.to(dtype)


def unit_values(tensor):
    """``tensor`` as float64 image values (uint8 levels / 255)."""
    values = tensor.double()
    return values / 255 if tensor.dtype == torch.uint8 else values


@st.composite
def problems(draw):
    batch = draw(st.integers(1, 2))
    channels = draw(st.sampled_from([1, 3]))
    height, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    layer_h, layer_w = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    near_top = st.integers(-layer_h - 1, height + 1)
    near_left = st.integers(-layer_w - 1, width + 1)
    far = st.integers(-(10**6), 10**6)
    offsets = [
        (draw(st.one_of(near_top, far)), draw(st.one_of(near_left, far))) for _ in range(batch)
    ]
    return {
        "seed": draw(st.integers(0, 2**31 - 1)),
        "shape": (batch, channels, height, width),
        "layer": (batch, channels, layer_h, layer_w),
        "offsets": offsets,
        "offset_form": draw(st.sampled_from(["tensor", "pairs"])),
        "dtypes": (draw(st.sampled_from(DTYPES)), draw(st.sampled_from(DTYPES))),
        "values": draw(st.sampled_from(["unit", "unit", "narrow", "edges", "beyond"])),
        "matte": draw(st.sampled_from(MATTES)),
        "density": draw(st.sampled_from([0.0, 0.3, 0.7, 1.0])),
    }


def build(problem):
    """Background, layer and matte tensors, the matte's bool meaning, and the offset argument."""
    generator = torch.Generator().manual_seed(problem["seed"])
    bg_dtype, layer_dtype = problem["dtypes"]
    background = image(generator, problem["shape"], bg_dtype, problem["values"])
    layer = image(generator, problem["layer"], layer_dtype, problem["values"])
    batch, _, layer_h, layer_w = problem["layer"]
    soft = torch.rand(batch, 1, layer_h, layer_w, generator=generator, dtype=torch.float64)
    inside = soft < problem["density"]
    kind = problem["matte"]
    matte = {
        "bool": inside,
        "uint8-01": inside.to(torch.uint8),
        "uint8-0255": inside.to(torch.uint8) * 255,
        # Soft values; the masks take >= 0.5 as inside.
        "float": torch.where(inside, 0.5 + soft / 2, soft / 2).float(),
        "int64-01": inside.long(),
        "numpy-0255": (inside[0, 0].numpy().astype(np.uint8) * 255) if batch == 1 else None,
        "uint8-levels": (soft * 255).round().to(torch.uint8),
    }[kind]
    if matte is None:  # numpy images are unbatched: only for batch 1
        matte = inside.to(torch.uint8) * 255
    # What the matte means as a mask (the integer forms hold 0/1 or 0/255 when accepted).
    as_tensor = torch.as_tensor(matte).view(batch, 1, layer_h, layer_w)
    inside = as_tensor >= 0.5 if as_tensor.is_floating_point() else as_tensor != 0
    offsets = problem["offsets"]
    offset = torch.tensor(offsets) if problem["offset_form"] == "tensor" else offsets
    if problem["offset_form"] == "pairs" and batch == 1:
        offset = offsets[0]  # one (top, left) pair
    return background, layer, matte, inside, offset


def expected_refusal(matte, is_alpha):
    """The argument a call must refuse, or None when it must succeed."""
    tensor = torch.as_tensor(matte)
    if tensor.dtype == torch.bool or tensor.is_floating_point():
        return None
    values = set(tensor.unique().tolist())
    if is_alpha:
        # uint8 alpha is levels x / 255, but one holding only {0, 1} is a mask's format; other
        # integer dtypes are not alphas at all.
        return (
            "alpha" if tensor.dtype != torch.uint8 or (1 in values and values <= {0, 1}) else None
        )
    return None if values <= {0, 1} or values <= {0, 255} else "mask"


def placed(inside, offsets, height, width, rows=None, cols=None):
    """Per item, the bool mask in image coordinates, limited to image rows/cols ranges."""
    rows = rows or (0, height)
    cols = cols or (0, width)
    out = torch.zeros(len(offsets), height, width, dtype=torch.bool)
    for item, (top, left) in enumerate(offsets):
        for i, j in inside[item, 0].nonzero().tolist():
            y, x = top + i, left + j
            if rows[0] <= y < rows[1] and cols[0] <= x < cols[1]:
                out[item, y, x] = True
    return out


def changeable_region(blend, inside, offsets, layer_hw, height, width, band):
    """Per item, the pixels the blend may change (everything else must be the background)."""
    region = torch.zeros(len(offsets), height, width, dtype=torch.bool)
    for item, (top, left) in enumerate(offsets):
        if blend == "alpha":
            # The layer's rectangle, clipped.
            region[item, max(top, 0) : top + layer_hw[0], max(left, 0) : left + layer_hw[1]] = True
            continue
        if blend == "poisson":
            if height < 3 or width < 3:
                continue  # no inner pixel: nothing is solved
            mask = placed(
                inside[item : item + 1],
                [(top, left)],
                height,
                width,
                (1, height - 1),
                (1, width - 1),
            )[0]
        else:
            mask = placed(inside[item : item + 1], [(top, left)], height, width)[0]
        if not mask.any():
            continue
        ys, xs = mask.nonzero(as_tuple=True)
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        if blend == "poisson":
            first_row, rows = blend_rectangle(y0, y1, height)
            first_col, cols = blend_rectangle(x0, x1, width)
            region[item, first_row : first_row + rows, first_col : first_col + cols] = True
        else:
            # The mask's box grown by the band (a square around the Euclidean band).
            reach = useful_band(band, height, width)
            region[item, max(y0 - reach, 0) : y1 + reach, max(x0 - reach, 0) : x1 + reach] = True
    return region


def check_call(blend, problem, band=2, mode="normal"):
    background, layer, matte, inside, offset = build(problem)
    is_alpha = blend == "alpha"

    def call():
        if is_alpha:
            return alpha_composite(background, layer, matte, offset)
        if blend == "poisson":
            return poisson_blend(background, layer, matte, offset, mode)
        return improved_poisson_blend(background, layer, matte, offset, band, mode)

    inputs = [background, layer, matte, offset]
    originals = [x.copy() if isinstance(x, np.ndarray) else x.clone() for x in inputs[:3]]
    original_offset = offset.clone() if isinstance(offset, torch.Tensor) else copy.deepcopy(offset)

    refusal = expected_refusal(matte, is_alpha)
    if refusal is not None:
        with pytest.raises((ValueError, TypeError), match=f"^{refusal}: "):
            call()
        return
    out = call()

    # Inputs untouched (exact: nothing may write to them).
    for value, original in zip(inputs[:3], originals, strict=True):
        if isinstance(value, np.ndarray):
            assert np.array_equal(value, original)
        else:
            assert torch.equal(value, original)
    if isinstance(offset, torch.Tensor):
        assert torch.equal(offset, original_offset)
    else:
        assert offset == original_offset

    assert isinstance(out, torch.Tensor)
    assert out.shape == background.shape and out.dtype == background.dtype
    assert out.data_ptr() != background.data_ptr()
    values = unit_values(out)
    assert not torch.isnan(values).any()

    # Range: [0, 1] when every float input is; else within what the inputs span.
    bg_values, layer_values = unit_values(background), unit_values(layer)
    low = min(0.0, float(bg_values.min()), float(layer_values.min()))
    high = max(1.0, float(bg_values.max()), float(layer_values.max()))
    slack = 0.0 if (low, high) == (0.0, 1.0) else CAST_TOLERANCE[out.dtype] * max(1, abs(low), high)
    assert float(values.min()) >= low - slack and float(values.max()) <= high + slack

    # Outside the region the blend may change, the background as it was (copied: exact).
    batch, _, height, width = background.shape
    offsets = [tuple(pair) for pair in torch.as_tensor(offset).view(-1, 2).tolist()]
    offsets = offsets * batch if len(offsets) == 1 else offsets
    region = changeable_region(blend, inside, offsets, layer.shape[-2:], height, width, band)
    keep = ~region[:, None].expand_as(out)
    assert torch.equal(out[keep], background[keep])

    if blend == "improved" and (low, high) == (0.0, 1.0):
        # The defect is kept: the source on the mask, up to the cast to the background's dtype.
        for item, (top, left) in enumerate(offsets):
            mask = placed(inside[item : item + 1], [(top, left)], height, width)[0]
            for y, x in mask.nonzero().tolist():
                gap = (values[item, :, y, x] - layer_values[item, :, y - top, x - left]).abs()
                assert float(gap.max()) <= CAST_TOLERANCE[out.dtype] + 1e-7


@FUZZ
@given(problems())
def test_fuzz_alpha_composite(problem):
    check_call("alpha", problem)


@FUZZ
@given(problems(), st.sampled_from(["normal", "mixed"]))
def test_fuzz_poisson_blend(problem, mode):
    check_call("poisson", problem, mode=mode)


@FUZZ
@given(
    problems(),
    st.integers(1, 4) | st.sampled_from([50, 2000]),
    st.sampled_from(["normal", "mixed"]),
)
def test_fuzz_improved_poisson_blend(problem, band, mode):
    check_call("improved", problem, band=band, mode=mode)
