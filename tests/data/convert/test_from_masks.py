"""Mask-image source: Carvana-like ``<id>.jpg`` + ``<id>_mask.gif`` generated in a tmp folder."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util

from d2seg.data.convert.from_masks import MaskImageSource
from d2seg.data.convert.label_images import mask_polygons
from d2seg.data.convert.pipeline import convert_dataset
from d2seg.data.convert.record import ConversionReport
from d2seg.data.convert.source import SourceOptions
from d2seg.data.datasets import load_coco_json
from d2seg.errors import AnnotationError, DatasetError

HEIGHT, WIDTH = 64, 96


def _two_blobs() -> np.ndarray:
    """Bool H×W: a disc and a rectangle that do not touch."""
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    mask = (yy - 30) ** 2 + (xx - 25) ** 2 <= 15**2
    mask[10:50, 60:85] = True
    return mask


def _save_image(path: Path, height: int = HEIGHT, width: int = WIDTH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)


def _save_palette_gif(path: Path, mask: np.ndarray) -> None:
    """Carvana's mask format: palette GIF, index 0 = background (black), 1 = car (white)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette([0, 0, 0, 255, 255, 255])
    image.save(path)


@pytest.fixture
def carvana(tmp_path: Path) -> Path:
    """Carvana's own layout: images in train/, masks in train_masks/."""
    root = tmp_path / "carvana"
    _save_image(root / "train" / "car_01.jpg")
    _save_palette_gif(root / "train_masks" / "car_01_mask.gif", _two_blobs())
    return root


def _decode_polygons(polygons: list[list[float]], height: int = HEIGHT, width: int = WIDTH
                     ) -> np.ndarray:
    rles = mask_util.frPyObjects(polygons, height, width)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def test_palette_gif_components_are_instances_with_faithful_polygons(carvana):
    source = MaskImageSource(carvana, SourceOptions(mask_label="car"))
    report = ConversionReport()
    assert source.items(report) == ["train/car_01.jpg"]
    assert source.labels("train/car_01.jpg") == ["car"]
    record = source.load("train/car_01.jpg", report)

    assert report.entries == []
    assert (record.height, record.width) == (HEIGHT, WIDTH)
    assert record.image is None and record.image_path == carvana / "train" / "car_01.jpg"
    assert len(record.instances) == 2
    union = np.zeros((HEIGHT, WIDTH), bool)
    for instance in record.instances:
        assert instance.label == "car"
        (polygon,) = instance.polygons
        np.testing.assert_array_equal(_decode_polygons([polygon]), instance.mask)
        union |= instance.mask
    np.testing.assert_array_equal(union, _two_blobs())


def test_single_mode_gives_one_instance_per_mask(carvana):
    source = MaskImageSource(carvana, SourceOptions(mask_instances="single"))
    record = source.load("train/car_01.jpg", ConversionReport())
    (instance,) = record.instances
    assert instance.label == "object"
    np.testing.assert_array_equal(instance.mask, _two_blobs())
    assert len(instance.polygons) == 2
    np.testing.assert_array_equal(_decode_polygons(instance.polygons), instance.mask)


@pytest.mark.parametrize("kind", ["gray_0_255", "palette_png"])
def test_png_masks(tmp_path, kind):
    mask = _two_blobs()
    _save_image(tmp_path / "a.png")
    if kind == "gray_0_255":
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "a_mask.png")
    else:
        image = Image.fromarray(mask.astype(np.uint8) * 3, mode="P")
        image.putpalette([0, 0, 0] * 3 + [128, 0, 0])  # VOC-like: index 3 is dark red
        image.save(tmp_path / "a_mask.png")
    source = MaskImageSource(tmp_path)
    assert source.items(ConversionReport()) == ["a.png"]  # a_mask.png is not an image item
    record = source.load("a.png", ConversionReport())
    np.testing.assert_array_equal(np.any([i.mask for i in record.instances], axis=0), mask)


