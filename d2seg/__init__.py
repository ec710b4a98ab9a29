"""d2seg: Detectron2-style instance, semantic and panoptic segmentation on torchvision.

The names most scripts need are importable from here::

    from d2seg import get_cfg, build_model, DefaultPredictor, Visualizer

They are loaded on first use, so ``import d2seg.data.convert`` (the converter) does not pay for
torch's model code.
"""

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "get_cfg": "d2seg.config",
    "CfgNode": "d2seg.config",
    "build_model": "d2seg.modeling",
    "DefaultPredictor": "d2seg.engine.predictor",
    "DefaultTrainer": "d2seg.engine.trainer",
    "Visualizer": "d2seg.utils.visualizer",
    "ColorMode": "d2seg.utils.visualizer",
    "DatasetCatalog": "d2seg.data.catalog",
    "MetadataCatalog": "d2seg.data.catalog",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'd2seg' has no attribute {name!r}")
