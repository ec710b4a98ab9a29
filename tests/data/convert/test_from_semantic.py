"""Label-map folders (``--format semantic``): class-index and colour PNGs, CamVid-like."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from d2seg.config import get_cfg
from d2seg.data.catalog import DatasetCatalog, MetadataCatalog
from d2seg.data.convert.pipeline import convert_dataset
from d2seg.data.convert.source import SourceOptions
from d2seg.data.datasets import resolve_dataset
from d2seg.data.io import read_panoptic_ids, read_sem_seg
from d2seg.data.mapper import DatasetMapper
from d2seg.errors import AnnotationError, ConfigError, DatasetError
from d2seg.evaluation.coco_evaluation import load_coco_gt

REPO = Path(__file__).resolve().parents[3]

HEIGHT, WIDTH = 48, 64
NAMES = ("sky", "road", "car", "void")  # CamVid-like: the last value is void
PALETTE = {"sky": (128, 128, 128), "road": (128, 64, 128), "car": (64, 0, 128), "void": (0, 0, 0)}


def label_map() -> np.ndarray:
    """uint8 H×W: sky on top, road below, two cars (separate components), a void strip."""
    values = np.zeros((HEIGHT, WIDTH), np.uint8)
    values[24:] = 1
    values[30:40, 5:20] = 2
    values[30:40, 40:60] = 2
    values[:, :3] = 3
    return values


def _camvid(root: Path, colour: bool, suffix: str = "_L", size=(HEIGHT, WIDTH)) -> None:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for stem in ("0001", "0002"):
        pixels = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{stem}.png")
        values = label_map()
        if colour:
            colours = np.array([PALETTE[n] for n in NAMES], np.uint8)
            Image.fromarray(colours[values]).save(root / "labels" / f"{stem}{suffix}.png")
        else:
            Image.fromarray(values).save(root / "labels" / f"{stem}{suffix}.png")


def _expected_semantic() -> np.ndarray:
    """Class value v → category v + 1; void (ignore) → 255."""
    values = label_map()
    expected = values + 1
    expected[values == 3] = 255
    return expected


@pytest.mark.parametrize("colour", [False, True], ids=["class_index", "colour_palette"])
def test_label_maps_give_exact_semantic_pngs(tmp_path, colour):
    _camvid(tmp_path, colour)
    palette = tmp_path / "class_dict.csv"
    palette.write_text("name,r,g,b\n" + "".join(
        f"{n},{r},{g},{b}\n" for n, (r, g, b) in PALETTE.items()
    ))
    options = SourceOptions(
        labels_dir=str(tmp_path / "labels"), label_suffix="_L", ignore_value=3,
        class_names=None if colour else NAMES, palette=str(palette) if colour else None,
    )
    summary = convert_dataset(tmp_path / "images", tmp_path / "out", fmt="semantic",
                              options=options)
    assert summary["categories"] == ["sky", "road", "car"]
    assert summary["splits"]["all"] == {"images": 2, "annotations": 0, "images_without_objects": 2}
    for stem in ("0001", "0002"):
        semantic = read_sem_seg(tmp_path / "out" / "sem_seg" / "all" / f"{stem}.png")
        np.testing.assert_array_equal(semantic, _expected_semantic())
    # images are hard links to the originals (same file system)
    assert (tmp_path / "out/images/0001.png").stat().st_ino == (tmp_path / "images/0001.png").stat().st_ino


def test_thing_classes_become_instances_and_panoptic_segments(tmp_path):
    _camvid(tmp_path, colour=False)
    options = SourceOptions(labels_dir=str(tmp_path / "labels"), label_suffix="_L",
                            class_names=NAMES, ignore_value=3, thing_classes=("car",))
    convert_dataset(tmp_path / "images", tmp_path / "out", fmt="semantic", options=options)
    coco = json.loads((tmp_path / "out/annotations/all.json").read_text())
    first = [a for a in coco["annotations"] if a["image_id"] == 1]
    assert sorted(a["bbox"] for a in first) == [[5.0, 30.0, 15.0, 10.0], [40.0, 30.0, 20.0, 10.0]]
    assert {a["category_id"] for a in first} == {3} and sorted(a["area"] for a in first) == [150, 200]
    assert [c.get("isthing", 1) for c in coco["categories"]] == [0, 0, 1]
    panoptic = json.loads((tmp_path / "out/panoptic/all.json").read_text())
    assert [c["isthing"] for c in panoptic["categories"]] == [0, 0, 1]
    segments = panoptic["annotations"][0]["segments_info"]
    # sky and road one stuff segment each, the two cars one segment each
    assert [s["category_id"] for s in segments] == [1, 2, 3, 3]
    ids = read_panoptic_ids(tmp_path / "out/panoptic/all/0001.png")
    category_of = np.zeros(ids.max() + 1, np.uint8)
    for segment in segments:
        category_of[segment["id"]] = segment["category_id"]
        assert segment["area"] == int((ids == segment["id"]).sum())
    semantic = read_sem_seg(tmp_path / "out/sem_seg/all/0001.png")
    np.testing.assert_array_equal(semantic, _expected_semantic())
    # the panoptic PNG paints every class the semantic map has; the ignore strip is void
    np.testing.assert_array_equal(np.where(semantic == 255, 0, semantic), category_of[ids])


def test_a_split_with_stuff_is_instances_semantic_and_a_panoptic_dataset(tmp_path):
    _camvid(tmp_path, colour=False)
    options = SourceOptions(labels_dir=str(tmp_path / "labels"), label_suffix="_L",
                            class_names=NAMES, ignore_value=3, thing_classes=("car",))
    convert_dataset(tmp_path / "images", tmp_path / "out", fmt="semantic", options=options)
    split = resolve_dataset(str(tmp_path / "out/annotations/all.json"))
    dicts = DatasetCatalog.get(split)
    meta = MetadataCatalog.get(split)
    assert meta.thing_classes == ["car"]  # the stuff categories are no instance classes
    assert meta.stuff_classes == ["background", "sky", "road", "car"]  # the PNG's values
    assert {a["category_id"] for d in dicts for a in d["annotations"]} == {0}
    assert all("pan_seg_file_name" not in d and "sem_seg_file_name" in d for d in dicts)

    panoptic = resolve_dataset(str(tmp_path / "out/panoptic/all.json"))
    pan_dicts = DatasetCatalog.get(panoptic)
    pan_meta = MetadataCatalog.get(panoptic)
    assert (pan_meta.thing_classes, pan_meta.stuff_classes) == (["car"], ["sky", "road"])
    segments = pan_dicts[0]["segments_info"]
    assert [(s["category_id"], s["isthing"]) for s in segments] == [
        (0, False), (1, False), (0, True), (0, True)]
    assert pan_dicts[0]["sem_seg_file_name"].endswith("sem_seg/all/0001.png")
    # COCO evaluation of its instances: the thing categories only
    assert load_coco_gt(pan_meta.json_file).getCatIds() == [3]

    cfg = get_cfg()
    cfg.merge_from_file(str(REPO / "configs/tiny/panoptic_unet_R_18_tiny.yaml"))
    mapper = DatasetMapper(cfg, is_train=True)
    assert mapper(pan_dicts[0])["instances"]["classes"].tolist() == [0, 0]
    with pytest.raises(DatasetError, match="OUT/panoptic/<split>.json"):
        mapper(dicts[0])


def test_size_mismatch_is_skipped_or_resized(tmp_path):
    _camvid(tmp_path, colour=False, size=(HEIGHT * 2, WIDTH * 2))
    options = SourceOptions(labels_dir=str(tmp_path / "labels"), label_suffix="_L",
                            class_names=NAMES, ignore_value=3)
    with pytest.raises(AnnotationError, match=r"0001\.png.*_L\.png is 64×48, the image 128×96"):
        convert_dataset(tmp_path / "images", tmp_path / "strict", fmt="semantic",
                        options=options, strict=True)
    assert not (tmp_path / "strict").exists()
    resized = SourceOptions(**{**options.__dict__, "resize_masks": True})
    summary = convert_dataset(tmp_path / "images", tmp_path / "out", fmt="semantic",
                              options=resized)
    assert summary["report"] == {"fixed": 2}
    semantic = read_sem_seg(tmp_path / "out/sem_seg/all/0001.png")
    np.testing.assert_array_equal(semantic, _expected_semantic().repeat(2, 0).repeat(2, 1))


def test_unnamed_values_and_bad_options_are_one_clear_error(tmp_path):
    _camvid(tmp_path, colour=False)
    labels = str(tmp_path / "labels")
    with pytest.raises(AnnotationError, match=r"0001_L\.png: label value\(s\) \[3\] have no class"):
        convert_dataset(tmp_path / "images", tmp_path / "a", fmt="semantic", options=SourceOptions(
            labels_dir=labels, label_suffix="_L", class_names=NAMES[:3]))
    with pytest.raises(ConfigError, match="--thing-classes bus: not a class"):
        convert_dataset(tmp_path / "images", tmp_path / "b", fmt="semantic", options=SourceOptions(
            labels_dir=labels, label_suffix="_L", class_names=NAMES, thing_classes=("bus",)))
    with pytest.raises(AnnotationError, match="colour-coded label image; fix: pass --palette"):
        (tmp_path / "labels" / "0001_L.png").unlink()
        Image.new("RGB", (WIDTH, HEIGHT), (9, 8, 7)).save(tmp_path / "labels" / "0001_L.png")
        convert_dataset(tmp_path / "images", tmp_path / "c", fmt="semantic", options=SourceOptions(
            labels_dir=labels, label_suffix="_L", class_names=NAMES))
    assert not any((tmp_path / name).exists() for name in "abc")
