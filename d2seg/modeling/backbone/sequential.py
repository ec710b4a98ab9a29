"""The ``features`` of a torchvision classification network as a backbone (VGG, MobileNetV3,
EfficientNet).

torchvision builds these networks as one ``nn.Sequential`` of layers, ``features``, in front
of a classifier. The backbone keeps that module under the same name, so a torchvision state
dict loads as is (its ``classifier.*`` keys are unexpected and ignored by non-strict loads),
and taps it after the last layer of each stride: the map at stride 2^k is named ``c<k>``
(``c0`` stride 1 .. ``c5`` stride 32, the C2..C5 of the FPN paper). Which layer ends which
stride is found once at construction by running a small probe image through the layers; a
dilated stage keeps the name of the stride it replaces and reports its true stride
(MobileNetV3 ``dilated=True``: ``c5`` has stride 16).
"""

import math

import torch
from torch import Tensor, nn

from d2seg.errors import ConfigError
from d2seg.modeling.backbone.norm import freeze_batchnorm
from d2seg.modeling.backbone.stem import StemAdaptingBackbone, conv_with_in_channels
from d2seg.modeling.shape_spec import ShapeSpec

_PROBE_SIDE = 32


def feature_name(stride: int) -> str:
    """``c<log2 stride>``: ``c1`` for stride 2 .. ``c5`` for stride 32."""
    return f"c{int(math.log2(stride))}"


class SequentialBackbone(StemAdaptingBackbone):
    """torchvision ``features`` layers returning the requested ``c<k>`` maps by name.

    Example::

        import torch, torchvision
        from d2seg.modeling.backbone.sequential import SequentialBackbone

        net = torchvision.models.mobilenet_v3_small(weights=None)
        backbone = SequentialBackbone(features=net.features, in_channels=1,
                                      out_features=["c2", "c3", "c5"], config_key="MODEL.X")
        maps = backbone(torch.zeros(1, 1, 64, 64))   # {"c2": 1×16×16×16, "c3": .., "c5": ..}
    """

    def __init__(
        self,
        *,
        features: nn.Sequential,
        in_channels: int,
        out_features: list[str],
        freeze_at: int = 0,
        config_key: str,
    ):
        """
        Args:
            features: the network's layers in order; the first conv found reads the image.
            in_channels: input image channels; the first conv is replaced by a freshly
                initialised one when it reads another count (weights are adapted on load).
            out_features: ``c<k>`` maps to return; layers past the deepest one are not kept.
            freeze_at: 0 trains everything, k freezes every layer up to stride 2^k (1: the
                stem, as the ResNet's FREEZE_AT); frozen BatchNorms become FrozenBatchNorm2d.
            config_key: the config node (e.g. ``"MODEL.VGG"``) that errors name.
        """
        super().__init__()
        stem_name = next(n for n, m in features.named_modules() if isinstance(m, nn.Conv2d))
        parent, _, leaf = stem_name.rpartition(".")
        owner = features.get_submodule(parent) if parent else features
        setattr(owner, leaf, conv_with_in_channels(getattr(owner, leaf), in_channels))
        self._stem_weight_key = f"features.{stem_name}.weight"

        last_layer, shapes = self._probe(features, in_channels)
        unknown = [f for f in out_features if f not in shapes]
        if unknown or not out_features:
            raise ConfigError(
                f"{config_key}.OUT_FEATURES = {list(out_features)}: {unknown or 'empty'}; "
                f"fix: choose from {list(shapes)}"
            )
        if not 0 <= freeze_at <= 5:
            raise ConfigError(
                f"MODEL.BACKBONE.FREEZE_AT = {freeze_at}; fix: use 0 (train all) .. 5 (freeze all)"
            )
        self._out_features = [f for f in shapes if f in out_features]
        self._taps = {last_layer[f]: f for f in self._out_features}
        self.features = features[: max(self._taps) + 1]
        self._shapes = {f: shapes[f] for f in self._out_features}
        # Strides grow with depth, so the deepest map's stride divides every kept one.
        self._size_divisibility = shapes[self._out_features[-1]].stride
        frozen = [
            i for f, i in last_layer.items() if freeze_at and shapes[f].stride <= 2**freeze_at
        ]
        for i in range(min(max(frozen, default=-1) + 1, len(self.features))):
            self.features[i] = freeze_batchnorm(self.features[i]).requires_grad_(False)

    @staticmethod
    def _probe(
        features: nn.Sequential, in_channels: int
    ) -> tuple[dict[str, int], dict[str, ShapeSpec]]:
        """Run a probe image through ``features`` in eval mode (statistics untouched) →
        (index of the last layer of each stride, its output's ShapeSpec), shallowest first."""
        modes = [m.training for m in features.modules()]
        features.eval()
        last_layer: dict[str, int] = {}
        shapes: dict[str, ShapeSpec] = {}
        dilation = 1
        with torch.no_grad():
            x = torch.zeros(1, in_channels, _PROBE_SIDE, _PROBE_SIDE)
            for i, layer in enumerate(features):
                x = layer(x)
                stride = _PROBE_SIDE // x.shape[-1]
                # A dilated stage replaces a stride: it keeps the name of the stride it replaces.
                dilations = [m.dilation[0] for m in layer.modules() if isinstance(m, nn.Conv2d)]
                dilation = max([dilation, *dilations])
                name = feature_name(stride * dilation)
                last_layer[name] = i
                shapes[name] = ShapeSpec(channels=x.shape[1], stride=stride)
        for module, training in zip(features.modules(), modes):
            module.training = training
        return last_layer, shapes

    @property
    def stem_weight_key(self) -> str:
        return self._stem_weight_key

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``x``: N×in_channels×H×W normalised images → ``{name: N×C×H/s×W/s}`` (s: stride)."""
        outputs = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._taps:
                outputs[self._taps[i]] = x
        return outputs

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._shapes)

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility
