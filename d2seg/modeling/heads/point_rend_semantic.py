"""PointRend for semantic segmentation (Detectron2's ``PointRendSemSegHead``).

A coarse semantic head (``POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME``, Detectron2's ``SemSegFPNHead``:
logits at stride 4) and a point head (:class:`~d2seg.modeling.heads.point_rend.
StandardPointHead`) that re-predicts all K class logits at chosen points from fine-grained
features (``POINT_HEAD.IN_FEATURES``, ``p2``) and the coarse logits there:

* training: ``loss_sem_seg``, the coarse head's loss on its logits upsampled to the input, and
  ``loss_sem_seg_point``, the same loss on ``TRAIN_NUM_POINTS`` points per image
  (``IMPORTANCE_SAMPLE_RATIO`` of them the most uncertain of ``OVERSAMPLE_RATIO``× random
  candidates, the rest uniform), labels read from the target by nearest sampling;
* inference: ``SUBDIVISION_STEPS`` ×2 upsamplings of the coarse logits, each re-predicting the
  ``SUBDIVISION_NUM_POINTS`` most uncertain pixels; uncertainty is the margin between the two
  best class logits. The steps must bring the coarse stride to 1 (stride 4: two steps).

Points are (x, y) in [0, 1]² of the padded image. The loss on points is the head's
``SEM_SEG_HEAD.LOSS`` (Detectron2's plain cross-entropy for "ce" and ``LOSS_WEIGHT`` 1).
Module names are Detectron2's (``coarse_sem_seg_head``, ``point_head``), so its checkpoints load.
"""

from typing import Any, Optional

import torch
from torch import Tensor

from d2seg.config import CfgNode
from d2seg.errors import ConfigError
from d2seg.modeling.heads.point_rend import (
    StandardPointHead,
    build_point_head,
    class_margin_uncertainty,
    point_sample,
    subdivide,
    uncertain_points_with_randomness,
)
from d2seg.modeling.heads.sem_seg import SemSegHead, upsample
from d2seg.modeling.registry import SEM_SEG_HEADS_REGISTRY
from d2seg.modeling.shape_spec import ShapeSpec


