"""U-Net decoder over a ResNet trunk (segmentation_models_pytorch's Unet decoder).

The decoder knows only the encoder's feature names, channels and strides (``output_shape()``):
starting at the deepest feature, each stage upsamples to the next shallower skip's stride
(integer factors; bilinear by default, or nearest neighbour as segmentation_models_pytorch does:
the 3×3 convs that follow smooth it and it is a few % faster on CPU, see bench/models.py),
concatenates that skip, and applies two conv3×3 + norm + ReLU. Stages past the last skip
upsample ×2 without one. A 1×1 conv gives the class logits, bilinearly upsampled to the
input resolution (a 1×1 conv and bilinear resampling commute, so convolving first is the same
result at a fraction of the cost).
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from d2seg.config import CfgNode
from d2seg.errors import ConfigError
from d2seg.modeling.backbone.backbone import check_in_features
from d2seg.modeling.backbone.resnet import get_norm
from d2seg.modeling.losses import SemSegLoss
from d2seg.modeling.registry import SEM_SEG_HEADS_REGISTRY
from d2seg.modeling.shape_spec import ShapeSpec


def _conv3x3_norm_relu(in_channels: int, out_channels: int, norm: str) -> list[nn.Module]:
    # A conv bias is redundant in front of a normalisation layer.
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=norm == "")
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return [conv, get_norm(norm, out_channels), nn.ReLU(inplace=True)]


@SEM_SEG_HEADS_REGISTRY.register()
class ResNetUNetHead(nn.Module):
    """Trunk features → N×``num_classes``×H×W logits at the input resolution, and their loss.

    As Detectron2's semantic heads: ``forward(features, targets)`` returns ``(logits, {})`` in
    eval mode and ``(None, {"loss_sem_seg": loss})`` in training; :meth:`layers` is the bare
    decoder (features → logits), what export and tests call.

    Example::

        import torch
        from d2seg.modeling.backbone.resnet import ResNet
        from d2seg.modeling.heads.unet import ResNetUNetHead

        trunk = ResNet(depth=18, in_channels=3, out_features=["stem", "res2", "res3", "res4",
                       "res5"], norm="BN", freeze_at=0)
        head = ResNetUNetHead(input_shape=trunk.output_shape(),
                              in_features=["stem", "res2", "res3", "res4", "res5"],
                              decoder_channels=[64, 32, 16, 16, 8], num_classes=3).eval()
        logits, _ = head(trunk(torch.zeros(1, 3, 64, 64)))   # 1×3×64×64
    """

    def __init__(
        self,
        *,
        input_shape: dict[str, ShapeSpec],
        in_features: list[str],
        decoder_channels: list[int],
        num_classes: int,
        norm: str = "BN",
        upsample: str = "bilinear",
        loss: Optional[SemSegLoss] = None,
    ):
        """
        Args:
            input_shape: the trunk's ``output_shape()``.
            in_features: trunk features used, shallowest first; the last (deepest) starts the
                decoder, the others are skips. Strides must grow from one to the next.
            decoder_channels: output channels of each decoder stage, deepest first; at least
                one per skip. Stages after the last skip upsample ×2 each, without a skip.
            num_classes: logit channels (1 = binary, one sigmoid logit).
            norm: "BN", "GN" or "" (none) after each decoder conv.
            upsample: "bilinear" or "nearest", the decoder stages' upsampling.
            loss: the training loss on the logits (default: cross-entropy for
                ``num_classes``, ignore label 255).
        """
        super().__init__()
        check_in_features("MODEL.SEM_SEG_HEAD.IN_FEATURES", in_features, input_shape)
        strides = [input_shape[f].stride for f in in_features]
        if any(deep <= shallow for shallow, deep in zip(strides, strides[1:])):
            raise ConfigError(
                f"MODEL.SEM_SEG_HEAD.IN_FEATURES = {list(in_features)} have strides {strides}; "
                f"fix: list them shallowest first, e.g. stem, res2, res3, res4, res5"
            )
        skips = list(reversed(in_features[:-1]))
        if len(decoder_channels) < len(skips):
            raise ConfigError(
                f"MODEL.SEM_SEG_HEAD.DECODER_CHANNELS has {len(decoder_channels)} values for "
                f"{len(skips)} skip features; fix: give at least {len(skips)} (one per stage)"
            )
        self.in_features = list(in_features)
        self.num_classes = num_classes
        self.upsample = upsample
        # Upsampling factor of each stage: to the skip's stride, or ×2 past the last skip.
        self._scales: list[int] = []
        blocks = []
        channels, stride = input_shape[in_features[-1]].channels, strides[-1]
        for i, out_channels in enumerate(decoder_channels):
            if i < len(skips):
                skip_channels, next_stride = input_shape[skips[i]].channels, strides[-2 - i]
            else:
                skip_channels, next_stride = 0, stride // 2
            if next_stride < 1:
                raise ConfigError(
                    f"MODEL.SEM_SEG_HEAD.DECODER_CHANNELS: stage {i + 1} of "
                    f"{len(decoder_channels)} would upsample past the input resolution; fix: "
                    f"give at most {i} values"
                )
            self._scales.append(stride // next_stride)
            layers = _conv3x3_norm_relu(channels + skip_channels, out_channels, norm)
            layers += _conv3x3_norm_relu(out_channels, out_channels, norm)
            blocks.append(nn.Sequential(*layers))
            channels, stride = out_channels, next_stride
        self.blocks = nn.ModuleList(blocks)
        self.predictor = nn.Conv2d(channels, num_classes, kernel_size=1)
        self._output_scale = stride
        self.loss = loss if loss is not None else SemSegLoss(num_classes=num_classes)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": input_shape,
            "in_features": list(head.IN_FEATURES),
            "decoder_channels": list(head.DECODER_CHANNELS),
            "num_classes": head.NUM_CLASSES,
            "norm": head.NORM,
            "upsample": head.UPSAMPLE,
            "loss": SemSegLoss(**SemSegLoss.from_config(cfg)),
        }

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
                raise ValueError("ResNetUNetHead needs targets in training mode")
            return None, {"loss_sem_seg": self.loss(logits, targets)}
        return logits, {}

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        """``features``: the trunk's maps by name, from an N×C×H×W input whose H and W are
        multiples of the deepest stride → N×num_classes×H×W logits."""
        x = features[self.in_features[-1]]
        skips = [features[f] for f in reversed(self.in_features[:-1])]
        for i, (block, scale) in enumerate(zip(self.blocks, self._scales)):
            if self.upsample == "nearest":
                x = F.interpolate(x, scale_factor=scale, mode="nearest")
            else:
                x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
            if i < len(skips):
                x = torch.cat([x, skips[i]], dim=1)
            x = block(x)
        x = self.predictor(x)
        if self._output_scale > 1:
            x = F.interpolate(
                x, scale_factor=self._output_scale, mode="bilinear", align_corners=False
            )
        return x
