"""Detectron2's ``SemSegFPNHead`` (Panoptic FPN's semantic branch, Kirillov et al. 2019).

Each FPN level in ``IN_FEATURES`` goes through log2(stride / ``COMMON_STRIDE``) blocks of
3×3 conv (``CONVS_DIM`` channels, ``NORM``, ReLU) + ×2 bilinear upsampling (one conv block
without upsampling for the level already at ``COMMON_STRIDE``); the branches are summed, a 1×1
conv gives the class logits, upsampled ×``COMMON_STRIDE`` to the input resolution. Convs are
initialised with ``c2_msra_fill`` as in Detectron2. The loss is d2seg's ``SemSegLoss``
(``LOSS`` "ce" = Detectron2's mean cross-entropy ignoring ``IGNORE_VALUE``, × ``LOSS_WEIGHT``).
"""

import math
from typing import Optional

from torch import Tensor, nn

from d2seg.config import CfgNode
from d2seg.errors import ConfigError
from d2seg.modeling.box_head import head_norm
from d2seg.modeling.heads.sem_seg import SemSegHead, upsample
from d2seg.modeling.losses import SemSegLoss
from d2seg.modeling.registry import SEM_SEG_HEADS_REGISTRY
from d2seg.modeling.shape_spec import ShapeSpec
from d2seg.modeling.weight_init import c2_msra_fill


def _conv_block(in_channels: int, out_channels: int, norm: str) -> list[nn.Module]:
    make_norm = head_norm(norm)
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=make_norm is None)
    c2_msra_fill(conv)
    return [conv] + ([make_norm(out_channels)] if make_norm else []) + [nn.ReLU(inplace=True)]


@SEM_SEG_HEADS_REGISTRY.register()
class SemSegFPNHead(SemSegHead):
    """FPN levels → N×``num_classes``×H×W logits at the input resolution, and their loss.

    ``forward(features, targets)`` returns ``(logits, {})`` in eval mode and ``(None,
    {"loss_sem_seg": loss})`` in training, as :class:`~d2seg.modeling.heads.ResNetUNetHead`.

    Example::

        import torch
        from d2seg.modeling.heads.semantic_fpn import SemSegFPNHead
        from d2seg.modeling.shape_spec import ShapeSpec

        shapes = {f"p{i}": ShapeSpec(channels=16, stride=2**i) for i in (2, 3, 4, 5)}
        head = SemSegFPNHead(input_shape=shapes, in_features=list(shapes), num_classes=3,
                             conv_dims=32, common_stride=4, norm="GN").eval()
        features = {f"p{i}": torch.zeros(1, 16, 64 // 2**i, 64 // 2**i) for i in (2, 3, 4, 5)}
        logits, _ = head(features)   # 1×3×64×64
    """

    def __init__(
        self,
        *,
        input_shape: dict[str, ShapeSpec],
        in_features: list[str],
        num_classes: int,
        conv_dims: int,
        common_stride: int,
        norm: str = "GN",
        loss: Optional[SemSegLoss] = None,
    ):
        """
        Args:
            input_shape: the backbone's ``output_shape()``.
            in_features: FPN levels to read, each with a stride ≥ ``common_stride``.
            num_classes: logits per pixel.
            conv_dims: channels of every conv.
            common_stride: stride (pixels) every branch is upsampled to before the sum.
            norm: "", "GN" (32 groups), "BN" or "SyncBN".
            loss: the training loss; default plain cross-entropy.
        """
        super().__init__(input_shape=input_shape, in_features=in_features,
                         num_classes=num_classes, loss=loss)
        self.common_stride = common_stride
        branches = []
        for name in self.in_features:
            stride = input_shape[name].stride
            if stride < common_stride:
                raise ConfigError(
                    f"MODEL.SEM_SEG_HEAD.IN_FEATURES: {name} has stride {stride} < "
                    f"COMMON_STRIDE {common_stride}; fix: use levels of stride >= {common_stride}"
                )
            layers: list[nn.Module] = []
            channels = input_shape[name].channels
            for _ in range(max(1, int(math.log2(stride) - math.log2(common_stride)))):
                layers += _conv_block(channels, conv_dims, norm)
                channels = conv_dims
                if stride != common_stride:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            branches.append(nn.Sequential(*layers))
        self.scale_heads = nn.ModuleList(branches)
        self.predictor = nn.Conv2d(conv_dims, num_classes, kernel_size=1)
        c2_msra_fill(self.predictor)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        return {**super().from_config(cfg, input_shape), "conv_dims": head.CONVS_DIM,
                "common_stride": head.COMMON_STRIDE, "norm": head.NORM}

    @property
    def logit_stride(self) -> int:
        return self.common_stride

    def strided_layers(self, features: dict[str, Tensor]) -> Tensor:
        """FPN levels by name → N×num_classes×(H/common_stride)×(W/common_stride) logits: the
        branches' sum at ``common_stride``, classified."""
        x = self.scale_heads[0](features[self.in_features[0]])
        for name, branch in zip(self.in_features[1:], self.scale_heads[1:]):
            x = x + branch(features[name])
        return self.predictor(x)

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        """FPN levels by name → N×num_classes×H×W logits: :meth:`strided_layers` upsampled
        ×``common_stride``."""
        return upsample(self.strided_layers(features), self.common_stride)
