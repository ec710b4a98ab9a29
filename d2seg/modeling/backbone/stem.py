"""Any number of input channels, and torchvision state dicts, for every backbone.

A backbone whose first convolution reads the image (:class:`StemAdaptingBackbone`) takes a
state dict whose first-conv weight has another channel count than the model (an RGB ImageNet
checkpoint into a grayscale or N-channel model): the weight is adapted by
:func:`adapt_conv1_weight`, not skipped. :func:`map_backbone_checkpoint` also keys a bare
torchvision classification state dict (``conv1.weight``, ``features.0.0.weight``, ...) under the
backbone's prefix inside a whole model (``backbone.``, ``backbone.bottom_up.``).
"""

from abc import abstractmethod
from typing import Any, Literal

from torch import Tensor, nn

from d2seg.modeling.backbone.backbone import Backbone


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


def conv_with_in_channels(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """``conv`` itself when it reads ``in_channels`` channels, else a freshly initialised copy of
    its geometry (kernel, stride, padding, bias) that does."""
    if conv.in_channels == in_channels:
        return conv
    new = nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
        padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new


class StemAdaptingBackbone(Backbone):
    """A backbone whose first conv (``stem_weight_key``) follows the model's input channels
    whenever a state dict is loaded into it."""

    @property
    @abstractmethod
    def stem_weight_key(self) -> str:
        """State-dict key of the first conv's weight, e.g. ``"conv1.weight"``."""

    def check_weights_layout(self, layout: Literal["torchvision", "msra"], name: str) -> None:
        """Log a warning when weights trained in ``layout`` compute other features here.

        Called with the weights a checkpointer is about to load into this backbone (``name``:
        its module path). The default: every layout fits. ResNet trunks override it (the
        bottleneck stride sits in the 3×3 conv in torchvision's, in the 1×1 in MSRA's).
        """

    def adapt_state_dict(self, state_dict: dict[str, Tensor], prefix: str = "") -> None:
        """Adapt ``state_dict[prefix + stem_weight_key]`` in place to this model's channels.

        Loaders that drop shape-mismatched keys before ``load_state_dict`` (fvcore's
        Checkpointer) call this first; ``load_state_dict`` itself does it automatically.
        """
        key = prefix + self.stem_weight_key
        weight = state_dict.get(key)
        target = self.state_dict()[self.stem_weight_key]
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


def stem_adapting_backbones(model: nn.Module) -> list[tuple[str, StemAdaptingBackbone]]:
    """(state-dict key prefix, module) of every :class:`StemAdaptingBackbone` in ``model``."""
    return [
        (f"{name}." if name else "", module)
        for name, module in model.named_modules()
        if isinstance(module, StemAdaptingBackbone)
    ]


def adapt_input_channels(model: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """Adapt, in place, the first-conv weight of every backbone inside ``model``.

    ``state_dict`` is keyed like ``model.state_dict()``. Call it before a loader that discards
    keys whose shape differs from the model's.
    """
    for prefix, backbone in stem_adapting_backbones(model):
        backbone.adapt_state_dict(state_dict, prefix)


def check_weights_layout(model: nn.Module, layout: Literal["torchvision", "msra"]) -> None:
    """Let every backbone in ``model`` warn if weights trained in ``layout`` do not fit it."""
    for prefix, backbone in stem_adapting_backbones(model):
        backbone.check_weights_layout(layout, prefix.rstrip(".") or "model")


def map_torchvision_backbone_keys(
    state_dict: dict[str, Tensor], model: nn.Module
) -> dict[str, Tensor]:
    """Key a torchvision classification state dict (the model the backbone was cut from) like
    ``model``.

    Every backbone inside ``model`` gets the tensors of its own keys under its prefix, with the
    first conv adapted to its input channels; the classifier (``fc.*``, ``classifier.*``) and
    stages the backbone does not build are dropped. Returns a new dict for
    ``model.load_state_dict(..., strict=False)``.
    """
    check_weights_layout(model, "torchvision")
    mapped = {}
    for prefix, backbone in stem_adapting_backbones(model):
        own_keys = backbone.state_dict().keys()
        mapped.update({prefix + k: v for k, v in state_dict.items() if k in own_keys})
    adapt_input_channels(model, mapped)
    return mapped


def map_backbone_checkpoint(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """A checkpoint's state dict keyed and shaped for ``model``.

    For the ``map_external_state_dict`` hook of d2seg's Checkpointer: a bare torchvision
    backbone file (its first-conv key at the top level, where ``model`` has none) goes through
    :func:`map_torchvision_backbone_keys`; any other state dict (a d2seg checkpoint) keeps its
    keys and gets its backbones' first conv adapted to the model's input channels (an RGB
    checkpoint fine-tuned as grayscale).
    """
    own_keys = model.state_dict().keys()
    bare = any(
        backbone.stem_weight_key in state_dict and backbone.stem_weight_key not in own_keys
        for _, backbone in stem_adapting_backbones(model)
    )
    if bare:
        return map_torchvision_backbone_keys(state_dict, model)
    mapped = dict(state_dict)
    adapt_input_channels(model, mapped)
    return mapped
