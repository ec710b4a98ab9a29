"""DeepLabV3 and DeepLabV3+ heads around torchvision's ASPP.

* :class:`DeepLabV3Head`: torchvision's ``DeepLabHead`` layout (ASPP → 3×3 conv + norm + ReLU
  → 1×1 class conv) on one feature, logits upsampled bilinearly to the input.
* :class:`DeepLabV3PlusHead` (the decoder torchvision lacks, as Detectron2's DeepLab project and
  segmentation_models_pytorch build it): ASPP on the deepest feature; on the way up, each
  shallower ``PROJECT_FEATURES`` map (the stride-4 ``res2``/``c2`` by default) is projected to
  48 channels by a 1×1 conv, concatenated with the upsampled coarser map, and fused by two
  3×3 convs.

Output stride 16 or 8 comes from the backbone (``MODEL.RESNETS.RES5_DILATION`` /
``RES4_DILATION``, ``MODEL.MOBILENET_V3.DILATED``); ``ASPP_DILATIONS`` should follow it
([6, 12, 18] at 16, [12, 24, 36] at 8). The ASPP image-pooling branch has a biased conv and no
norm, as Detectron2's: one value per channel and image cannot be batch-normalised when a
batch holds one image.
"""

from typing import Optional

import torch
from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import ASPP, ASPPConv, ASPPPooling

from d2seg.config import CfgNode
from d2seg.errors import ConfigError
from d2seg.modeling.backbone.backbone import check_in_features
from d2seg.modeling.heads.sem_seg import (
    SemSegHead,
    check_feature_count,
    conv_norm_relu,
    upsample,
)
from d2seg.modeling.losses import SemSegLoss
from d2seg.modeling.registry import SEM_SEG_HEADS_REGISTRY
from d2seg.modeling.shape_spec import ShapeSpec


def build_aspp(
    in_channels: int, dilations: list[int], out_channels: int, *, separable: bool = False
) -> ASPP:
    """torchvision's ASPP (1×1 branch, three dilated 3×3 branches, image pooling, 1×1 projection
    with dropout 0.5), its pooling branch without norm; ``separable``: depthwise-separable
    dilated branches."""
    if len(dilations) != 3:
        raise ConfigError(
            f"MODEL.SEM_SEG_HEAD.ASPP_DILATIONS = {list(dilations)}; fix: give 3 rates, e.g. "
            f"[6, 12, 18] at output stride 16 or [12, 24, 36] at 8"
        )
    aspp = ASPP(in_channels, list(dilations), out_channels)
    for branch in aspp.convs:
        if isinstance(branch, ASPPPooling):
            branch[1] = nn.Conv2d(in_channels, out_channels, 1)
            branch[2] = nn.Identity()
        elif isinstance(branch, ASPPConv) and separable:
            conv = branch[0]
            branch[0] = nn.Sequential(
                nn.Conv2d(in_channels, in_channels, 3, padding=conv.padding,
                          dilation=conv.dilation, groups=in_channels, bias=False),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
            )
    return aspp


def _aspp_config(cfg: CfgNode) -> dict:
    head = cfg.MODEL.SEM_SEG_HEAD
    return {
        "aspp_channels": head.ASPP_CHANNELS,
        "aspp_dilations": list(head.ASPP_DILATIONS),
        "separable": head.USE_DEPTHWISE_SEPARABLE_CONV,
        "norm": head.NORM,
    }


@SEM_SEG_HEADS_REGISTRY.register()
class DeepLabV3Head(SemSegHead):
    """ASPP over one backbone feature → logits at the input resolution (DeepLabV3).

    Example::

        import torch
        from d2seg.modeling.backbone.resnet import ResNet
        from d2seg.modeling.heads.deeplab import DeepLabV3Head

        trunk = ResNet(depth=50, in_channels=3, out_features=["res5"], norm="BN",
                       res4_dilation=2, res5_dilation=2)            # output stride 8
        head = DeepLabV3Head(input_shape=trunk.output_shape(), in_features=["res5"],
                             num_classes=4).eval()
        logits, _ = head(trunk.eval()(torch.zeros(1, 3, 64, 64)))   # 1×4×64×64
    """

    def __init__(
        self,
        *,
        input_shape: dict[str, ShapeSpec],
        in_features: list[str],
        num_classes: int,
        aspp_channels: int = 256,
        aspp_dilations: list[int] = (12, 24, 36),
        separable: bool = False,
        norm: str = "BN",
        loss: Optional[SemSegLoss] = None,
    ):
        """
        Args:
            in_features: the one feature the ASPP reads (e.g. ``["res5"]``).
            aspp_channels: ASPP and head channels.
            aspp_dilations: atrous rates of the three 3×3 ASPP branches.
            separable: depthwise-separable ASPP branches.
            norm: the norm after the head's 3×3 conv ("BN", "GN", "").
            Others as :class:`~d2seg.modeling.heads.sem_seg.SemSegHead`.
        """
        super().__init__(input_shape=input_shape, in_features=in_features,
                         num_classes=num_classes, loss=loss)
        check_feature_count(in_features, 1, "DeepLabV3Head", '["res5"]')
        shape = input_shape[in_features[0]]
        # torchvision's DeepLabHead layout, so its "classifier.*" keys fit.
        self.classifier = nn.Sequential(
            build_aspp(shape.channels, aspp_dilations, aspp_channels, separable=separable),
            *conv_norm_relu(aspp_channels, aspp_channels, 3, norm),
            nn.Conv2d(aspp_channels, num_classes, 1),
        )
        self._output_scale = shape.stride

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        return {**super().from_config(cfg, input_shape), **_aspp_config(cfg)}

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        return upsample(self.classifier(features[self.in_features[0]]), self._output_scale)


@SEM_SEG_HEADS_REGISTRY.register()
class DeepLabV3PlusHead(SemSegHead):
    """ASPP on the deepest feature + a decoder over shallower projected features (DeepLabV3+).

    Example::

        import torch
        from d2seg.modeling.backbone.resnet import ResNet
        from d2seg.modeling.heads.deeplab import DeepLabV3PlusHead

        trunk = ResNet(depth=50, in_channels=3, out_features=["res2", "res5"], norm="BN",
                       res5_dilation=2)                              # output stride 16
        head = DeepLabV3PlusHead(input_shape=trunk.output_shape(), in_features=["res5"],
                                 project_features=["res2"], project_channels=[48],
                                 num_classes=4, aspp_dilations=[6, 12, 18]).eval()
        logits, _ = head(trunk.eval()(torch.zeros(1, 3, 64, 64)))   # 1×4×64×64
    """

    def __init__(
        self,
        *,
        input_shape: dict[str, ShapeSpec],
        in_features: list[str],
        project_features: list[str],
        project_channels: list[int],
        num_classes: int,
        convs_dim: int = 256,
        aspp_channels: int = 256,
        aspp_dilations: list[int] = (6, 12, 18),
        separable: bool = False,
        norm: str = "BN",
        loss: Optional[SemSegLoss] = None,
    ):
        """
        Args:
            in_features: the one feature the ASPP reads (e.g. ``["res5"]``).
            project_features: shallower features joined on the way up, shallowest first
                (e.g. ``["res2"]``, stride 4).
            project_channels: 1×1 projection channels of each (48 in the paper).
            convs_dim: channels of the two 3×3 fusion convs after each concatenation.
            aspp_channels, aspp_dilations, separable, norm: as :class:`DeepLabV3Head`;
                ``separable`` also applies to the fusion convs.
        """
        super().__init__(input_shape=input_shape, in_features=in_features,
                         num_classes=num_classes, loss=loss)
        check_feature_count(in_features, 1, "DeepLabV3PlusHead", '["res5"]')
        check_in_features("MODEL.SEM_SEG_HEAD.PROJECT_FEATURES", project_features, input_shape)
        if len(project_channels) != len(project_features):
            raise ConfigError(
                f"MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS = {list(project_channels)} for "
                f"PROJECT_FEATURES {list(project_features)}; fix: give one value per feature"
            )
        strides = [input_shape[f].stride for f in [*project_features, in_features[0]]]
        if any(deep <= shallow for shallow, deep in zip(strides, strides[1:])):
            raise ConfigError(
                f"MODEL.SEM_SEG_HEAD.PROJECT_FEATURES {list(project_features)} + IN_FEATURES "
                f"{list(in_features)} have strides {strides}; fix: list projected features "
                f"shallowest first, each shallower than the ASPP feature (e.g. res2 for res5)"
            )
        self.project_features = list(project_features)
        self.aspp = build_aspp(input_shape[in_features[0]].channels, aspp_dilations,
                               aspp_channels, separable=separable)
        projections, fusions = [], []
        channels = aspp_channels
        for name, out_channels in zip(reversed(project_features), reversed(project_channels)):
            projections.append(nn.Sequential(
                *conv_norm_relu(input_shape[name].channels, out_channels, 1, norm)
            ))
            fusions.append(nn.Sequential(
                *conv_norm_relu(channels + out_channels, convs_dim, 3, norm, separable=separable),
                *conv_norm_relu(convs_dim, convs_dim, 3, norm, separable=separable),
            ))
            channels = convs_dim
        self.projections = nn.ModuleList(projections)
        self.fusions = nn.ModuleList(fusions)
        self.predictor = nn.Conv2d(channels, num_classes, 1)
        # Upsampling factor before each fusion, then to the input.
        self._scales = [deep // shallow for shallow, deep in zip(strides, strides[1:])][::-1]
        self._output_scale = strides[0]

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            **super().from_config(cfg, input_shape),
            **_aspp_config(cfg),
            "project_features": list(head.PROJECT_FEATURES),
            "project_channels": list(head.PROJECT_CHANNELS),
            "convs_dim": head.CONVS_DIM,
        }

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        x = self.aspp(features[self.in_features[0]])
        shallow = [features[f] for f in reversed(self.project_features)]
        for feature, scale, project, fuse in zip(shallow, self._scales, self.projections,
                                                 self.fusions):
            x = fuse(torch.cat([upsample(x, scale), project(feature)], dim=1))
        return upsample(self.predictor(x), self._output_scale)