def test_polygons_fill_back_to_exactly_the_mask_and_holes_give_rle():
    mask = _two_blobs()
    assert np.array_equal(_decode_polygons(mask_polygons(mask)), mask)
    mask[30, 25] = False  # a one-pixel hole in the disc
    assert mask_polygons(mask) is None


def test_converted_masks_load_without_bbox_fixes(carvana, tmp_path, caplog):
    """The COCO json written from masks agrees with itself: d2seg's loader, which recomputes
    (and warns about) bboxes that disagree with their polygons, keeps every bbox."""
    convert_dataset(carvana, tmp_path / "coco", fmt="masks", splits={}, seed=0)
    json_file = tmp_path / "coco" / "annotations" / "all.json"
    coco = json.loads(json_file.read_text())
    with caplog.at_level(logging.WARNING, logger="d2seg.data.coco"):
        dicts = load_coco_json(json_file, tmp_path / "coco" / "images")
    assert "disagree" not in caplog.text
    assert sorted(a["bbox"] for d in dicts for a in d["annotations"]) == sorted(
        a["bbox"] for a in coco["annotations"])


def test_small_components_are_dropped_and_holes_become_rle(tmp_path):
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[10:40, 10:40] = True
    mask[20:30, 20:30] = False  # a hole
    mask[50:52, 80:82] = True  # a 4-pixel speck
    _save_image(tmp_path / "a.jpg")
    _save_palette_gif(tmp_path / "a_mask.gif", mask)
    report = ConversionReport()
    record = MaskImageSource(tmp_path, SourceOptions(mask_min_area=5)).load("a.jpg", report)
    (instance,) = record.instances
    assert instance.polygons is None
    assert instance.mask.sum() == 30 * 30 - 10 * 10
    (entry,) = report.entries
    assert entry.action == "skipped" and "4 px at x=80, y=50" in entry.reason


def _messy_folder(root: Path) -> None:
    _save_image(root / "good.jpg")
    _save_palette_gif(root / "good_mask.gif", _two_blobs())
    _save_image(root / "lonely.jpg")
    _save_palette_gif(root / "orphan_mask.gif", _two_blobs())
    _save_image(root / "small.jpg", height=32)
    _save_palette_gif(root / "small_mask.gif", _two_blobs())


def test_unpaired_and_mismatched_files_are_reported_and_skipped(tmp_path):
    _messy_folder(tmp_path)
    source = MaskImageSource(tmp_path)
    report = ConversionReport()
    assert source.items(report) == ["good.jpg", "small.jpg"]
    assert sorted((e.file, e.action) for e in report.entries) == [
        ("lonely.jpg", "missing"),
        ("orphan_mask.gif", "missing"),
    ]
    assert source.load("small.jpg", report) is None
    assert report.entries[-1].file == "small.jpg"
    assert "small_mask.gif is 96×64, the image 96×32" in report.entries[-1].reason


def test_end_to_end_and_strict(tmp_path):
    root = tmp_path / "in"
    _messy_folder(root)
    options = SourceOptions(mask_label="car")
    summary = convert_dataset(root, tmp_path / "out", fmt="masks", options=options)
    assert summary["categories"] == ["car"]
    assert summary["splits"]["all"]["images"] == 1
    assert summary["skipped_files"] == 1
    coco = json.loads((tmp_path / "out" / "annotations" / "all.json").read_text())
    disc_area = float(_two_blobs()[:, :50].sum())
    assert sorted(a["area"] for a in coco["annotations"]) == sorted([disc_area, 40.0 * 25.0])
    assert {a["category_id"] for a in coco["annotations"]} == {1}

    with pytest.raises(AnnotationError) as excinfo:
        convert_dataset(root, tmp_path / "strict", fmt="masks", strict=True)
    message = str(excinfo.value)
    for name in ("lonely.jpg", "orphan_mask.gif", "small.jpg"):
        assert name in message
    assert not (tmp_path / "strict").exists()


