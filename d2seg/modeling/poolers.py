"""RoI pooling as Detectron2's ``POOLER_TYPE`` asks: torchvision's multi-level RoIAlign, aligned or not.

torchvision's ``MultiScaleRoIAlign`` always samples with the legacy, unaligned RoIAlign
(a box's pixel corners taken as pixel centres, half a pixel off); Detectron2's default
``ROIAlignV2`` is ``roi_align(..., aligned=True)``. :class:`ROIPooler` keeps torchvision's level
assignment (canonical box 224 px on level 4, as Detectron2) and passes ``aligned``.
"""

from typing import Union

import torch
import torchvision
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.poolers import (
    _convert_to_roi_format,
    _filter_input,
    _onnx_merge_levels,
    _setup_scales,
)

from d2seg.config.unsupported import unsupported_error

POOLER_TYPES = {"ROIAlignV2": True, "ROIAlign": False}


class ROIPooler(MultiScaleRoIAlign):
    """``MultiScaleRoIAlign`` with ``aligned`` (True: Detectron2's ROIAlignV2).

    Example::

        import torch
        from d2seg.modeling.poolers import ROIPooler

        pooler = ROIPooler(["p2", "p3"], 7, 0, aligned=True)
        features = {"p2": torch.randn(1, 8, 32, 32), "p3": torch.randn(1, 8, 16, 16)}
        pooled = pooler(features, [torch.tensor([[4.0, 4.0, 60.0, 40.0]])], [(128, 128)])
        assert pooled.shape == (1, 8, 7, 7)
    """

    def __init__(
        self,
        featmap_names: list[str],
        output_size: Union[int, tuple[int, int]],
        sampling_ratio: int,
        *,
        aligned: bool,
    ):
        """
        Args:
            featmap_names: feature maps to pool from (one level per name).
            output_size: side (or (height, width)) of each pooled region, in bins.
            sampling_ratio: samples per bin side; 0 = adaptive (ceil(box side / bins)).
            aligned: shift box corners by -0.5 pixel before sampling (ROIAlignV2).
        """
        super().__init__(featmap_names, output_size, sampling_ratio)
        self.aligned = aligned

    @classmethod
    def from_pooler_type(
        cls, key: str, pooler_type: str, featmap_names: list[str], resolution: int, sampling: int
    ) -> "ROIPooler":
        """The pooler config ``key`` (``MODEL.ROI_BOX_HEAD.POOLER_TYPE``, ...) names."""
        if pooler_type not in POOLER_TYPES:
            raise unsupported_error(
                f"RoI pooler {pooler_type!r}", key, "use 'ROIAlignV2' (or 'ROIAlign')"
            )
        return cls(featmap_names, resolution, sampling, aligned=POOLER_TYPES[pooler_type])

    def setup_scales(self, x: dict[str, Tensor], image_shapes: list[tuple[int, int]]) -> None:
        """On the first call only: each level's scale (its size ÷ the largest image's, rounded
        to a power of 2) and the level mapper. Callers whose images fill little of the padded
        batch call it first with the padded size, so that the rounding cannot pick a wrong
        power of 2."""
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(
                _filter_input(x, self.featmap_names), image_shapes, self.canonical_scale,
                self.canonical_level,
            )

    def forward(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        """Features by name, per image R_n×4 XYXY boxes (image pixels) → R×C×out×out."""
        self.setup_scales(x, image_shapes)
        levels = _filter_input(x, self.featmap_names)
        rois = _convert_to_roi_format(boxes)
        pool = dict(output_size=self.output_size, sampling_ratio=self.sampling_ratio,
                    aligned=self.aligned)
        if len(levels) == 1:
            return roi_align(levels[0], rois, spatial_scale=self.scales[0], **pool)
        assigned = self.map_levels(boxes)
        result = levels[0].new_zeros((len(rois), levels[0].shape[1], *self.output_size))
        per_level = []
        for level, (feature, scale) in enumerate(zip(levels, self.scales)):
            index = torch.where(assigned == level)[0]
            pooled = roi_align(feature, rois[index], spatial_scale=scale, **pool)
            if torchvision._is_tracing():
                per_level.append(pooled.to(result.dtype))
            else:
                result[index] = pooled.to(result.dtype)
        if torchvision._is_tracing():  # as torchvision: an ONNX-exportable merge
            return _onnx_merge_levels(assigned, per_level)
        return result
