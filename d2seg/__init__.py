"""d2seg: Detectron2-style instance, semantic and panoptic segmentation on torchvision."""

__version__ = "0.1.0"