def test_folder_without_pairs_is_a_dataset_error(tmp_path):
    _save_image(tmp_path / "a.jpg")
    with pytest.raises(DatasetError, match=r"no image has a mask named <id>_mask\.gif.*fix:"):
        MaskImageSource(tmp_path).items(ConversionReport())


def _person_folders(root: Path, mask_values: np.ndarray, suffix: str = "") -> None:
    """The person-segmentation layout: images/<stem>.jpg + masks/<stem><suffix>.png."""
    for stem in ("p1", "p2"):
        _save_image(root / "images" / f"{stem}.jpg")
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask_values).save(root / "masks" / f"{stem}{suffix}.png")


@pytest.mark.parametrize("scale", [1, 255], ids=["0_1", "0_255"])
def test_images_and_masks_folders_paired_by_stem(tmp_path, scale):
    _person_folders(tmp_path, _two_blobs().astype(np.uint8) * scale, suffix="_mask")
    options = SourceOptions(labels_dir=str(tmp_path / "masks"), label_suffix="_mask",
                            mask_label="person")
    summary = convert_dataset(tmp_path / "images", tmp_path / "out", fmt="masks", options=options)
    assert summary["categories"] == ["person"]
    assert summary["splits"]["all"]["annotations"] == 4
    semantic = np.asarray(Image.open(tmp_path / "out/sem_seg/all/p1.png"))
    np.testing.assert_array_equal(semantic, _two_blobs().astype(np.uint8))


def test_multi_class_masks_value_is_the_class(tmp_path):
    values = np.zeros((HEIGHT, WIDTH), np.uint8)
    values[5:20, 5:30] = 1
    values[30:60, 50:90] = 2
    _person_folders(tmp_path, values)
    options = SourceOptions(labels_dir=str(tmp_path / "masks"), class_names=("scratch", "dent"))
    summary = convert_dataset(tmp_path / "images", tmp_path / "out", fmt="masks", options=options)
    assert summary["categories"] == ["scratch", "dent"]
    coco = json.loads((tmp_path / "out/annotations/all.json").read_text())
    first = sorted((a["category_id"], a["bbox"], a["area"]) for a in coco["annotations"]
                   if a["image_id"] == 1)
    assert first == [(1, [5.0, 5.0, 25.0, 15.0], 375.0), (2, [50.0, 30.0, 40.0, 30.0], 1200.0)]
    semantic = np.asarray(Image.open(tmp_path / "out/sem_seg/all/p1.png"))
    np.testing.assert_array_equal(semantic, values)


def test_colour_palette_masks(tmp_path):
    values = np.zeros((HEIGHT, WIDTH), np.uint8)
    values[10:40, 10:40] = 1
    colours = np.array([[0, 0, 0], [192, 128, 128]], np.uint8)  # VOC background, person
    _person_folders(tmp_path, colours[values])
    palette = tmp_path / "palette.json"
    palette.write_text(json.dumps({"_background_": [0, 0, 0], "person": [192, 128, 128]}))
    options = SourceOptions(labels_dir=str(tmp_path / "masks"), palette=str(palette))
    summary = convert_dataset(tmp_path / "images", tmp_path / "out", fmt="masks", options=options)
    assert summary["categories"] == ["person"]
    semantic = np.asarray(Image.open(tmp_path / "out/sem_seg/all/p2.png"))
    np.testing.assert_array_equal(semantic, values)
    bad = colours[values].copy()
    bad[0, 1] = (1, 2, 3)
    Image.fromarray(bad).save(tmp_path / "masks" / "p2.png")
    with pytest.raises(AnnotationError, match=r"p2\.png: colour \(1, 2, 3\) at x=1, y=0 is not in"):
        convert_dataset(tmp_path / "images", tmp_path / "bad", fmt="masks", options=options)
    assert not (tmp_path / "bad").exists()
