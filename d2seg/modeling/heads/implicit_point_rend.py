"""Implicit PointRend (Cheng et al., "Pointly-Supervised Instance Segmentation", 2022;
Detectron2's ``ImplicitPointRendMaskHead``): every box gets its own point MLP.

A parameter head (the coarse head's conv + FCs, :class:`~d2seg.modeling.heads.point_rend.
CoarseMaskHead`) predicts, per box, all weights and biases of a small MLP; the point head
(:class:`ImplicitPointHead`) evaluates that MLP at box points on fine-grained features (``p2``)
and a Fourier positional encoding of the point's box coordinates. There is no coarse mask:

* training: ``TRAIN_NUM_POINTS`` uniform random points per box, BCE against the bilinear
  ground-truth mask at those points (``loss_mask_point``), plus ``PARAMS_L2_REGULARIZER`` ·
  mean(parameters²) (``loss_l2``);
* inference: the MLP predicts a regular √``SUBDIVISION_NUM_POINTS``-sided grid (28² for 784),
  then ``SUBDIVISION_STEPS`` steps of adaptive subdivision (×2 and re-predict the most uncertain
  cells) give 28·2³ = 224² masks.

Parameters are laid out as Detectron2's (all weights, layer by layer, then all biases; weight l
is out_l×in_l), and modules carry Detectron2's names (``parameter_head``,
``point_head.positional_encoding_gaussian_matrix``), so its checkpoints load.
"""

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from d2seg.config import CfgNode
from d2seg.errors import ConfigError
from d2seg.modeling.backbone.backbone import check_in_features
from d2seg.modeling.heads.mask_head import MaskHead
from d2seg.modeling.heads.point_rend import (
    CoarseMaskHead,
    build_point_head,
    check_point_head_classes,
    grid_pooled_box_features,
    regular_grid_points,
    sample_box_point_features,
    sample_mask_point_labels,
    select_class,
    subdivide,
)
from d2seg.modeling.registry import POINT_HEAD_REGISTRY, ROI_MASK_HEAD_REGISTRY
from d2seg.modeling.shape_spec import ShapeSpec

# Detectron2's encoding: 128 random frequencies, sin and cos of each.
POSITIONAL_FREQUENCIES = 128


@POINT_HEAD_REGISTRY.register()
class ImplicitPointHead(nn.Module):
    """A per-box MLP whose parameters are an input: point features R×C×P, box points R×P×2 and
    parameters R×:attr:`num_params` → logits R×K×P.

    The MLP has ``num_fc`` hidden layers of ``fc_dim`` channels (ReLU) and a K-channel output
    layer. Its input is the positional encoding of the point (2·128 channels: sin and cos of
    2π·([-1, 1]-scaled point @ a fixed random 2×128 Gaussian matrix)) followed by the
    fine-grained features; either may be disabled.

    Example::

        import torch
        from d2seg.modeling.heads.implicit_point_rend import ImplicitPointHead

        head = ImplicitPointHead(fine_grained_channels=8, num_classes=3, fc_dim=16, num_fc=2,
                                 image_feature_enabled=True, positional_encoding_enabled=True)
        logits = head(torch.randn(5, 8, 100), torch.rand(5, 100, 2),
                      torch.randn(5, head.num_params))   # 5×3×100
    """

    def __init__(
        self,
        *,
        fine_grained_channels: int,
        num_classes: int,
        fc_dim: int,
        num_fc: int,
        image_feature_enabled: bool,
        positional_encoding_enabled: bool,
    ):
        """
        Args:
            fine_grained_channels: channels of the point features.
            num_classes: output logits per point (one per foreground class).
            fc_dim: channels of each hidden layer.
            num_fc: hidden layers (≥ 1).
            image_feature_enabled: the MLP reads the fine-grained features.
            positional_encoding_enabled: the MLP reads the encoding of the point's position.
        """
        super().__init__()
        if num_fc < 1:
            raise ConfigError(
                f"MODEL.POINT_HEAD.NUM_FC = {num_fc}: ImplicitPointHead needs at least one hidden "
                "layer; fix: NUM_FC 3 (Detectron2's)"
            )
        in_channels = fine_grained_channels if image_feature_enabled else 0
        if positional_encoding_enabled:
            in_channels += 2 * POSITIONAL_FREQUENCIES
            self.register_buffer(
                "positional_encoding_gaussian_matrix", torch.randn(2, POSITIONAL_FREQUENCIES)
            )
        if in_channels == 0:
            raise ConfigError(
                "MODEL.IMPLICIT_POINTREND.IMAGE_FEATURE_ENABLED and POS_ENC_ENABLED are both "
                "False: the point MLP would have no input; fix: enable at least one"
            )
        self.image_feature_enabled = image_feature_enabled
        self.positional_encoding_enabled = positional_encoding_enabled
        self.num_classes = num_classes
        widths = [in_channels] + [fc_dim] * num_fc + [num_classes]
        self.layer_shapes = list(zip(widths[1:], widths[:-1]))  # (out, in) per layer
        self.num_params = sum(o * i + o for o, i in self.layer_shapes)

    @classmethod
    def from_config(
        cls, cfg: CfgNode, fine_grained_channels: int, num_classes: int
    ) -> dict[str, Any]:
        point_cfg, implicit = cfg.MODEL.POINT_HEAD, cfg.MODEL.IMPLICIT_POINTREND
        return {
            "fine_grained_channels": fine_grained_channels,
            "num_classes": num_classes,
            "fc_dim": point_cfg.FC_DIM,
            "num_fc": point_cfg.NUM_FC,
            "image_feature_enabled": implicit.IMAGE_FEATURE_ENABLED,
            "positional_encoding_enabled": implicit.POS_ENC_ENABLED,
        }

    def positional_encoding(self, points: Tensor) -> Tensor:
        """Box points R×P×2 in [0, 1] → R×256×P."""
        projected = (2.0 * points - 1.0) @ self.positional_encoding_gaussian_matrix
        projected = 2.0 * math.pi * projected
        return torch.cat([projected.sin(), projected.cos()], dim=2).transpose(1, 2)

    def forward(self, fine_grained_features: Tensor, points: Tensor, parameters: Tensor) -> Tensor:
        inputs = [fine_grained_features] if self.image_feature_enabled else []
        if self.positional_encoding_enabled:
            inputs.insert(0, self.positional_encoding(points))
        x = torch.cat(inputs, dim=1)
        num_boxes = x.shape[0]
        sizes = [o * i for o, i in self.layer_shapes] + [o for o, _ in self.layer_shapes]
        chunks = parameters.split(sizes, dim=1)
        num_layers = len(self.layer_shapes)
        for layer, (out_channels, in_channels) in enumerate(self.layer_shapes):
            weight = chunks[layer].view(num_boxes, out_channels, in_channels)
            bias = chunks[num_layers + layer].view(num_boxes, out_channels, 1)
            x = torch.bmm(weight, x) + bias
            if layer < num_layers - 1:
                x = F.relu(x)
        return x


