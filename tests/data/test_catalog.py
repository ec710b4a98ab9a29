"""Dataset/metadata catalogs, COCO instances/panoptic/sem-seg registration, json datasets."""

import json
import multiprocessing
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from d2seg.data.build import get_detection_dataset_dicts
from d2seg.data.catalog import DatasetCatalog, MetadataCatalog
from d2seg.data.datasets import (
    register_coco_instances,
    register_coco_panoptic,
    register_sem_seg,
    resolve_dataset,
)
from d2seg.data.convert.pipeline import convert_dataset
from d2seg.errors import DatasetError


@pytest.fixture
def clean_catalogs():
    """Forget whatever a test registers."""
    before = set(DatasetCatalog.list()), set(MetadataCatalog.list())
    yield
    for name in set(DatasetCatalog.list()) - before[0]:
        DatasetCatalog.remove(name)
    for name in set(MetadataCatalog.list()) - before[1]:
        MetadataCatalog.remove(name)


def _tiny_coco(root: Path) -> Path:
    """The converter's layout: root/annotations/train.json + root/images/a.png."""
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / "images" / "a.png")
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 5, "segmentation": [[1, 1, 9, 1, 9, 9]],
             "bbox": [1, 1, 8, 8], "iscrowd": 0, "area": 32},
        ],
        "categories": [{"id": 5, "name": "chip"}, {"id": 2, "name": "resistor"}],
    }
    json_file = root / "annotations" / "train.json"
    json_file.parent.mkdir()
    json_file.write_text(json.dumps(coco))
    return json_file


def test_register_get_list_remove(clean_catalogs):
    DatasetCatalog.register("toy", lambda: [{"file_name": "x"}])
    assert "toy" in DatasetCatalog.list()
    assert DatasetCatalog.get("toy") == [{"file_name": "x"}]
    with pytest.raises(DatasetError, match="'toy' is already registered"):
        DatasetCatalog.register("toy", list)
    DatasetCatalog.remove("toy")
    assert "toy" not in DatasetCatalog.list()


def test_unknown_dataset_lists_registered_names_and_the_json_hint(clean_catalogs):
    DatasetCatalog.register("balloon_train", list)
    with pytest.raises(DatasetError) as excinfo:
        DatasetCatalog.get("balloon_trian")
    message = str(excinfo.value)
    assert "balloon_train" in message and "path to a COCO json" in message
    with pytest.raises(DatasetError, match="registered: .*balloon_train.*COCO json"):
        resolve_dataset("balloon_trian")


def test_metadata_attributes(clean_catalogs):
    meta = MetadataCatalog.get("toy").set(thing_classes=["a", "b"])
    assert MetadataCatalog.get("toy") is meta
    assert meta.thing_classes == ["a", "b"] and meta.name == "toy"
    meta.set(thing_classes=["a", "b"])  # same value again is fine
    with pytest.raises(DatasetError, match="'thing_classes' of dataset 'toy' is already"):
        meta.thing_classes = ["c"]
    with pytest.raises(AttributeError, match="no 'stuff_classes'.*thing_classes"):
        meta.stuff_classes
    assert meta.get("stuff_classes", []) == []
    assert pickle.loads(pickle.dumps(meta)).as_dict() == meta.as_dict()


def test_register_coco_instances(tmp_path, clean_catalogs):
    json_file = _tiny_coco(tmp_path)
    register_coco_instances("chips", {"note": "tiny"}, json_file, tmp_path / "images")
    meta = MetadataCatalog.get("chips")
    assert (meta.json_file, meta.note) == (str(json_file), "tiny")
    (record,) = DatasetCatalog.get("chips")
    assert record["file_name"] == str((tmp_path / "images" / "a.png").resolve())
    assert record["annotations"][0]["category_id"] == 1  # id 5 is the second of sorted ids 2, 5
    assert meta.thing_classes == ["resistor", "chip"]
    assert meta.thing_dataset_id_to_contiguous_id == {2: 0, 5: 1}


def test_resolve_json_path_uses_the_converter_layout(tmp_path, clean_catalogs):
    json_file = _tiny_coco(tmp_path)
    name = resolve_dataset(str(json_file))
    assert name == str(json_file.resolve())
    assert resolve_dataset(name) == name  # idempotent: a worker may call it again
    assert MetadataCatalog.get(name).image_root == str((tmp_path / "images").resolve())
    (record,) = DatasetCatalog.get(name)
    assert Path(record["file_name"]).is_file()


