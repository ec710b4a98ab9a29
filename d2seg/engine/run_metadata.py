"""What a trained model needs to be used, taken from the training data at setup.

Two jobs, both done before the first iteration:

* :func:`resolve_from_data` fills the config from ``DATASETS.TRAIN``: the class names
  (``DATASETS.THING_CLASSES``/``STUFF_CLASSES``, so ``config.yaml`` names the predictions) and
  every class count that is 0 ("as many as the data has", e.g. ``MODEL.ROI_HEADS.NUM_CLASSES
  0``). An explicit count the data cannot fit is a :class:`ConfigError` with the right number;
  one larger than the data's count trains but wastes outputs, so it is a warning.
* :func:`inference_metadata` is the dict every checkpoint carries under ``"metadata"``:
  class names, the meta-architecture's tasks and headline metric, the input format and
  channel count, normalisation, test sizes and score threshold. ``DefaultPredictor.from_run``
  needs nothing else.

Example::

    from d2seg.config import get_cfg
    from d2seg.engine.run_metadata import inference_metadata, resolve_from_data

    cfg = get_cfg()
    cfg.merge_from_file("configs/tiny/unet_R_18_tiny.yaml")
    cfg.DATASETS.TRAIN = ("output/demo/carvana_coco/annotations/train.json",)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 0
    cfg = resolve_from_data(cfg)          # NUM_CLASSES 2: background, car
    metadata = inference_metadata(cfg)    # {"stuff_classes": ["background", "car"], ...}
"""

import logging
from typing import Any

import d2seg
from d2seg.config import CfgNode, get_key, set_key
from d2seg.data.catalog import DatasetCatalog, MetadataCatalog
from d2seg.data.datasets import resolve_dataset
from d2seg.errors import ConfigError
from d2seg.modeling.meta_arch.declarations import meta_arch_class

logger = logging.getLogger(__name__)

_NAME_KEYS = {"thing_classes": "THING_CLASSES", "stuff_classes": "STUFF_CLASSES"}


def training_data_metadata(cfg: CfgNode) -> dict[str, Any]:
    """The metadata of ``DATASETS.TRAIN[0]`` (loaded once if its class names are not known
    before loading, as for a registered COCO json); ``{}`` without a training dataset."""
    if not cfg.DATASETS.TRAIN:
        return {}
    name = resolve_dataset(cfg.DATASETS.TRAIN[0])
    metadata = MetadataCatalog.get(name)
    if not any(key in metadata.as_dict() for key in _NAME_KEYS):
        DatasetCatalog.get(name)  # the loaders set the class names
    return metadata.as_dict()


def _config_metadata(cfg: CfgNode) -> dict[str, Any]:
    """Class names already written into the config (a run's ``config.yaml``)."""
    return {
        key: list(cfg.DATASETS[cfg_key])
        for key, cfg_key in _NAME_KEYS.items()
        if cfg.DATASETS[cfg_key]
    }


def resolve_from_data(cfg: CfgNode) -> CfgNode:
    """A copy of ``cfg`` (frozen if it was) with class names and 0 class counts from the data.

    The data is ``DATASETS.TRAIN[0]``'s metadata, or without a training dataset the class
    names already in ``DATASETS.THING_CLASSES``/``STUFF_CLASSES``. Raises :class:`ConfigError`
    when a count is 0 and the data does not tell it, or when an explicit count is smaller than
    the data needs.
    """
    data = training_data_metadata(cfg) or _config_metadata(cfg)
    source = f"DATASETS.TRAIN {cfg.DATASETS.TRAIN[0]!r}" if cfg.DATASETS.TRAIN else "the config"
    arch = meta_arch_class(cfg)
    counts = arch.class_counts(cfg, data)
    cfg = cfg.clone()
    frozen = cfg.is_frozen()
    cfg.defrost()
    for key, cfg_key in _NAME_KEYS.items():
        if key in data:
            cfg.DATASETS[cfg_key] = tuple(data[key])
    for key, needed in counts.items():
        value = get_key(cfg, key)
        if needed is None:
            if value == 0:
                raise ConfigError(
                    f"{key} is 0 (= from the data) but {source} names no classes for "
                    f"{arch.__name__}; fix: set {key} to the number of classes"
                )
            continue
        if value == 0:
            set_key(cfg, key, needed)
            logger.info(f"{key} = {needed}, from {source}")
        elif value < needed:
            raise ConfigError(
                f"{key} = {value} but {source} has {needed} classes for it; fix: set {key} "
                f"{needed} (or 0 to take the number from the data)"
            )
        elif value > needed:
            logger.warning(
                f"{key} = {value} but {source} has only {needed}: the extra outputs are never "
                f"trained; fix: set {key} {needed} (or 0 to take the number from the data)"
            )
    if frozen:
        cfg.freeze()
    return cfg


def inference_metadata(cfg: CfgNode) -> dict[str, Any]:
    """What :class:`~d2seg.engine.predictor.DefaultPredictor` needs beside the weights (plain
    data, loadable with ``torch.load(weights_only=True)``)."""
    arch = meta_arch_class(cfg)
    return {
        "d2seg_version": d2seg.__version__,
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "tasks": list(arch.tasks),
        "headline_metric": arch.headline_metric(cfg),
        "thing_classes": list(cfg.DATASETS.THING_CLASSES),
        "stuff_classes": list(cfg.DATASETS.STUFF_CLASSES),
        "input_format": cfg.INPUT.FORMAT,
        "num_channels": len(cfg.MODEL.PIXEL_MEAN),
        "pixel_mean": [float(v) for v in cfg.MODEL.PIXEL_MEAN],
        "pixel_std": [float(v) for v in cfg.MODEL.PIXEL_STD],
        "min_size_test": int(cfg.INPUT.MIN_SIZE_TEST),
        "max_size_test": int(cfg.INPUT.MAX_SIZE_TEST),
        "score_thresh_test": float(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST),
    }
