"""Class names and counts from the training data, found at setup (before any iteration)."""

import logging

import pytest

from d2seg.config import get_cfg
from d2seg.data.catalog import DatasetCatalog, MetadataCatalog
from d2seg.engine.run_metadata import inference_metadata, resolve_from_data
from d2seg.errors import ConfigError
from d2seg.modeling import build_model


@pytest.fixture
def dataset():
    """Registers a dataset under a fresh name with the given metadata; removed afterwards."""
    names = []

    def register(**metadata) -> str:
        name = f"run_metadata_test_{len(names)}"
        DatasetCatalog.register(name, lambda: [])
        MetadataCatalog.get(name).set(**metadata)
        names.append(name)
        return name

    yield register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _cfg(config: str, train: str, **keys) -> "CfgNode":  # noqa: F821
    cfg = get_cfg()
    cfg.merge_from_file(f"configs/tiny/{config}")
    cfg.DATASETS.TRAIN = (train,)
    for key, value in keys.items():
        node = cfg
        *path, leaf = key.split("__")
        for part in path:
            node = node[part]
        node[leaf] = value
    return cfg


def test_zero_counts_come_from_the_data_and_names_go_into_the_config(dataset):
    name = dataset(thing_classes=["chip", "capacitor", "resistor"])
    cfg = resolve_from_data(_cfg("mask_rcnn_R_18_tiny.yaml", name, MODEL__ROI_HEADS__NUM_CLASSES=0))
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3
    assert list(cfg.DATASETS.THING_CLASSES) == ["chip", "capacitor", "resistor"]
    # what config.yaml carries survives a dump and reload
    reloaded = get_cfg()
    reloaded.merge_from_other_cfg(type(cfg).load_cfg(cfg.dump()))
    assert list(reloaded.DATASETS.THING_CLASSES) == ["chip", "capacitor", "resistor"]


def test_semantic_counts_include_background_and_allow_one_binary_logit(dataset):
    name = dataset(stuff_classes=["background", "car"])
    cfg = resolve_from_data(_cfg("unet_R_18_tiny.yaml", name, MODEL__SEM_SEG_HEAD__NUM_CLASSES=0))
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 2
    binary = resolve_from_data(_cfg("unet_R_18_gray_binary_tiny.yaml", name))
    assert binary.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 1


def test_too_small_an_explicit_count_fails_with_the_right_number(dataset):
    name = dataset(stuff_classes=["background", "road", "car", "sky"])
    with pytest.raises(ConfigError, match=r"NUM_CLASSES = 3 but .* has 4 classes.*NUM_CLASSES 4"):
        resolve_from_data(_cfg("unet_R_18_tiny.yaml", name, MODEL__SEM_SEG_HEAD__NUM_CLASSES=3))


def test_too_large_an_explicit_count_warns(dataset, caplog):
    name = dataset(thing_classes=["balloon"])
    with caplog.at_level(logging.WARNING, logger="d2seg.engine.run_metadata"):
        cfg = resolve_from_data(_cfg("mask_rcnn_R_18_tiny.yaml", name))  # the file says 2
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 2
    assert "has only 1" in caplog.text and "never trained" in caplog.text


def test_panoptic_semantic_head_counts_things_background_and_stuff(dataset):
    name = dataset(
        thing_classes=["person"],
        stuff_classes=["sky", "grass"],
        stuff_dataset_id_to_contiguous_id={10: 0, 11: 1},
    )
    cfg = resolve_from_data(
        _cfg("panoptic_unet_R_18_tiny.yaml", name, MODEL__ROI_HEADS__NUM_CLASSES=0,
             MODEL__SEM_SEG_HEAD__NUM_CLASSES=0)
    )
    assert (cfg.MODEL.ROI_HEADS.NUM_CLASSES, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES) == (1, 4)


def test_zero_without_class_names_says_what_to_set(dataset):
    name = dataset(json_file="x.json")  # names unknown even after loading
    with pytest.raises(ConfigError, match="names no classes.*fix: set MODEL.ROI_HEADS.NUM_CLASSES"):
        resolve_from_data(_cfg("mask_rcnn_R_18_tiny.yaml", name, MODEL__ROI_HEADS__NUM_CLASSES=0))


def test_unresolved_zero_is_refused_by_build_model():
    cfg = get_cfg()
    cfg.merge_from_file("configs/tiny/unet_R_18_tiny.yaml")
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 0
    with pytest.raises(ConfigError, match="is 0, which means 'from DATASETS.TRAIN'"):
        build_model(cfg)


def test_inference_metadata_is_what_a_user_of_the_weights_needs(dataset):
    name = dataset(stuff_classes=["background", "car"], thing_classes=["car"])
    cfg = resolve_from_data(_cfg("unet_R_18_gray_binary_tiny.yaml", name))
    metadata = inference_metadata(cfg)
    assert metadata["tasks"] == ["sem_seg"] and metadata["headline_metric"] == "sem_seg/IoU"
    assert metadata["stuff_classes"] == ["background", "car"]
    assert (metadata["input_format"], metadata["num_channels"]) == ("L", 1)
    assert metadata["pixel_mean"] == [117.0] and metadata["min_size_test"] == 128
