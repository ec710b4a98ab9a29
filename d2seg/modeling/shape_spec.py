"""Shape of one feature map, as reported by ``Backbone.output_shape()``."""

from dataclasses import dataclass


@dataclass(frozen=True)
class ShapeSpec:
    """``channels`` of a feature map and its ``stride`` in input pixels."""

    channels: int
    stride: int
