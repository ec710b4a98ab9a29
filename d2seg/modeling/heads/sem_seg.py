"""What every semantic head shares: the Detectron2 head contract and the loss.

A head maps a backbone's features to N×K×H×W logits at the input resolution (:meth:`layers`,
what export and tests call) and owns its loss: ``forward(features, targets)`` returns
``(logits, {})`` in eval mode and ``(None, {"loss_sem_seg": loss})`` in training, as
Detectron2's semantic heads do. Heads are built from the backbone's ``output_shape()`` alone.
"""

from abc import abstractmethod
from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from d2seg.config import CfgNode
from d2seg.errors import ConfigError
from d2seg.modeling.backbone.backbone import check_in_features
from d2seg.modeling.backbone.norm import get_norm
from d2seg.modeling.losses import SemSegLoss
from d2seg.modeling.shape_spec import ShapeSpec


def conv_norm_relu(
    in_channels: int, out_channels: int, kernel_size: int, norm: str, *, separable: bool = False
) -> list[nn.Module]:
    """[conv, norm, ReLU]; ``separable``: the conv is a depthwise k×k conv + a 1×1 conv."""
    padding = kernel_size // 2
    # A conv bias is redundant in front of a normalisation layer.
    bias = norm == ""
    if separable and kernel_size > 1:
        conv = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size, padding=padding,
                      groups=in_channels, bias=False),
            nn.Conv2d(in_channels, out_channels, 1, bias=bias),
        )
    else:
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
    for module in conv.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return [conv, get_norm(norm, out_channels), nn.ReLU(inplace=True)]


def upsample(x: Tensor, scale: int) -> Tensor:
    """Bilinear ×``scale`` (an integer: constant scales keep static ONNX graphs static)."""
    if scale == 1:
        return x
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


def check_feature_count(in_features: list[str], count: int, head: str, example: str) -> None:
    if len(in_features) != count:
        raise ConfigError(
            f"MODEL.SEM_SEG_HEAD.IN_FEATURES = {list(in_features)}: {head} reads exactly "
            f"{count} feature(s); fix: e.g. IN_FEATURES {example}"
        )


class SemSegHead(nn.Module):
    """Base of the semantic heads: ``forward`` and the loss around a subclass's :meth:`layers`."""

    def __init__(
        self,
        *,
        input_shape: dict[str, ShapeSpec],
        in_features: list[str],
        num_classes: int,
        loss: Optional[SemSegLoss] = None,
    ):
        """
        Args:
            input_shape: the backbone's ``output_shape()``.
            in_features: backbone features the head reads (checked against ``input_shape``).
            num_classes: logit channels (1 = binary, one sigmoid logit).
            loss: the training loss on the logits (default: cross-entropy for
                ``num_classes``, ignore label 255).
        """
        super().__init__()
        check_in_features("MODEL.SEM_SEG_HEAD.IN_FEATURES", in_features, input_shape)
        self.in_features = list(in_features)
        self.num_classes = num_classes
        self.loss = loss if loss is not None else SemSegLoss(num_classes=num_classes)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": input_shape,
            "in_features": list(head.IN_FEATURES),
            "num_classes": head.NUM_CLASSES,
            "loss": SemSegLoss(**SemSegLoss.from_config(cfg)),
        }

    #: Whether a graph traced at one input size is right at every other (ONNX ``--dynamic``).
    supports_dynamic_shapes: bool = True

    @property
    def ignore_value(self) -> int:
        """The target label that counts in no loss (padding and unlabelled pixels)."""
        return self.loss.ignore_value

    def forward(
        self, features: dict[str, Tensor], targets: Optional[Tensor] = None
    ) -> tuple[Optional[Tensor], dict[str, Tensor]]:
        """``targets``: N×H×W long labels at the logits' size (training only). → (N×K×H×W
        logits or None in training, losses ``{"loss_sem_seg"}`` in training or ``{}``)."""
        logits = self.layers(features)
        if self.training:
            if targets is None:
                raise ValueError(f"{type(self).__name__} needs targets in training mode")
            return None, {"loss_sem_seg": self.loss(logits, targets)}
        return logits, {}

    @property
    def logit_stride(self) -> int:
        """Input pixels per logit of :meth:`strided_layers` (1: they are at the input size)."""
        return 1

    def strided_layers(self, features: dict[str, Tensor]) -> Tensor:
        """Logits before any final upsampling, N×K×(H/logit_stride)×(W/logit_stride): what a
        refining head (PointRend) starts from. By default :meth:`layers`."""
        return self.layers(features)

    @abstractmethod
    def layers(self, features: dict[str, Tensor]) -> Tensor:
        """``features``: the backbone's maps by name, from an N×C×H×W input whose H and W are
        multiples of the backbone's size divisibility → N×num_classes×H×W logits."""
