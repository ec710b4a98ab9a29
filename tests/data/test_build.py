"""Train/test loaders over COCO json files and registered datasets."""

import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image

from d2seg.config import get_cfg
from d2seg.data.build import (
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from d2seg.data.catalog import DatasetCatalog, MetadataCatalog
from d2seg.data.datasets import register_coco_instances
from d2seg.data.mapper import DatasetMapper
from d2seg.data.samplers import TrainingSampler
from d2seg.errors import ConfigError, DatasetError
from d2seg.utils import comm

# (height, width) of the images: three wide, three tall.
SIZES = [(64, 96), (96, 64), (64, 128), (128, 64), (64, 80), (80, 64)]


@pytest.fixture
def coco_json(tmp_path) -> str:
    """A COCO file in the converter's layout (OUT/annotations/train.json + OUT/images): one
    square instance per image, plus one image with only a crowd region and one with nothing."""
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    images, annotations = [], []
    for i, (height, width) in enumerate(SIZES + [(64, 64), (64, 64)]):
        pixels = np.full((height, width, 3), 40 * (i % 6), dtype=np.uint8)
        Image.fromarray(pixels).save(images_dir / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "height": height, "width": width})
        if i < len(SIZES) + 1:
            annotations.append({
                "id": len(annotations) + 1, "image_id": i, "category_id": 1 + i % 2,
                "bbox": [8, 8, 16, 16], "segmentation": [[8, 8, 24, 8, 24, 24, 8, 24]],
                "iscrowd": int(i == len(SIZES)), "area": 256,
            })
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    path = tmp_path / "annotations" / "train.json"
    path.parent.mkdir()
    path.write_text(json.dumps(coco))
    return str(path)


def _cfg(dataset: str, *overrides):
    cfg = get_cfg()
    cfg.merge_from_list([
        "DATASETS.TRAIN", (dataset,), "SOLVER.IMS_PER_BATCH", 2, "DATALOADER.NUM_WORKERS", 0,
        "INPUT.MIN_SIZE_TRAIN", (32,), "INPUT.MIN_SIZE_TEST", 32, "SEED", 0, *overrides,
    ])
    return cfg


def test_json_path_is_loaded_and_images_without_instances_are_filtered(coco_json):
    dicts = get_detection_dataset_dicts([coco_json])
    assert [d["image_id"] for d in dicts] == list(range(len(SIZES)))  # crowd-only, empty gone
    assert len(get_detection_dataset_dicts(coco_json, filter_empty=False)) == len(SIZES) + 2


def test_unknown_dataset_lists_the_registered_ones(coco_json):
    register_coco_instances("tiny_listed", {}, coco_json, "unused")
    try:
        with pytest.raises(DatasetError, match="tiny_listed"):
            get_detection_dataset_dicts(["no_such_dataset"])
    finally:
        DatasetCatalog.remove("tiny_listed")
        MetadataCatalog.remove("tiny_listed")


def test_missing_images_fail_before_loading_and_are_named(coco_json, tmp_path):
    (tmp_path / "images" / "3.png").unlink()
    with pytest.raises(DatasetError, match=r"1 of 8 images .*3\.png.*fix"):
        build_detection_train_loader(_cfg(coco_json))


def test_no_dataset_is_a_config_error():
    with pytest.raises(ConfigError, match="DATASETS.TRAIN"):
        get_detection_dataset_dicts([])


def test_train_batches_are_lists_of_ims_per_batch_mapped_dicts(coco_json):
    batches = list(itertools.islice(build_detection_train_loader(_cfg(coco_json)), 4))
    for batch in batches:
        assert isinstance(batch, list) and len(batch) == 2
        for item in batch:
            assert item["image"].dtype == torch.uint8 and min(item["image"].shape[1:]) == 32
            assert item["instances"]["masks"].shape[1:] == item["image"].shape[1:]


def test_aspect_grouping_never_mixes_wide_and_tall_images(coco_json):
    loader = build_detection_train_loader(_cfg(coco_json, "SOLVER.IMS_PER_BATCH", 3))
    kinds = set()
    for batch in itertools.islice(loader, 12):
        wide = {item["image"].shape[2] > item["image"].shape[1] for item in batch}
        assert len(wide) == 1
        kinds |= wide
    assert kinds == {True, False}


def _batches(cfg, n, start_iter=0):
    loader = build_detection_train_loader(cfg, start_iter=start_iter)
    return [[(d["image_id"], d["image"], d["instances"]["boxes"]) for d in batch]
            for batch in itertools.islice(loader, n)]


def _assert_same_batches(one, two):
    assert len(one) == len(two)
    for batch1, batch2 in zip(one, two):
        assert [i for i, _, _ in batch1] == [i for i, _, _ in batch2]
        for (_, image1, boxes1), (_, image2, boxes2) in zip(batch1, batch2):
            assert torch.equal(image1, image2) and torch.equal(boxes1, boxes2)


