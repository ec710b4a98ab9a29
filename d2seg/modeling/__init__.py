"""Models: backbones, heads and meta-architectures behind Detectron2-style registries."""

from d2seg.modeling.build import build_model
from d2seg.modeling.shape_spec import ShapeSpec

__all__ = ["build_model", "ShapeSpec"]
