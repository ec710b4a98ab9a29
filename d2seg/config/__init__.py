"""Config: Detectron2's key tree (``get_cfg``) with checked merges."""

from d2seg.config.config import CfgNode, get_key, load_yaml_with_base, set_key, validate_cfg
from d2seg.config.configurable import configurable
from d2seg.config.defaults import _C


def get_cfg() -> CfgNode:
    """A fresh copy of the default config (Detectron2's keys plus d2seg's)."""
    return _C.clone()


__all__ = [
    "CfgNode",
    "configurable",
    "get_cfg",
    "get_key",
    "load_yaml_with_base",
    "set_key",
    "validate_cfg",
]