@ROI_MASK_HEAD_REGISTRY.register()
class ImplicitPointRendMaskHead(MaskHead):
    """Implicit PointRend mask head: a parameter head + an :class:`ImplicitPointHead`.

    Losses ``loss_mask_point`` and ``loss_l2``; :meth:`predict` gives 224² masks with
    Detectron2's settings (module docstring).
    """

    def __init__(
        self,
        *,
        pooler_in_features: list[str],
        point_in_features: list[str],
        feature_strides: dict[str, int],
        pooler_side: int,
        parameter_head: CoarseMaskHead,
        point_head: ImplicitPointHead,
        params_l2_regularizer: float,
        train_num_points: int,
        subdivision_steps: int,
        subdivision_num_points: int,
    ):
        """
        Args:
            pooler_in_features: features pooled for the parameter head (``ROI_MASK_HEAD``).
            point_in_features: fine-grained features of the point head (``POINT_HEAD``).
            feature_strides: stride (pixels) of every feature by name.
            pooler_side: the pooled grid's side (``POOLER_RESOLUTION``).
            parameter_head: box features → ``(point_head.num_params,)`` per box.
            point_head: evaluates the per-box MLPs.
            params_l2_regularizer: weight of ``loss_l2``.
            train_num_points: uniform random points per box in training.
            subdivision_steps: ×2 steps after the initial grid.
            subdivision_num_points: cells re-predicted per step; a square (the initial grid).
        """
        super().__init__()
        initial_side = math.isqrt(subdivision_num_points)
        if initial_side**2 != subdivision_num_points:
            raise ConfigError(
                f"MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS = {subdivision_num_points}: "
                "ImplicitPointRendMaskHead starts from a square grid of that many points; fix: "
                "a square, e.g. 784 (28²)"
            )
        self.pooler_in_features = pooler_in_features
        self.point_in_features = point_in_features
        self.feature_strides = feature_strides
        self.pooler_side = pooler_side
        self.parameter_head = parameter_head
        self.point_head = point_head
        self.params_l2_regularizer = params_l2_regularizer
        self.train_num_points = train_num_points
        self.initial_side = initial_side
        self.subdivision_steps = subdivision_steps
        self.subdivision_num_points = subdivision_num_points

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        mask_cfg, point_cfg = cfg.MODEL.ROI_MASK_HEAD, cfg.MODEL.POINT_HEAD
        check_point_head_classes(cfg, cls.__name__)
        check_in_features("MODEL.ROI_MASK_HEAD.IN_FEATURES", mask_cfg.IN_FEATURES, input_shape)
        if mask_cfg.POOLER_RESOLUTION % 2:
            raise ConfigError(
                f"MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = {mask_cfg.POOLER_RESOLUTION}: the "
                "parameter head halves it with a stride-2 conv; fix: an even side, e.g. 14"
            )
        point_head = build_point_head(cfg, input_shape, cfg.MODEL.ROI_HEADS.NUM_CLASSES)
        if not isinstance(point_head, ImplicitPointHead):
            raise ConfigError(
                f"MODEL.POINT_HEAD.NAME = {point_cfg.NAME!r} cannot read per-box parameters, "
                "which ImplicitPointRendMaskHead predicts; fix: ImplicitPointHead"
            )
        parameter_head = CoarseMaskHead(
            in_channels=sum(input_shape[n].channels for n in mask_cfg.IN_FEATURES),
            input_side=mask_cfg.POOLER_RESOLUTION,
            conv_dim=mask_cfg.CONV_DIM,
            fc_dim=mask_cfg.FC_DIM,
            num_fc=mask_cfg.NUM_FC,
            output_shape=(point_head.num_params,),
            reduce_stride=2,
        )
        return {
            "pooler_in_features": list(mask_cfg.IN_FEATURES),
            "point_in_features": list(point_cfg.IN_FEATURES),
            "feature_strides": {k: v.stride for k, v in input_shape.items()},
            "pooler_side": mask_cfg.POOLER_RESOLUTION,
            "parameter_head": parameter_head,
            "point_head": point_head,
            "params_l2_regularizer": cfg.MODEL.IMPLICIT_POINTREND.PARAMS_L2_REGULARIZER,
            "train_num_points": point_cfg.TRAIN_NUM_POINTS,
            "subdivision_steps": point_cfg.SUBDIVISION_STEPS,
            "subdivision_num_points": point_cfg.SUBDIVISION_NUM_POINTS,
        }

    def _features(self, names: list[str], features: dict[str, Tensor]) -> tuple[list, list]:
        return [features[n] for n in names], [self.feature_strides[n] for n in names]

    def box_parameters(self, features: dict[str, Tensor], boxes: list[Tensor]) -> Tensor:
        """Per box the point MLP's parameters, R×num_params."""
        maps, strides = self._features(self.pooler_in_features, features)
        return self.parameter_head(grid_pooled_box_features(maps, strides, boxes,
                                                            self.pooler_side))

    def point_logits(
        self, features: dict[str, Tensor], boxes: list[Tensor], points: Tensor, parameters: Tensor
    ) -> Tensor:
        """Logits R×K×P of every box's MLP at its box points R×P×2."""
        maps, strides = self._features(self.point_in_features, features)
        fine = sample_box_point_features(maps, strides, boxes, points)
        return self.point_head(fine, points, parameters)

    def losses(self, features, proposals, image_shapes, gt_masks, gt_labels, matched_idxs):
        """``loss_mask_point`` (BCE at uniform random points) and ``loss_l2`` (the parameters'
        mean square × ``PARAMS_L2_REGULARIZER``)."""
        parameters = self.box_parameters(features, proposals)
        labels = torch.cat([g[m] for g, m in zip(gt_labels, matched_idxs)])
        if labels.numel() == 0:
            zero = parameters.sum() * 0.0
            return {"loss_mask_point": zero, "loss_l2": zero}
        points = torch.rand(len(labels), self.train_num_points, 2, device=parameters.device)
        point_labels = sample_mask_point_labels(gt_masks, matched_idxs, proposals, points)
        logits = self.point_logits(features, proposals, points, parameters)
        return {
            "loss_mask_point": F.binary_cross_entropy_with_logits(
                select_class(logits, labels)[:, 0], point_labels
            ),
            "loss_l2": self.params_l2_regularizer * parameters.pow(2).mean(),
        }

    def predict(self, features, boxes, image_shapes, labels):
        """M = √SUBDIVISION_NUM_POINTS · 2^SUBDIVISION_STEPS (224)."""
        all_labels = torch.cat(labels)
        num_boxes = len(all_labels)
        side = self.initial_side * 2**self.subdivision_steps
        if num_boxes == 0:
            empty = torch.cat(boxes).new_zeros(0, 1, side, side)
            return [empty for _ in boxes]
        parameters = self.box_parameters(features, boxes)

        def point_logits_at(points: Tensor) -> Tensor:
            return select_class(self.point_logits(features, boxes, points, parameters), all_labels)

        grid = regular_grid_points(self.initial_side, num_boxes, parameters.device)
        initial = point_logits_at(grid).view(num_boxes, 1, self.initial_side, self.initial_side)
        logits = subdivide(initial, self.subdivision_steps, self.subdivision_num_points,
                           point_logits_at)
        return list(logits.sigmoid().split([len(b) for b in boxes]))
