"""The interface every backbone implements (Detectron2's ``Backbone``)."""

from abc import ABCMeta, abstractmethod

from torch import Tensor, nn

from d2seg.errors import ConfigError
from d2seg.modeling.shape_spec import ShapeSpec


class Backbone(nn.Module, metaclass=ABCMeta):
    """A network that maps an image batch to named feature maps.

    Heads are built from :meth:`output_shape` alone, so any backbone that reports its features'
    channels and strides can feed them.
    """

    @abstractmethod
    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``x``: normalised images N×C×H×W, H and W multiples of :attr:`size_divisibility`.

        Returns feature maps by name; the map named ``k`` is N×channels×(H/stride)×(W/stride)
        with channels and stride from ``output_shape()[k]``.
        """

    @abstractmethod
    def output_shape(self) -> dict[str, ShapeSpec]:
        """Channels and stride (input pixels) of each feature map :meth:`forward` returns."""

    @property
    def size_divisibility(self) -> int:
        """Input heights and widths must be multiples of this (0 = any size)."""
        return 0


def check_in_features(key: str, in_features: list[str], shapes: dict[str, ShapeSpec]) -> None:
    """Raise ConfigError unless every name in ``in_features`` (config ``key``) is in ``shapes``.

    The one check of every module built on a backbone's ``output_shape()``: FPN, RPN, RoI
    heads, PointRend, the U-Net head.
    """
    missing = [f for f in in_features if f not in shapes]
    if missing or not in_features:
        raise ConfigError(
            f"{key} = {list(in_features)}: the backbone does not return "
            f"{missing or 'any of them'}; fix: choose from {list(shapes)}, or make the backbone "
            f"return them (MODEL.RESNETS.OUT_FEATURES; MODEL.BACKBONE.NAME "
            f"build_resnet_backbone for the bare trunk's stem/res2..res5)"
        )
