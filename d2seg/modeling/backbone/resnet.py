"""ResNet / ResNeXt trunk from torchvision with any number of input channels.

Feature maps (Detectron2 names): ``stem`` (stride 2: conv1 + norm + ReLU, before the max-pool),
``res2`` .. ``res5`` (strides 4 .. 32, torchvision's ``layer1`` .. ``layer4``; res4/res5 keep
stride 8/16 when dilated). Parameter names are torchvision's (``conv1.weight``, ``bn1.*``,
``layer1.0.conv1.weight``, ...), so a torchvision ResNet/ResNeXt state dict loads as is (its
``fc.*`` keys are unexpected and ignored by non-strict loads); a state dict whose
``conv1.weight`` has another number of input channels is adapted, not skipped (see
:mod:`d2seg.modeling.backbone.stem`).

The Detectron2 ``MODEL.RESNETS`` options map onto torchvision's ResNet: ``NUM_GROUPS`` /
``WIDTH_PER_GROUP`` (ResNeXt: bottleneck width = groups × width per group), ``RES5_DILATION``
(and d2seg's ``RES4_DILATION``) as ``replace_stride_with_dilation`` (torchvision's rule: the
first block of a dilated stage keeps the previous dilation in its 3×3 conv),
``STRIDE_IN_1X1`` (the stride moves from the 3×3 to the first 1×1 conv of a bottleneck),
``STEM_OUT_CHANNELS`` / ``RES2_OUT_CHANNELS`` (other widths), ``DEFORM_ON_PER_STAGE`` (the 3×3
convs of those stages become torchvision ``DeformConv2d``, offsets predicted by a conv
initialised to zero, as Detectron2's ``DeformBottleneckBlock``).
"""

import logging
from functools import partial
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.resnet import ResNet as TorchvisionResNet
from torchvision.ops import DeformConv2d

from d2seg.config import CfgNode
from d2seg.errors import ConfigError
from d2seg.modeling.backbone.norm import freeze_batchnorm, get_norm
from d2seg.modeling.backbone.stem import StemAdaptingBackbone, conv_with_in_channels
# GeneralizedRCNN imports the checkpoint mapping under this name.
from d2seg.modeling.backbone.stem import (  # noqa: F401
    map_backbone_checkpoint as map_resnet_checkpoint,
)
from d2seg.modeling.registry import BACKBONE_REGISTRY
from d2seg.modeling.shape_spec import ShapeSpec

logger = logging.getLogger(__name__)

STAGE_NAMES = ("stem", "res2", "res3", "res4", "res5")
_ARCHITECTURES = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}
_STANDARD_STEM = 64


class DeformableConv2d(DeformConv2d):
    """A 3×3 ``DeformConv2d`` with the conv that predicts its offsets (and, modulated, the
    sigmoid mask of Deformable ConvNets v2) from the same input.

    The offset conv starts at zero, so a fresh block computes what the plain conv it replaces
    computed (modulated: half of it, the mask starting at sigmoid(0)).
    """

    def __init__(self, conv: nn.Conv2d, *, modulated: bool, deformable_groups: int):
        super().__init__(
            conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
            padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
            bias=conv.bias is not None,
        )
        self.weight.data.copy_(conv.weight.data)
        taps = conv.kernel_size[0] * conv.kernel_size[1]
        self.offset_channels = 2 * taps * deformable_groups
        self.modulated = modulated
        extra = taps * deformable_groups if modulated else 0
        self.conv_offset = nn.Conv2d(
            conv.in_channels, self.offset_channels + extra, conv.kernel_size,
            stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
        )
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        predicted = self.conv_offset(x)
        if not self.modulated:
            return super().forward(x, predicted)
        offset, mask = predicted.split([self.offset_channels, predicted.shape[1]
                                        - self.offset_channels], dim=1)
        return super().forward(x, offset, mask.sigmoid())


