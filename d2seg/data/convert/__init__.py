"""Annotation sources → COCO instances, semantic PNGs and COCO panoptic."""
