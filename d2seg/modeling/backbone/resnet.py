"""ResNet-18/34/50/101 trunk from torchvision with any number of input channels.

Feature maps (Detectron2 names): ``stem`` (stride 2: conv1 + norm + ReLU, before the max-pool),
``res2`` .. ``res5`` (strides 4 .. 32, torchvision's ``layer1`` .. ``layer4``). Parameter names
are torchvision's (``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight``, ...), so a torchvision
ResNet state dict loads as is (its ``fc.*`` keys are unexpected and ignored by non-strict loads).

A state dict whose ``conv1.weight`` has a different number of input channels than the model
(an RGB ImageNet checkpoint into a grayscale or N-channel model) is adapted, not skipped: see
:func:`adapt_conv1_weight`.
"""

from functools import partial
from typing import Any

import torchvision
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from d2seg.config import CfgNode
from d2seg.errors import ConfigError
from d2seg.modeling.backbone.backbone import Backbone
from d2seg.modeling.registry import BACKBONE_REGISTRY
from d2seg.modeling.shape_spec import ShapeSpec

STAGE_NAMES = ("stem", "res2", "res3", "res4", "res5")
_TORCHVISION_RESNETS = {
    18: torchvision.models.resnet18,
    34: torchvision.models.resnet34,
    50: torchvision.models.resnet50,
    101: torchvision.models.resnet101,
}
_GN_GROUPS = 32