def _check_options(depth: int, num_groups: int, width_per_group: int, res4_dilation: int,
                   res5_dilation: int, deform_on_per_stage: list[bool]) -> None:
    if depth not in _ARCHITECTURES:
        raise ConfigError(
            f"MODEL.RESNETS.DEPTH = {depth} is not supported; fix: use one of "
            f"{sorted(_ARCHITECTURES)}"
        )
    for key, value in (("RES4_DILATION", res4_dilation), ("RES5_DILATION", res5_dilation)):
        if value not in (1, 2):
            raise ConfigError(f"MODEL.RESNETS.{key} = {value}; fix: use 1 or 2")
    if res4_dilation == 2 and res5_dilation != 2:
        raise ConfigError(
            "MODEL.RESNETS.RES4_DILATION 2 needs RES5_DILATION 2 (output stride 8 dilates both "
            "stages); fix: set MODEL.RESNETS.RES5_DILATION 2"
        )
    if len(deform_on_per_stage) != 4:
        raise ConfigError(
            f"MODEL.RESNETS.DEFORM_ON_PER_STAGE has {len(deform_on_per_stage)} values; fix: give "
            f"4 (res2, res3, res4, res5)"
        )
    if _ARCHITECTURES[depth][0] is BasicBlock:
        basic_only = {
            "NUM_GROUPS": (num_groups, 1), "WIDTH_PER_GROUP": (width_per_group, 64),
            "RES4_DILATION": (res4_dilation, 1), "RES5_DILATION": (res5_dilation, 1),
            "DEFORM_ON_PER_STAGE": (list(deform_on_per_stage), [False] * 4),
        }
        for key, (value, required) in basic_only.items():
            if value != required:
                raise ConfigError(
                    f"MODEL.RESNETS.{key} = {value} needs bottleneck blocks, but ResNet-{depth} "
                    f"has basic blocks; fix: use MODEL.RESNETS.DEPTH 50 or deeper, or {key} "
                    f"{required}"
                )


