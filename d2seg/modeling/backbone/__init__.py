"""Backbones; importing this package registers them in BACKBONE_REGISTRY."""