def test_converted_split_carries_semantic_and_panoptic_labels(
    repo_root, tmp_path, clean_catalogs
):
    out = tmp_path / "out"
    convert_dataset(repo_root / "annotations" / "chipsets", out, splits={"val": 0.25})
    name = resolve_dataset(str(out / "annotations" / "train.json"))
    meta = MetadataCatalog.get(name)
    # the label files are known at registration, the class names once the json is read
    assert meta.ignore_label == 255 and meta.json_file == name
    assert meta.sem_seg_root == str((out / "sem_seg" / "train").resolve())
    assert meta.panoptic_root == str((out / "panoptic" / "train").resolve())
    assert meta.panoptic_json == str((out / "panoptic" / "train.json").resolve())
    dicts = DatasetCatalog.get(name)

    num_classes = len(meta.thing_classes)
    assert meta.stuff_classes == ["background", *meta.thing_classes]
    assert len(dicts) == len(json.loads(Path(name).read_text())["images"]) > 0
    for record in dicts:
        with Image.open(record["file_name"]) as image:
            assert image.size == (record["width"], record["height"])
        semantic = np.asarray(Image.open(record["sem_seg_file_name"]))
        assert semantic.shape == (record["height"], record["width"])
        assert set(np.unique(semantic).tolist()) <= set(range(num_classes + 1)) | {255}
        rgb = np.asarray(Image.open(record["pan_seg_file_name"]).convert("RGB"), dtype=np.int64)
        segment_ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        assert segment_ids.shape == semantic.shape
        segments = record["segments_info"]
        assert set(np.unique(segment_ids).tolist()) - {0} == {s["id"] for s in segments}
        assert len(segments) > 0
        for segment in segments:
            pixels = segment_ids == segment["id"]
            assert segment["area"] == pixels.sum() and segment["isthing"]
            # panoptic contiguous class k is semantic value k + 1 (0 = background)
            assert (semantic[pixels] == segment["category_id"] + 1).all()
        assert (semantic[segment_ids == 0] % 255 == 0).all()  # void: background or ignore


def test_resolve_json_path_with_images_beside_it(tmp_path, clean_catalogs):
    json_file = _tiny_coco(tmp_path)
    beside = tmp_path / "flat"
    beside.mkdir()
    (tmp_path / "images" / "a.png").rename(beside / "a.png")
    json_file.rename(beside / "data.json")
    (tmp_path / "images").mkdir(exist_ok=True)  # an unrelated images/ folder next to flat/
    name = resolve_dataset(str(beside / "data.json"))
    (record,) = DatasetCatalog.get(name)
    assert Path(record["file_name"]) == (beside / "a.png").resolve()


def test_resolve_missing_json_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match=r"nope\.json not found; fix:"):
        resolve_dataset(str(tmp_path / "nope.json"))


def test_spawned_worker_recreates_the_registration(tmp_path, clean_catalogs):
    json_file = str(_tiny_coco(tmp_path))
    name = resolve_dataset(json_file)
    # A library function, not one of this module: spawned children cannot import test modules
    # under pytest's importlib import mode.
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply_async(resolve_dataset, (json_file,)).get(timeout=120) == name
        loaded = pool.apply_async(get_detection_dataset_dicts, ([json_file],)).get(timeout=120)
    assert loaded == DatasetCatalog.get(name)


@pytest.fixture(scope="module")
def panoptic_sample(shared_data: Path) -> Path:
    return shared_data / "coco_panoptic_sample" / "sample_data"


def _register_panoptic_sample(sample: Path, name: str = "pan_sample", metadata=None) -> None:
    register_coco_panoptic(
        name,
        metadata or {},
        sample / "input_images",
        sample / "panoptic_examples",
        sample / "panoptic_examples.json",
    )


def test_register_coco_panoptic_sample_numbers_things_and_stuff_separately(
    panoptic_sample, clean_catalogs
):
    """Real COCO panoptic (80 things, 53 stuff): instance class t names ``thing_classes[t]``,
    stuff id k names ``stuff_classes[k]``; checked against panopticapi's category file."""
    _register_panoptic_sample(panoptic_sample)
    meta = MetadataCatalog.get("pan_sample")
    categories = json.loads(
        (panoptic_sample.parent / "panoptic_coco_categories.json").read_text()
    )
    by_id = {c["id"]: c for c in categories}
    assert (len(meta.thing_classes), len(meta.stuff_classes)) == (80, 53)
    assert sorted(meta.thing_dataset_id_to_contiguous_id.values()) == list(range(80))
    assert sorted(meta.stuff_dataset_id_to_contiguous_id.values()) == list(range(53))
    dicts = DatasetCatalog.get("pan_sample")
    assert [Path(d["file_name"]).name for d in dicts] == ["000000142238.jpg", "000000439180.jpg"]
    raw = json.loads((panoptic_sample / "panoptic_examples.json").read_text())["annotations"]
    seen = set()
    for record, annotation in zip(dicts, raw):
        assert Path(record["file_name"]).is_file()
        rgb = np.asarray(Image.open(record["pan_seg_file_name"]).convert("RGB"), dtype=np.int64)
        assert rgb.shape[:2] == (record["height"], record["width"])
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]
        assert {s["id"] for s in record["segments_info"]} == set(np.unique(ids).tolist()) - {0}
        for segment, original in zip(record["segments_info"], annotation["segments_info"]):
            category = by_id[original["category_id"]]
            names = meta.thing_classes if segment["isthing"] else meta.stuff_classes
            assert segment["isthing"] == bool(category["isthing"])
            assert names[segment["category_id"]] == category["name"]
            assert segment["area"] == int((ids == segment["id"]).sum())
            seen.add(segment["isthing"])
    assert seen == {True, False}