def test_same_seed_same_batches_and_the_main_rng_is_left_alone(coco_json):
    cfg = _cfg(coco_json, "INPUT.RANDOM_FLIP", "horizontal", "INPUT.MIN_SIZE_TRAIN", (24, 32, 40))
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first = _batches(cfg, 5)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(1)  # the model's RNG does not reach the data
    _assert_same_batches(first, _batches(cfg, 5))


def test_batches_do_not_depend_on_workers_and_resume_mid_bucket(coco_json):
    # Batches of 3 over 3 wide and 3 tall images: buckets hold images across batch boundaries.
    cfg = _cfg(coco_json, "SOLVER.IMS_PER_BATCH", 3, "INPUT.RANDOM_FLIP", "horizontal",
               "INPUT.MIN_SIZE_TRAIN", (24, 32, 40))
    full = _batches(cfg, 8)
    workers = cfg.clone()
    workers.DATALOADER.NUM_WORKERS = 2
    _assert_same_batches(full, _batches(workers, 8))
    _assert_same_batches(full[5:], _batches(workers, 3, start_iter=5))


def test_batch_not_divisible_by_world_size_is_a_config_error(coco_json, monkeypatch):
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    with pytest.raises(ConfigError, match="SOLVER.IMS_PER_BATCH = 3.*multiple of 2"):
        build_detection_train_loader(_cfg(coco_json, "SOLVER.IMS_PER_BATCH", 3))


def test_repeat_factor_sampler_is_built_from_config(coco_json):
    cfg = _cfg(coco_json, "DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler",
               "DATALOADER.REPEAT_THRESHOLD", 0.9, "DATALOADER.ASPECT_RATIO_GROUPING", False,
               "SOLVER.IMS_PER_BATCH", 1)
    batches = itertools.islice(build_detection_train_loader(cfg), 60)
    ids = [batch[0]["image_id"] for batch in batches]
    # Both classes are in half the images: every image repeats sqrt(0.9 / 0.5) ≈ 1.34 times.
    assert set(ids) == set(range(len(SIZES)))


def test_workers_keep_the_sampler_order_without_repeats(coco_json):
    cfg = _cfg(coco_json, "DATALOADER.NUM_WORKERS", 2, "SOLVER.IMS_PER_BATCH", 1,
               "DATALOADER.ASPECT_RATIO_GROUPING", False)
    batches = itertools.islice(build_detection_train_loader(cfg), 12)
    ids = [batch[0]["image_id"] for batch in batches]
    # The loader alternates between the workers, which map alternate batches.
    assert ids == list(itertools.islice(TrainingSampler(len(SIZES), seed=0), 12))


@pytest.mark.slow
def test_spawned_workers_need_no_catalog(coco_json):
    # Registered with a lambda, which cannot be pickled: the workers must get the dicts instead.
    DatasetCatalog.register("tiny_spawn", lambda: json_dataset)
    json_dataset = get_detection_dataset_dicts(coco_json)
    try:
        cfg = _cfg("tiny_spawn", "DATALOADER.NUM_WORKERS", 2)
        loader = build_detection_train_loader(cfg, multiprocessing_context="spawn")
        batches = list(itertools.islice(loader, 4))
    finally:
        DatasetCatalog.remove("tiny_spawn")
    assert all(len(batch) == 2 and batch[0]["image"].dtype == torch.uint8 for batch in batches)
    assert {d["image_id"] for batch in batches for d in batch} <= set(range(len(SIZES)))


def test_test_loader_gives_every_image_once_in_order_without_targets(coco_json):
    cfg = _cfg(coco_json)
    batches = list(build_detection_test_loader(cfg, coco_json))
    assert [batch[0]["image_id"] for batch in batches] == list(range(len(SIZES) + 2))
    for batch, (height, width) in zip(batches, SIZES):
        (item,) = batch
        assert (item["height"], item["width"]) == (height, width)
        assert min(item["image"].shape[1:]) == 32
        assert "instances" not in item


def test_loaders_take_explicit_arguments_as_in_detectron2(coco_json):
    """``build_detection_*_loader(dataset=..., mapper=..., ...)`` without any config."""
    cfg = _cfg(coco_json)
    dicts = get_detection_dataset_dicts(coco_json)
    mapper = DatasetMapper(cfg, is_train=True)
    loader = build_detection_train_loader(
        dicts, mapper=mapper, total_batch_size=3, aspect_ratio_grouping=False, seed=0,
        sampler=TrainingSampler(len(dicts), seed=0, shuffle=False),
    )
    (batch,) = itertools.islice(loader, 1)
    assert [item["image_id"] for item in batch] == [d["image_id"] for d in dicts[:3]]
    test_loader = build_detection_test_loader(dicts[:2], mapper=DatasetMapper(cfg, False))
    assert [b[0]["image_id"] for b in test_loader] == [d["image_id"] for d in dicts[:2]]
    with pytest.raises(ConfigError, match=r"= 0 \(the total batch size\) cannot be split"):
        build_detection_train_loader(dicts, mapper=mapper, total_batch_size=0)