@SEM_SEG_HEADS_REGISTRY.register()
class PointRendSemSegHead(SemSegHead):
    """Coarse semantic head + point head → N×K×H×W logits at the input resolution.

    ``forward(features, targets)`` follows the semantic-head contract: ``(logits, {})`` in eval
    mode, ``(None, {"loss_sem_seg", "loss_sem_seg_point"})`` in training.

    Example::

        import torch
        from d2seg.modeling.heads.point_rend import StandardPointHead
        from d2seg.modeling.heads.point_rend_semantic import PointRendSemSegHead
        from d2seg.modeling.heads.semantic_fpn import SemSegFPNHead
        from d2seg.modeling.shape_spec import ShapeSpec

        shapes = {f"p{i}": ShapeSpec(channels=16, stride=2**i) for i in (2, 3, 4, 5)}
        coarse = SemSegFPNHead(input_shape=shapes, in_features=list(shapes), num_classes=3,
                               conv_dims=32, common_stride=4)
        point_head = StandardPointHead(fine_grained_channels=16, num_mask_channels=3,
                                       fc_dim=32, num_fc=3, coarse_pred_each_layer=False)
        head = PointRendSemSegHead(
            input_shape=shapes, coarse_sem_seg_head=coarse, point_head=point_head,
            point_in_features=["p2"], train_num_points=256, oversample_ratio=3,
            importance_sample_ratio=0.75, subdivision_steps=2, subdivision_num_points=1024,
        ).eval()
        features = {f"p{i}": torch.randn(1, 16, 64 // 2**i, 64 // 2**i) for i in (2, 3, 4, 5)}
        logits, _ = head(features)   # 1×3×64×64
    """

    # Tracing fixes the number of cells re-predicted per step, min(points, cells), at the traced
    # size: at another size the graph would re-predict another number of pixels.
    supports_dynamic_shapes = False

    def __init__(
        self,
        *,
        input_shape: dict[str, ShapeSpec],
        coarse_sem_seg_head: SemSegHead,
        point_head: StandardPointHead,
        point_in_features: list[str],
        train_num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
        subdivision_steps: int,
        subdivision_num_points: int,
    ):
        """
        Args:
            input_shape: the backbone's ``output_shape()``.
            coarse_sem_seg_head: the coarse prediction; its loss is this head's loss.
            point_head: K coarse logits + fine-grained features at a point → K logits.
            point_in_features: the fine-grained features sampled for the point head.
            train_num_points: points per image in training.
            oversample_ratio: random candidates per training point.
            importance_sample_ratio: share of training points chosen by uncertainty.
            subdivision_steps: ×2 steps at inference; 2^steps must be the coarse head's
                ``logit_stride``.
            subdivision_num_points: pixels re-predicted per image and step.
        """
        super().__init__(input_shape=input_shape, in_features=coarse_sem_seg_head.in_features,
                         num_classes=coarse_sem_seg_head.num_classes,
                         loss=coarse_sem_seg_head.loss)
        if 2**subdivision_steps != coarse_sem_seg_head.logit_stride:
            raise ConfigError(
                f"MODEL.POINT_HEAD.SUBDIVISION_STEPS = {subdivision_steps} upsamples the coarse "
                f"logits ×{2**subdivision_steps}, but {type(coarse_sem_seg_head).__name__} gives "
                f"them at stride {coarse_sem_seg_head.logit_stride}; fix: SUBDIVISION_STEPS "
                f"{coarse_sem_seg_head.logit_stride.bit_length() - 1} (the stride must be a "
                "power of 2)"
            )
        self.coarse_sem_seg_head = coarse_sem_seg_head
        self.point_head = point_head
        self.point_in_features = list(point_in_features)
        self.train_num_points = train_num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.subdivision_steps = subdivision_steps
        self.subdivision_num_points = subdivision_num_points

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        from d2seg.modeling.build import build_from_registry

        point_cfg, num_classes = cfg.MODEL.POINT_HEAD, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        if point_cfg.NUM_CLASSES not in (0, num_classes):
            raise ConfigError(
                f"MODEL.POINT_HEAD.NUM_CLASSES ({point_cfg.NUM_CLASSES}) differs from "
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES ({num_classes}); fix: set both to the number of "
                "classes (or POINT_HEAD.NUM_CLASSES 0 to follow it)"
            )
        coarse_name = point_cfg.COARSE_SEM_SEG_HEAD_NAME
        if coarse_name in SEM_SEG_HEADS_REGISTRY and SEM_SEG_HEADS_REGISTRY.get(coarse_name) is cls:
            raise ConfigError(
                f"MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME = {coarse_name!r} would nest "
                "PointRend in itself; fix: SemSegFPNHead"
            )
        coarse = build_from_registry(
            SEM_SEG_HEADS_REGISTRY, "MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME", cfg, input_shape
        )
        point_head = build_point_head(cfg, input_shape, num_classes)
        if not isinstance(point_head, StandardPointHead):
            raise ConfigError(
                f"MODEL.POINT_HEAD.NAME = {point_cfg.NAME!r} does not take coarse predictions, "
                f"which {cls.__name__} gives it; fix: StandardPointHead"
            )
        return {
            "input_shape": input_shape,
            "coarse_sem_seg_head": coarse,
            "point_head": point_head,
            "point_in_features": list(point_cfg.IN_FEATURES),
            "train_num_points": point_cfg.TRAIN_NUM_POINTS,
            "oversample_ratio": point_cfg.OVERSAMPLE_RATIO,
            "importance_sample_ratio": point_cfg.IMPORTANCE_SAMPLE_RATIO,
            "subdivision_steps": point_cfg.SUBDIVISION_STEPS,
            "subdivision_num_points": point_cfg.SUBDIVISION_NUM_POINTS,
        }

    def point_logits(self, features: dict[str, Tensor], coarse: Tensor, points: Tensor) -> Tensor:
        """Point-head logits N×K×P at image points N×P×2 from the fine-grained features and
        the ``coarse`` logits N×K×h×w there."""
        fine = torch.cat([point_sample(features[n], points) for n in self.point_in_features],
                         dim=1)
        return self.point_head(fine, point_sample(coarse, points))

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        """Backbone features → N×K×H×W logits refined by adaptive subdivision."""
        coarse = self.coarse_sem_seg_head.strided_layers(features)
        return subdivide(
            coarse, self.subdivision_steps, self.subdivision_num_points,
            lambda points: self.point_logits(features, coarse, points),
            uncertainty_of=class_margin_uncertainty,
        )

    def forward(
        self, features: dict[str, Tensor], targets: Optional[Tensor] = None
    ) -> tuple[Optional[Tensor], dict[str, Tensor]]:
        """``targets``: N×H×W long labels at the input size (training only) → (N×K×H×W logits
        or None in training, losses ``{"loss_sem_seg", "loss_sem_seg_point"}`` or ``{}``)."""
        if not self.training:
            return self.layers(features), {}
        if targets is None:
            raise ValueError(f"{type(self).__name__} needs targets in training mode")
        coarse = self.coarse_sem_seg_head.strided_layers(features)
        losses = {"loss_sem_seg": self.loss(
            upsample(coarse, self.coarse_sem_seg_head.logit_stride), targets)}
        with torch.no_grad():
            points = uncertain_points_with_randomness(
                coarse, self.train_num_points, self.oversample_ratio,
                self.importance_sample_ratio, uncertainty_of=class_margin_uncertainty,
            )
            point_targets = point_sample(targets[:, None].float(), points, mode="nearest")
        point_logits = self.point_logits(features, coarse, points)
        losses["loss_sem_seg_point"] = self.loss(
            point_logits[..., None], point_targets.long()[:, 0, :, None]
        )
        return None, losses
