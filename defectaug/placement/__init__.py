"""Where and how a defect layer lands on an image.

The draws are the plan's (:func:`defectaug.plan.draw_plan`); this package turns them into pixels:

1. :mod:`~defectaug.placement.sampling`: the placement options, checked once
   (:class:`PlacementOptions`), and :func:`sample_placements`, the plan's placement draws as
   tensors: per image how many defects it receives and, per defect, its size (a fraction of the
   image's shorter side), rotation, aspect jitter and a centre inside a region of interest (ROI).
2. :mod:`~defectaug.placement.geometry`: :func:`layer_geometry` places each layer with
   :func:`defectaug.plan.layer_box` (scale, stretch, rotation about the layer centre as kornia's
   ``get_rotation_matrix2d``; the box holds the rotated layer, so corners are never cut, and lies
   inside the image) on a tight canvas shared by a group of layers. It needs only the layer size,
   so it runs before the layers are generated: :func:`layer_backgrounds` can hand a generator the
   exact image patch each layer will cover (in the layer's frame), and the defect keeps the
   surface's texture.
3. :mod:`~defectaug.placement.warping`: :func:`warp_layer` resamples generated layers into their
   canvases (bilinear ``grid_sample`` with the affine map, as kornia's ``warp_affine``; content and
   alpha share it); :func:`warp_relief` does the same for procedural relief maps, as the compiled
   renderer reads them. :func:`crop_windows` reads image-sized maps (such as the ROI) under each
   placed canvas, used to confine a defect's alpha to the ROI.
4. :mod:`~defectaug.placement.roi`: ROIs (:func:`resolve_roi`): ``None`` (whole image), a mask
   tensor, a callable ``images -> mask`` or ``"auto"`` for :func:`estimate_foreground`.

Every name is importable from ``defectaug.placement`` itself.
"""

from defectaug._checks import as_range  # noqa: F401
from defectaug.placement.geometry import LayerGeometry, layer_geometry  # noqa: F401
from defectaug.placement.roi import (  # noqa: F401
    RoiArg,
    _grayscale,
    _otsu_thresholds,
    estimate_foreground,
    resolve_roi,
)
from defectaug.placement.sampling import (  # noqa: F401
    MAX_DEFECTS_PER_IMAGE,
    CountArg,
    PlacementOptions,
    PlacementRanges,
    RangeArg,
    as_count_range,
    check_placement_ranges,
    sample_placements,
)
from defectaug.placement.warping import (  # noqa: F401
    _HALF_DTYPES,
    WarpedLayers,
    _homogeneous,
    _sample_affine,
    antialias,
    crop_windows,
    layer_backgrounds,
    warp_layer,
    warp_relief,
)
from defectaug.plan import (  # noqa: F401
    Placements,
    PlannedDefect,
    check_image_size,
    draw_plan,
    layer_box,
)
