"""Registries that map the names in a config to model classes (Detectron2's habit).

``MODEL.META_ARCHITECTURE``, ``MODEL.BACKBONE.NAME``, ``MODEL.SEM_SEG_HEAD.NAME``,
``MODEL.ROI_MASK_HEAD.NAME`` and ``MODEL.POINT_HEAD.NAME`` name an entry of one of these.
"""

from fvcore.common.registry import Registry

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = "Whole models: forward(list[dict]) -> losses or predictions."

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = "Functions cfg -> Backbone (features dict + output_shape())."

SEM_SEG_HEADS_REGISTRY = Registry("SEM_SEG_HEADS")
SEM_SEG_HEADS_REGISTRY.__doc__ = "Dense heads: backbone features -> per-pixel logits."

ROI_MASK_HEAD_REGISTRY = Registry("ROI_MASK_HEAD")
ROI_MASK_HEAD_REGISTRY.__doc__ = "Mask heads of GeneralizedRCNN (standard or PointRend)."

POINT_HEAD_REGISTRY = Registry("POINT_HEAD")
POINT_HEAD_REGISTRY.__doc__ = "PointRend point heads: point features -> point logits."