class ResNet(StemAdaptingBackbone):
    """torchvision ResNet/ResNeXt trunk returning the requested stages as a dict of maps.

    Example::

        import torch
        from d2seg.modeling.backbone.resnet import ResNet

        trunk = ResNet(depth=50, in_channels=1, out_features=["res2", "res5"],
                       num_groups=32, width_per_group=4, res5_dilation=2)   # ResNeXt-50 32x4d
        maps = trunk(torch.zeros(1, 1, 64, 64))   # res2: 1×256×16×16, res5: 1×2048×4×4
    """

    def __init__(
        self,
        *,
        depth: int,
        in_channels: int,
        out_features: list[str],
        norm: str = "FrozenBN",
        freeze_at: int = 0,
        num_groups: int = 1,
        width_per_group: int = 64,
        stride_in_1x1: bool = False,
        res4_dilation: int = 1,
        res5_dilation: int = 1,
        stem_out_channels: int = _STANDARD_STEM,
        res2_out_channels: int | None = None,
        deform_on_per_stage: list[bool] = (False, False, False, False),
        deform_modulated: bool = False,
        deform_num_groups: int = 1,
    ):
        """
        Args:
            depth: 18, 34, 50, 101 or 152.
            in_channels: input image channels (1 for grayscale, 3 for RGB/BGR, any N).
            out_features: stages to return, a subset of ``STAGE_NAMES``; stages deeper than the
                deepest requested one are not built.
            norm: "FrozenBN" (fixed statistics and affine), "BN", "SyncBN" or "GN".
            freeze_at: 0 trains everything, 1 freezes the stem, 2 the stem and res2, ... 5 all.
                Frozen parameters get ``requires_grad=False`` and their BatchNorms become
                FrozenBatchNorm2d.
            num_groups, width_per_group: ResNeXt cardinality and width of each group in res2
                (1 and 64: plain ResNet). Bottleneck depths only.
            stride_in_1x1: put a bottleneck's stride in its first 1×1 conv (MSRA/Caffe2
                weights) instead of its 3×3 conv (torchvision weights).
            res4_dilation, res5_dilation: 2 replaces the stage's stride by dilation (output
                stride 16 with res5, 8 with both). Bottleneck depths only.
            stem_out_channels: channels of conv1.
            res2_out_channels: channels of res2 (doubling each stage); None: the depth's
                standard width (64 for basic blocks, 256 for bottlenecks).
            deform_on_per_stage: for res2..res5, whether the 3×3 convs are deformable.
            deform_modulated: modulated deformable convs (v2, a learnt mask).
            deform_num_groups: offset groups of the deformable convs.
        """
        super().__init__()
        _check_options(depth, num_groups, width_per_group, res4_dilation, res5_dilation,
                       list(deform_on_per_stage))
        unknown = [f for f in out_features if f not in STAGE_NAMES]
        if unknown or not out_features:
            raise ConfigError(
                f"MODEL.RESNETS.OUT_FEATURES = {list(out_features)}: {unknown or 'empty'}; "
                f"fix: choose from {list(STAGE_NAMES)}"
            )
        if not 0 <= freeze_at <= len(STAGE_NAMES):
            raise ConfigError(
                f"MODEL.BACKBONE.FREEZE_AT = {freeze_at}; fix: use 0 (train all) .. 5 (freeze all)"
            )
        block, layers = _ARCHITECTURES[depth]
        standard_res2 = 64 * block.expansion
        res2_out_channels = res2_out_channels or standard_res2
        if res2_out_channels % block.expansion:
            raise ConfigError(
                f"MODEL.RESNETS.RES2_OUT_CHANNELS = {res2_out_channels}: bottleneck outputs are "
                f"4× their width; fix: use a multiple of 4, e.g. 256"
            )
        norm_layer = partial(get_norm, norm)
        dilate = [False, res4_dilation == 2, res5_dilation == 2]
        # weights=None semantics: torchvision's ResNet class never downloads; pretrained
        # weights come from MODEL.WEIGHTS.
        net = TorchvisionResNet(
            block, layers, groups=num_groups, width_per_group=width_per_group,
            replace_stride_with_dilation=dilate, norm_layer=norm_layer,
        )
        if stem_out_channels != _STANDARD_STEM or res2_out_channels != standard_res2:
            _rebuild_widths(net, block, layers, stem_out_channels, res2_out_channels,
                            num_groups * width_per_group, dilate)
        net.conv1 = conv_with_in_channels(net.conv1, in_channels)
        # Where a bottleneck strides ("1x1": MSRA, "3x3": torchvision); None for basic blocks.
        self._bottleneck_stride = None
        if block is Bottleneck:
            self._bottleneck_stride = "1x1" if stride_in_1x1 else "3x3"
        if self._bottleneck_stride == "1x1":
            for m in net.modules():
                if isinstance(m, Bottleneck):
                    m.conv1.stride, m.conv2.stride = m.conv2.stride, (1, 1)
        for stage, deform in zip((net.layer1, net.layer2, net.layer3, net.layer4),
                                 deform_on_per_stage):
            for bottleneck in stage if deform else ():
                bottleneck.conv2 = DeformableConv2d(
                    bottleneck.conv2, modulated=deform_modulated,
                    deformable_groups=deform_num_groups,
                )

        self._out_features = [f for f in STAGE_NAMES if f in out_features]
        num_stages = STAGE_NAMES.index(self._out_features[-1])
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self._layer_names = [f"layer{i}" for i in range(1, num_stages + 1)]
        for name in self._layer_names:
            setattr(self, name, getattr(net, name))

        self._shapes = {"stem": ShapeSpec(channels=stem_out_channels, stride=2)}
        stride = 4
        for i, name in enumerate(STAGE_NAMES[1:]):
            if i > 0 and not dilate[i - 1]:  # res3..res5 halve the resolution unless dilated
                stride *= 2
            self._shapes[name] = ShapeSpec(channels=res2_out_channels * 2**i, stride=stride)
        self._freeze(freeze_at)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        node = cfg.MODEL.RESNETS
        basic = _ARCHITECTURES.get(node.DEPTH, (Bottleneck,))[0] is BasicBlock
        # Detectron2 sizes RES2_OUT_CHANNELS (default 256) for bottlenecks and requires 64 for
        # R18/R34; d2seg reads the default as "the standard width" there.
        res2 = None if basic and node.RES2_OUT_CHANNELS in (64, 256) else node.RES2_OUT_CHANNELS
        return {
            "depth": node.DEPTH,
            "in_channels": len(cfg.MODEL.PIXEL_MEAN),
            "out_features": list(node.OUT_FEATURES),
            "norm": node.NORM,
            "freeze_at": cfg.MODEL.BACKBONE.FREEZE_AT,
            "num_groups": node.NUM_GROUPS,
            "width_per_group": node.WIDTH_PER_GROUP,
            "stride_in_1x1": node.STRIDE_IN_1X1,
            "res4_dilation": node.RES4_DILATION,
            "res5_dilation": node.RES5_DILATION,
            "stem_out_channels": node.STEM_OUT_CHANNELS,
            "res2_out_channels": res2,
            "deform_on_per_stage": list(node.DEFORM_ON_PER_STAGE),
            "deform_modulated": node.DEFORM_MODULATED,
            "deform_num_groups": node.DEFORM_NUM_GROUPS,
        }

    @property
    def stem_weight_key(self) -> str:
        return "conv1.weight"

    def check_weights_layout(self, layout: Literal["torchvision", "msra"], name: str) -> None:
        wanted = {"torchvision": "3x3", "msra": "1x1"}[layout]
        if self._bottleneck_stride not in (None, wanted):
            logger.warning(
                f"{layout} weights into the trunk {name}, whose bottlenecks stride in the "
                f"{self._bottleneck_stride} conv; these weights were trained with the stride in "
                f"the {wanted}, so they compute other features here: set "
                f"MODEL.RESNETS.STRIDE_IN_1X1 {wanted == '1x1'}"
            )

    def _freeze(self, freeze_at: int) -> None:
        stages = [["conv1", "bn1"]] + [[name] for name in self._layer_names]
        for names in stages[:freeze_at]:
            for name in names:
                module = freeze_batchnorm(getattr(self, name))
                module.requires_grad_(False)
                setattr(self, name, module)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``x``: N×in_channels×H×W normalised images → ``{name: N×C×H/s×W/s}`` (s: stride)."""
        # The stem runs channels-last: PyTorch's CPU max-pool is ~4x faster in that layout
        # than in NCHW (the conv follows its input's layout, and a 3-channel input converts
        # for almost nothing), which takes a ResNet-50 stem at 512 px from 57 to 29 ms
        # (bench/RESULTS.md). Only the memory layout changes; the values are the same. The
        # "stem" feature stays channels-last (the U-Net decoder converts to it anyway); the
        # stages run in the input's layout: NCHW, or channels-last where the caller chose it
        # for the whole trunk (GeneralizedRCNN.backbone_features at CPU inference).
        stage_layout = (torch.channels_last if not x.is_contiguous()
                        and x.is_contiguous(memory_format=torch.channels_last)
                        else torch.contiguous_format)
        x = self.relu(self.bn1(self.conv1(x.contiguous(memory_format=torch.channels_last))))
        outputs = {"stem": x} if "stem" in self._out_features else {}
        x = self.maxpool(x).contiguous(memory_format=stage_layout)
        for stage, layer_name in zip(STAGE_NAMES[1:], self._layer_names):
            x = getattr(self, layer_name)(x)
            if stage in self._out_features:
                outputs[stage] = x
        return outputs

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {name: self._shapes[name] for name in self._out_features}

    @property
    def size_divisibility(self) -> int:
        # res5 has stride 32: smaller multiples give odd sizes that U-Net skips cannot match.
        return 32


def _rebuild_widths(net: TorchvisionResNet, block: type, layers: list[int], stem: int,
                    res2: int, bottleneck_width: int, dilate: list[bool]) -> None:
    """Rebuild ``net``'s stem and stages for other widths with torchvision's own stage builder
    (``_make_layer``), initialised as torchvision initialises a ResNet."""
    net.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = net._norm_layer(stem)
    net.inplanes, net.dilation = stem, 1
    planes = res2 // block.expansion
    # torchvision's bottleneck width is planes × base_width / 64 × groups; Detectron2 fixes it at
    # NUM_GROUPS × WIDTH_PER_GROUP for res2 whatever RES2_OUT_CHANNELS is.
    net.base_width = bottleneck_width * 64 // (planes * net.groups)
    net.layer1 = net._make_layer(block, planes, layers[0])
    for i, name in enumerate(("layer2", "layer3", "layer4")):
        setattr(net, name, net._make_layer(block, planes * 2 ** (i + 1), layers[i + 1], stride=2,
                                           dilate=dilate[i]))
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


@BACKBONE_REGISTRY.register()
def build_resnet_backbone(cfg: CfgNode) -> ResNet:
    """``MODEL.BACKBONE.NAME: build_resnet_backbone``: the bare trunk (MODEL.RESNETS.*)."""
    return ResNet(**ResNet.from_config(cfg))
