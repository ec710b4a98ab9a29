"""Box head, box predictor and box-regression losses of the RoI heads (Detectron2's keys).

* :func:`build_box_head`: ``FastRCNNConvFCHead`` — torchvision's, with ``NUM_CONV`` 3×3 convs of
  ``CONV_DIM`` channels normalised by ``NORM`` and ``NUM_FC`` FCs of ``FC_DIM`` ("4conv1fc":
  NUM_CONV 4, NUM_FC 1), initialised as Detectron2 (``c2_msra_fill`` convs, ``c2_xavier_fill``
  FCs).
* :class:`BoxPredictor`: class scores (K+1) and box deltas, per class or one set for all
  classes (``CLS_AGNOSTIC_BBOX_REG``), initialised as Detectron2 (normal std 0.01 / 0.001).
* :func:`box_regression_loss`: smooth L1 with ``SMOOTH_L1_BETA`` (0 = L1, Detectron2's default;
  torchvision hard-codes 1/9) or GIoU (``torchvision.ops.generalized_box_iou_loss``).
"""

from typing import Callable, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.ops import generalized_box_iou_loss

from d2seg.errors import ConfigError
from d2seg.modeling.weight_init import c2_msra_fill, c2_xavier_fill
from d2seg.utils import comm

# Any box: GIoU is invariant to per-axis scaling and shifting, so deltas decoded against one
# reference box give the GIoU they would give against their own proposal or anchor.
_REFERENCE_BOX = torch.tensor([[0.0, 0.0, 1.0, 1.0]])


def head_norm(norm: str) -> Optional[Callable[[int], nn.Module]]:
    """A head's normalisation layer factory for Detectron2's ``NORM`` ("" = none: convs get a
    bias). "SyncBN" is BatchNorm on one process and ``SyncBatchNorm`` across several."""
    if norm == "":
        return None
    if norm == "SyncBN":
        return nn.SyncBatchNorm if comm.get_world_size() > 1 else nn.BatchNorm2d
    if norm == "BN":
        return nn.BatchNorm2d
    if norm == "GN":
        return lambda channels: nn.GroupNorm(32, channels)
    if norm == "FrozenBN":
        from torchvision.ops import FrozenBatchNorm2d

        return FrozenBatchNorm2d
    raise ConfigError(f"norm {norm!r} is not one of '', 'GN', 'BN', 'SyncBN', 'FrozenBN'")


def build_box_head(
    in_channels: int, resolution: int, num_conv: int, conv_dim: int, num_fc: int, fc_dim: int,
    norm: str,
) -> FastRCNNConvFCHead:
    """Pooled C×resolution² RoI features → R×``fc_dim`` (or the flattened conv output when
    ``num_fc`` is 0)."""
    if num_conv + num_fc == 0:
        raise ConfigError(
            "MODEL.ROI_BOX_HEAD has NUM_CONV 0 and NUM_FC 0; fix: give the box head layers, e.g. "
            "NUM_FC 2 (Detectron2's FPN models)"
        )
    head = FastRCNNConvFCHead(
        (in_channels, resolution, resolution), [conv_dim] * num_conv, [fc_dim] * num_fc,
        norm_layer=head_norm(norm),
    )
    for module in head.modules():
        if isinstance(module, nn.Conv2d):
            c2_msra_fill(module)
        elif isinstance(module, nn.Linear):
            c2_xavier_fill(module)
    return head


def box_head_output_size(
    in_channels: int, resolution: int, num_conv: int, conv_dim: int, num_fc: int, fc_dim: int
) -> int:
    """Features per RoI that :func:`build_box_head` returns."""
    if num_fc:
        return fc_dim
    return (conv_dim if num_conv else in_channels) * resolution * resolution


class BoxPredictor(FastRCNNPredictor):
    """Class logits R×(K+1) and box deltas R×(K+1)·4 from R×``in_channels`` features.

    With ``class_agnostic`` the layer predicts one set of deltas for all classes (Detectron2's
    ``CLS_AGNOSTIC_BBOX_REG``); :meth:`forward` repeats it per class, so torchvision's per-class
    decoding and loss indexing read the same four deltas for every class.
    """

    def __init__(self, in_channels: int, num_classes: int, *, class_agnostic: bool = False):
        """``num_classes`` counts the background (torchvision's convention: K + 1)."""
        super().__init__(in_channels, num_classes)
        self.class_agnostic = class_agnostic
        if class_agnostic:
            self.bbox_pred = nn.Linear(in_channels, 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        for layer in (self.cls_score, self.bbox_pred):
            nn.init.constant_(layer.bias, 0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        scores, deltas = super().forward(x)
        if self.class_agnostic:
            deltas = deltas.repeat(1, scores.shape[1])
        return scores, deltas


def box_regression_loss(
    pred_deltas: Tensor, target_deltas: Tensor, box_coder: BoxCoder, loss_type: str, beta: float
) -> Tensor:
    """Summed loss of P×4 predicted deltas against P×4 target deltas (both encoded by
    ``box_coder`` relative to the same boxes): "smooth_l1" (``beta`` 0 = L1) or "giou"."""
    if loss_type == "smooth_l1":
        if beta == 0:
            return F.l1_loss(pred_deltas, target_deltas, reduction="sum")
        return F.smooth_l1_loss(pred_deltas, target_deltas, beta=beta, reduction="sum")
    if loss_type == "giou":
        reference = _REFERENCE_BOX.to(pred_deltas).expand(len(pred_deltas), 4)
        predicted = box_coder.decode_single(pred_deltas, reference)
        target = box_coder.decode_single(target_deltas, reference)
        return generalized_box_iou_loss(predicted, target, reduction="sum")
    raise ConfigError(f"BBOX_REG_LOSS_TYPE {loss_type!r}; fix: use 'smooth_l1' or 'giou'")