def get_norm(norm: str, channels: int) -> nn.Module:
    """A normalisation layer over ``channels``: "FrozenBN", "BN", "GN" or "" (none).

    "GN" uses 32 groups, or the largest divisor of ``channels`` below 32 when 32 does not divide
    it (narrow decoder stages).
    """
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    if norm == "BN":
        return nn.BatchNorm2d(channels)
    if norm == "GN":
        groups = max(g for g in range(1, _GN_GROUPS + 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if norm == "":
        return nn.Identity()
    raise ConfigError(f"norm {norm!r} is not one of 'FrozenBN', 'BN', 'GN', ''; fix: use one")


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` in ``module`` by a ``FrozenBatchNorm2d`` with its statistics.

    Returns the converted module (``module`` itself unless it is a BatchNorm2d). Frozen stages
    must not update running statistics in ``train()`` mode, which ``requires_grad=False`` alone
    would not prevent.
    """
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        frozen.weight.copy_(module.weight.detach())
        frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen.to(module.weight.device)
    for name, child in module.named_children():
        converted = freeze_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


def adapt_conv1_weight(weight: Tensor, in_channels: int) -> Tensor:
    """Adapt a first-conv weight O×C×k×k to O×``in_channels``×k×k.

    The mean over the C source channels is repeated ``in_channels`` times and scaled by
    C / ``in_channels``. The sum over input channels stays that of the source filter, so an
    image whose channels are alike (a grayscale image, or N similar bands) gives the same
    activations as the source model on the C-channel replicated image: a grayscale model loaded
    from RGB weights sees ``3 * mean_rgb(W) * gray``, which equals ``W`` applied to (gray, gray,
    gray). Normalise the N channels like the source ones (``MODEL.PIXEL_MEAN/STD``).
    """
    source_channels = weight.shape[1]
    mean = weight.mean(dim=1, keepdim=True)
    return mean.repeat(1, in_channels, 1, 1) * (source_channels / in_channels)


class ResNet(Backbone):
    """torchvision ResNet trunk returning the requested stages as a dict of feature maps."""

    def __init__(
        self,
        *,
        depth: int,
        in_channels: int,
        out_features: list[str],
        norm: str = "FrozenBN",
        freeze_at: int = 0,
    ):
        """
        Args:
            depth: 18, 34, 50 or 101.
            in_channels: input image channels (1 for grayscale, 3 for RGB/BGR, any N).
            out_features: stages to return, a subset of ``STAGE_NAMES``; stages deeper than the
                deepest requested one are not built.
            norm: "FrozenBN" (fixed statistics and affine), "BN" or "GN".
            freeze_at: 0 trains everything, 1 freezes the stem, 2 the stem and res2, ... 5 all.
                Frozen parameters get ``requires_grad=False`` and their BatchNorms become
                FrozenBatchNorm2d.
        """
        super().__init__()
        if depth not in _TORCHVISION_RESNETS:
            raise ConfigError(
                f"MODEL.RESNETS.DEPTH = {depth} is not supported; fix: use one of "
                f"{sorted(_TORCHVISION_RESNETS)}"
            )
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
        # weights=None: nothing is ever downloaded; pretrained weights come from MODEL.WEIGHTS.
        net = _TORCHVISION_RESNETS[depth](weights=None, norm_layer=partial(get_norm, norm))
        if in_channels != net.conv1.in_channels:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")

        self._out_features = [f for f in STAGE_NAMES if f in out_features]
        num_stages = STAGE_NAMES.index(self._out_features[-1])
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self._layer_names = [f"layer{i}" for i in range(1, num_stages + 1)]
        for name in self._layer_names:
            setattr(self, name, getattr(net, name))

        expansion = 4 if depth >= 50 else 1
        self._shapes = {"stem": ShapeSpec(channels=64, stride=2)}
        for i, name in enumerate(STAGE_NAMES[1:]):
            self._shapes[name] = ShapeSpec(channels=64 * 2**i * expansion, stride=4 * 2**i)
        self._freeze(freeze_at)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        return {
            "depth": cfg.MODEL.RESNETS.DEPTH,
            "in_channels": len(cfg.MODEL.PIXEL_MEAN),
            "out_features": list(cfg.MODEL.RESNETS.OUT_FEATURES),
            "norm": cfg.MODEL.RESNETS.NORM,
            "freeze_at": cfg.MODEL.BACKBONE.FREEZE_AT,
        }

    def _freeze(self, freeze_at: int) -> None:
        stages = [["conv1", "bn1"]] + [[name] for name in self._layer_names]
        for names in stages[:freeze_at]:
            for name in names:
                module = freeze_batchnorm(getattr(self, name))
                module.requires_grad_(False)
                setattr(self, name, module)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``x``: N×in_channels×H×W normalised images → ``{name: N×C×H/s×W/s}`` (s: stride)."""
        x = self.relu(self.bn1(self.conv1(x)))
        outputs = {"stem": x} if "stem" in self._out_features else {}
        x = self.maxpool(x)
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

    def adapt_state_dict(self, state_dict: dict[str, Tensor], prefix: str = "") -> None:
        """Adapt ``state_dict[prefix + "conv1.weight"]`` in place to this model's input channels.

        Loaders that drop shape-mismatched keys before ``load_state_dict`` (fvcore's
        Checkpointer) call this first; ``load_state_dict`` itself does it automatically.
        """
        key = prefix + "conv1.weight"
        weight = state_dict.get(key)
        target = self.conv1.weight
        if (
            isinstance(weight, Tensor)
            and weight.dim() == 4
            and weight.shape[1] != target.shape[1]
            and weight.shape[0] == target.shape[0]
            and weight.shape[2:] == target.shape[2:]
        ):
            state_dict[key] = adapt_conv1_weight(weight, target.shape[1])

    def _load_from_state_dict(
        self, state_dict: dict[str, Tensor], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        self.adapt_state_dict(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _resnets(model: nn.Module) -> list[tuple[str, "ResNet"]]:
    """(state-dict key prefix, module) of every :class:`ResNet` inside ``model``."""
    return [(f"{n}." if n else "", m) for n, m in model.named_modules() if isinstance(m, ResNet)]


def adapt_resnet_input_channels(model: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """Adapt, in place, the ``conv1.weight`` of every :class:`ResNet` inside ``model``.

    ``state_dict`` is keyed like ``model.state_dict()``. Call it before a loader that discards
    keys whose shape differs from the model's.
    """
    for prefix, resnet in _resnets(model):
        resnet.adapt_state_dict(state_dict, prefix)


def map_torchvision_resnet_keys(
    state_dict: dict[str, Tensor], model: nn.Module
) -> dict[str, Tensor]:
    """Key a torchvision ResNet state dict (``conv1.weight``, ``layer1.0...``) like ``model``.

    Every ResNet trunk inside ``model`` (e.g. ``backbone.`` or ``backbone.bottom_up.``) gets the
    torchvision tensors under its own prefix, with ``conv1.weight`` adapted to its input
    channels; the classifier (``fc.*``) and stages the trunk does not build are dropped.
    Returns a new dict for ``model.load_state_dict(..., strict=False)``.
    """
    mapped = {}
    for prefix, resnet in _resnets(model):
        own_keys = resnet.state_dict().keys()
        mapped.update({prefix + k: v for k, v in state_dict.items() if k in own_keys})
    adapt_resnet_input_channels(model, mapped)
    return mapped


def map_resnet_checkpoint(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """A checkpoint's state dict keyed and shaped for ``model`` (a model with a ResNet trunk).

    For the ``map_external_state_dict`` hook of d2seg's Checkpointer: a torchvision ResNet file
    (top-level ``conv1.weight``, ``layer1.*``) goes through :func:`map_torchvision_resnet_keys`;
    any other state dict (a d2seg checkpoint) keeps its keys and gets its trunks' first conv
    adapted to the model's input channels (an RGB checkpoint fine-tuned as grayscale).
    """
    if "conv1.weight" in state_dict and "conv1.weight" not in model.state_dict():
        return map_torchvision_resnet_keys(state_dict, model)
    mapped = dict(state_dict)
    adapt_resnet_input_channels(model, mapped)
    return mapped


@BACKBONE_REGISTRY.register()
def build_resnet_backbone(cfg: CfgNode) -> ResNet:
    """``MODEL.BACKBONE.NAME: build_resnet_backbone``: the bare trunk (MODEL.RESNETS.*)."""
    return ResNet(**ResNet.from_config(cfg))