def test_register_coco_panoptic_rejects_one_shared_id_space(panoptic_sample, clean_catalogs):
    """Detectron2's "coco_panoptic_standard" maps (things and stuff in one 0..132 space) would
    give stuff labels 2 + 80.. past the semantic head: an error that says how to number them."""
    categories = json.loads((panoptic_sample / "panoptic_examples.json").read_text())["categories"]
    shared = {"thing_dataset_id_to_contiguous_id": {}, "stuff_dataset_id_to_contiguous_id": {}}
    for i, category in enumerate(sorted(categories, key=lambda c: c["id"])):
        kind = "thing" if category["isthing"] else "stuff"
        shared[f"{kind}_dataset_id_to_contiguous_id"][category["id"]] = i
    with pytest.raises(DatasetError, match=r"stuff_dataset_id_to_contiguous_id maps to \[80, "):
        _register_panoptic_sample(panoptic_sample, metadata=shared)
    separate = {
        "thing_dataset_id_to_contiguous_id": {1: 0},
        "thing_classes": ["background", "person"],
    }
    with pytest.raises(DatasetError, match=r"thing_classes has 2 names for 1 thing .* fix:"):
        _register_panoptic_sample(panoptic_sample, metadata=separate)


def test_register_sem_seg(tmp_path, clean_catalogs):
    for folder, names, ext in (("img", ["a", "b", "sub/c"], "jpg"), ("gt", ["a", "sub/c"], "png")):
        for name in names:
            path = tmp_path / folder / f"{name}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    classes = {"stuff_classes": ["bg", "x"]}
    register_sem_seg("seg", tmp_path / "img", tmp_path / "gt", metadata=classes)
    dicts = DatasetCatalog.get("seg")
    assert [(Path(d["file_name"]).name, Path(d["sem_seg_file_name"]).name) for d in dicts] == [
        ("a.jpg", "a.png"),
        ("c.jpg", "c.png"),
    ]
    meta = MetadataCatalog.get("seg")
    assert meta.ignore_label == 255
    assert meta.stuff_classes == ["bg", "x"]
    register_sem_seg("seg_wrong_ext", tmp_path / "img", tmp_path / "gt", image_ext="tif")
    with pytest.raises(DatasetError, match=r"no '\*\.tif' .* fix:"):
        DatasetCatalog.get("seg_wrong_ext")


def test_register_metadata_given_by_the_caller_wins_over_defaults(tmp_path, clean_catalogs):
    """``register_sem_seg(..., metadata={"ignore_label": 11})`` used to raise TypeError
    (multiple values for 'ignore_label')."""
    for folder, ext in (("img", "jpg"), ("gt", "png")):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / folder / f"a.{ext}")
    register_sem_seg("seg11", tmp_path / "img", tmp_path / "gt", metadata={"ignore_label": 11})
    meta = MetadataCatalog.get("seg11")
    assert meta.ignore_label == 11 and meta.sem_seg_root == str(tmp_path / "gt")
    assert meta.get("evaluator_type") is None  # evaluators follow the model's tasks now
    register_sem_seg("seg_default", tmp_path / "img", tmp_path / "gt")
    assert MetadataCatalog.get("seg_default").ignore_label == 255
    # the folders come from the arguments: a different one in metadata is a conflict
    with pytest.raises(DatasetError, match="'image_root' of dataset 'seg_clash' is already"):
        register_sem_seg("seg_clash", tmp_path / "img", tmp_path / "gt",
                         metadata={"image_root": "elsewhere"})


def test_register_coco_panoptic_metadata_overrides_the_ignore_label(
    panoptic_sample, clean_catalogs
):
    _register_panoptic_sample(panoptic_sample, "pan_ignore", metadata={"ignore_label": 0})
    meta = MetadataCatalog.get("pan_ignore")
    assert meta.ignore_label == 0 and len(meta.thing_classes) == 80
    assert meta.get("label_divisor") is None


def test_import_d2seg_data_stays_light_until_the_mapper_is_needed():
    """The converter and its worker processes import d2seg.data, never torch."""
    code = (
        "import sys, d2seg.data; assert 'torch' not in sys.modules; "
        "from d2seg.data import DatasetMapper, register_coco_instances, resolve_dataset; "
        "assert 'torch' in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
