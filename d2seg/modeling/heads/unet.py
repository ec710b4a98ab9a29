"""U-Net decoder over any backbone (segmentation_models_pytorch's Unet decoder).

The decoder knows only the backbone's feature names, channels and strides (``output_shape()``):
ResNet's stem/res2..res5, or the ``c1``..``c5`` of VGG, MobileNetV3 and EfficientNet. Starting
at the deepest feature, each stage upsamples to the next shallower skip's stride (integer
factors; bilinear by default, or nearest neighbour as segmentation_models_pytorch does: the
3×3 convs that follow smooth it; in the channels-last decoder both cost the same on CPU, see
bench/models.py),
concatenates that skip, and applies two conv3×3 + norm + ReLU (``UNET_CENTER``: two more on the
deepest feature first). Stages past the last skip
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
from d2seg.modeling.heads.sem_seg import SemSegHead, conv_norm_relu, upsample
from d2seg.modeling.losses import SemSegLoss
from d2seg.modeling.registry import SEM_SEG_HEADS_REGISTRY
from d2seg.modeling.shape_spec import ShapeSpec


@SEM_SEG_HEADS_REGISTRY.register()
class UNetHead(SemSegHead):
    """Backbone features → N×``num_classes``×H×W logits at the input resolution, and their loss.

    Example::

        import torch
        from d2seg.modeling.backbone.mobilenet import mobilenet_v3_backbone
        from d2seg.modeling.heads.unet import UNetHead

        features = ["c1", "c2", "c3", "c4", "c5"]
        backbone = mobilenet_v3_backbone(size="small", in_channels=1, out_features=features)
        head = UNetHead(input_shape=backbone.output_shape(), in_features=features,
                        decoder_channels=[64, 32, 16, 16, 8], num_classes=3).eval()
        logits, _ = head(backbone(torch.zeros(1, 1, 64, 64)))   # 1×3×64×64
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
        center: bool = False,
        loss: Optional[SemSegLoss] = None,
    ):
        """
        Args:
            input_shape: the backbone's ``output_shape()``.
            in_features: features used, shallowest first; the last (deepest) starts the
                decoder, the others are skips. Strides must grow from one to the next.
            decoder_channels: output channels of each decoder stage, deepest first; at least
                one per skip. Stages after the last skip upsample ×2 each, without a skip.
            num_classes: logit channels (1 = binary, one sigmoid logit).
            norm: "BN", "GN" or "" (none) after each decoder conv.
            upsample: "bilinear" or "nearest", the decoder stages' upsampling.
            center: two conv3×3 + norm + ReLU on the deepest feature before the first stage,
                as segmentation_models_pytorch's Unet has for VGG (whose stride-32 map is a
                bare max-pool of the stride-16 one).
            loss: the training loss on the logits (default: cross-entropy for
                ``num_classes``, ignore label 255).
        """
        super().__init__(input_shape=input_shape, in_features=in_features,
                         num_classes=num_classes, loss=loss)
        strides = [input_shape[f].stride for f in in_features]
        if any(deep <= shallow for shallow, deep in zip(strides, strides[1:])):
            raise ConfigError(
                f"MODEL.SEM_SEG_HEAD.IN_FEATURES = {list(in_features)} have strides {strides}; "
                f"fix: list them shallowest first, e.g. stem, res2, res3, res4, res5 (ResNet) "
                f"or c1, c2, c3, c4, c5, without dilated stages"
            )
        skips = list(reversed(in_features[:-1]))
        if len(decoder_channels) < len(skips):
            raise ConfigError(
                f"MODEL.SEM_SEG_HEAD.DECODER_CHANNELS has {len(decoder_channels)} values for "
                f"{len(skips)} skip features; fix: give at least {len(skips)} (one per stage)"
            )
        self.upsample = upsample
        # Upsampling factor of each stage: to the skip's stride, or ×2 past the last skip.
        self._scales: list[int] = []
        blocks = []
        channels, stride = input_shape[in_features[-1]].channels, strides[-1]
        self.center = (
            nn.Sequential(*conv_norm_relu(channels, channels, 3, norm),
                          *conv_norm_relu(channels, channels, 3, norm))
            if center else nn.Identity()
        )
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
            layers = conv_norm_relu(channels + skip_channels, out_channels, 3, norm)
            layers += conv_norm_relu(out_channels, out_channels, 3, norm)
            blocks.append(nn.Sequential(*layers))
            channels, stride = out_channels, next_stride
        self.blocks = nn.ModuleList(blocks)
        self.predictor = nn.Conv2d(channels, num_classes, kernel_size=1)
        self._output_scale = stride

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            **super().from_config(cfg, input_shape),
            "decoder_channels": list(head.DECODER_CHANNELS),
            "norm": head.NORM,
            "upsample": head.UPSAMPLE,
            "center": head.UNET_CENTER,
        }

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        # The decoder runs channels-last: PyTorch's CPU bilinear upsampling is several times
        # faster in that layout than in NCHW (the convs follow their input's layout), which
        # takes the R-34 U-Net from above smp's latency to below it (bench/models.py). Only the
        # memory layout changes; the logits are the same up to float rounding.
        channels_last = torch.channels_last
        x = self.center(features[self.in_features[-1]]).contiguous(memory_format=channels_last)
        skips = [features[f] for f in reversed(self.in_features[:-1])]
        for i, (block, scale) in enumerate(zip(self.blocks, self._scales)):
            if self.upsample == "nearest":
                x = F.interpolate(x, scale_factor=scale, mode="nearest")
            else:
                x = upsample(x, scale)
            if i < len(skips):
                x = torch.cat([x, skips[i].contiguous(memory_format=channels_last)], dim=1)
            x = block(x)
        return upsample(self.predictor(x), self._output_scale).contiguous()


@SEM_SEG_HEADS_REGISTRY.register()
class ResNetUNetHead(UNetHead):
    """:class:`UNetHead` under its former name, so configs and runs that name it still load."""
