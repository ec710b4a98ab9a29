"""Kaggle run-length CSVs (``--format kaggle-rle``): Airbus, Severstal (both headers), Carvana."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as mask_util

from d2seg.data.convert.from_kaggle_rle import kaggle_rle_to_coco
from d2seg.data.convert.pipeline import convert_dataset
from d2seg.data.convert.source import SourceOptions
from d2seg.errors import AnnotationError

HEIGHT, WIDTH = 24, 40


def kaggle_rle(mask: np.ndarray, order: str) -> str:
    """The competitions' own encoder (1-indexed 'start length' pairs)."""
    flat = (mask.T if order == "column" else mask).reshape(-1)
    padded = np.concatenate([[0], flat.astype(np.int8), [0]])
    runs = np.flatnonzero(padded[1:] != padded[:-1]) + 1
    runs[1::2] -= runs[::2]
    return " ".join(map(str, runs))


@pytest.mark.parametrize("order", ["column", "row"])
def test_rle_decodes_to_the_mask_it_was_encoded_from(order):
    rng = np.random.default_rng(1)
    for _ in range(50):
        height, width = rng.integers(1, 30, 2)
        mask = rng.random((height, width)) < rng.random()
        rle = kaggle_rle_to_coco(kaggle_rle(mask, order), height, width, order)
        np.testing.assert_array_equal(mask_util.decode(rle).astype(bool), mask)
        # the very string pycocotools writes for the mask: touching runs merged
        assert rle["counts"] == mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]


def test_orders_differ_and_touching_runs_merge():
    def decode(text, order):
        return mask_util.decode(kaggle_rle_to_coco(text, 3, 2, order)).tolist()

    # runs 1-2, 3 and 4-5 touch: one run of 5 pixels
    assert decode("1 2 3 1 4 2", "column") == [[1, 1], [1, 1], [1, 0]]
    assert decode("1 2 3 1 4 2", "row") == [[1, 1], [1, 1], [1, 0]]
    assert kaggle_rle_to_coco("1 2 3 1 4 2", 3, 2, "column")["counts"] == \
        kaggle_rle_to_coco("1 5", 3, 2, "column")["counts"]
    assert decode("2 1", "column") == [[0, 0], [1, 0], [0, 0]]
    assert decode("2 1", "row") == [[0, 1], [0, 0], [0, 0]]


@pytest.mark.parametrize("text, message", [
    ("1 2 3", "3 numbers"),
    ("1 x", "'x' is not a whole number"),
    ("0 2", "starts count from 1"),
    ("5 0", "lengths from 1"),
    ("1 7", "past the 2×3 image"),
    ("4 2 1 1", "begins before run 1 ends"),
    ("1 3 2 2", "begins before run 1 ends"),
])
def test_broken_runs_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        kaggle_rle_to_coco(text, 3, 2, "column")


def _ships() -> list[np.ndarray]:
    """Two touching boxes (separate instances) and one apart."""
    masks = [np.zeros((HEIGHT, WIDTH), bool) for _ in range(3)]
    masks[0][2:8, 2:10] = True
    masks[1][8:14, 2:10] = True  # touches the first one
    masks[2][15:20, 25:38] = True
    return masks


def _write(root: Path, header: list[str], rows: list[list[str]], images: list[str]) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name in images:
        Image.new("RGB", (WIDTH, HEIGHT), (10, 20, 30)).save(root / "images" / name)
    with open(root / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return root / "train.csv"


def _masks_of(out: Path, image: str) -> list[np.ndarray]:
    coco = json.loads((out / "annotations" / "all.json").read_text())
    (image_id,) = [i["id"] for i in coco["images"] if i["file_name"] == image]
    return [mask_util.decode(a["segmentation"]).astype(bool)
            for a in coco["annotations"] if a["image_id"] == image_id]


def test_airbus_rows_are_instances_and_empty_rows_no_objects(tmp_path):
    ships = _ships()
    rows = [["a.jpg", kaggle_rle(m, "column")] for m in ships] + [["b.jpg", ""]]
    csv_path = _write(tmp_path, ["ImageId", "EncodedPixels"], rows, ["a.jpg", "b.jpg"])
    summary = convert_dataset(tmp_path / "images", tmp_path / "out", fmt="kaggle-rle",
                              options=SourceOptions(csv=str(csv_path)))
    assert summary["categories"] == ["ship"]
    assert (summary["rle_order"], summary["rle_order_from"]) == ("column", "the Airbus header")
    assert summary["splits"]["all"] == {"images": 2, "annotations": 3, "images_without_objects": 1}
    for got, expected in zip(_masks_of(tmp_path / "out", "a.jpg"), ships):
        np.testing.assert_array_equal(got, expected)
    semantic = np.asarray(Image.open(tmp_path / "out/sem_seg/all/a.png"))
    np.testing.assert_array_equal(semantic, np.any(ships, axis=0).astype(np.uint8))


def test_severstal_both_headers_and_carvana_row_order(tmp_path):
    ships = _ships()
    new = [["a.jpg", "3", kaggle_rle(ships[0], "column")], ["a.jpg", "1", kaggle_rle(ships[2], "column")]]
    csv_path = _write(tmp_path / "new", ["ImageId", "ClassId", "EncodedPixels"], new, ["a.jpg"])
    names = ("pits", "inclusion", "scratches", "patches")
    summary = convert_dataset(tmp_path / "new/images", tmp_path / "new_out", fmt="kaggle-rle",
                              options=SourceOptions(csv=str(csv_path), class_names=names))
    assert summary["categories"] == list(names) and summary["rle_order"] == "column"
    coco = json.loads((tmp_path / "new_out/annotations/all.json").read_text())
    assert [a["category_id"] for a in coco["annotations"]] == [3, 1]
    old = [["a.jpg_1", ""], ["a.jpg_2", kaggle_rle(ships[1], "column")], ["a.jpg_3", ""], ["a.jpg_4", ""]]
    csv_path = _write(tmp_path / "old", ["ImageId_ClassId", "EncodedPixels"], old, ["a.jpg"])
    summary = convert_dataset(tmp_path / "old/images", tmp_path / "old_out", fmt="kaggle-rle",
                              options=SourceOptions(csv=str(csv_path)))
    assert summary["categories"] == ["2"]
    np.testing.assert_array_equal(_masks_of(tmp_path / "old_out", "a.jpg")[0], ships[1])
    car = np.any(ships, axis=0)
    csv_path = _write(tmp_path / "car", ["img", "rle_mask"], [["c.jpg", kaggle_rle(car, "row")]], ["c.jpg"])
    summary = convert_dataset(tmp_path / "car/images", tmp_path / "car_out", fmt="kaggle-rle",
                              options=SourceOptions(csv=str(csv_path)))
    assert (summary["categories"], summary["rle_order"]) == (["car"], "row")
    np.testing.assert_array_equal(_masks_of(tmp_path / "car_out", "c.jpg")[0], car)


def test_broken_rows_are_reported_with_their_line_or_fail_with_strict(tmp_path):
    ships = _ships()
    rows = [["a.jpg", kaggle_rle(ships[0], "column")], ["a.jpg", "1 2 3"], ["gone.jpg", "1 1"]]
    csv_path = _write(tmp_path, ["ImageId", "EncodedPixels"], rows, ["a.jpg"])
    options = SourceOptions(csv=str(csv_path))
    summary = convert_dataset(tmp_path / "images", tmp_path / "out", fmt="kaggle-rle", options=options)
    assert summary["report"] == {"skipped": 1, "missing": 1}
    entries = json.loads((tmp_path / "out/report.json").read_text())["entries"]
    assert entries[0]["file"] == "gone.jpg" and "train.csv line 4" in entries[0]["reason"]
    assert entries[1]["file"] == "train.csv: line 3" and "3 numbers" in entries[1]["reason"]
    with pytest.raises(AnnotationError, match=r"train\.csv: line 3: skipped: a\.jpg: 3 numbers"):
        convert_dataset(tmp_path / "images", tmp_path / "strict", fmt="kaggle-rle",
                        options=options, strict=True)
    assert not (tmp_path / "strict").exists()


_TOKENS = st.sampled_from(["1", "7", "0", "-3", "x", "", " ", "1e3", "99999", "3.5", "nan", ","])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_rows_fail_only_with_an_annotation_error_naming_the_line(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("rle")
    good = [kaggle_rle(m, "column") for m in _ships()]
    rows = [["a.jpg", text] for text in good]
    line = data.draw(st.integers(0, len(rows) - 1))
    tokens = rows[line][1].split()
    position = data.draw(st.integers(0, len(tokens)))
    tokens[position:position + data.draw(st.integers(0, 2))] = data.draw(st.lists(_TOKENS, max_size=3))
    rows[line][1] = " ".join(tokens)
    csv_path = _write(root, ["ImageId", "EncodedPixels"], rows, ["a.jpg"])
    try:
        convert_dataset(root / "images", root / "out", fmt="kaggle-rle",
                        options=SourceOptions(csv=str(csv_path)), strict=True)
    except AnnotationError as e:
        assert f"train.csv: line {line + 2}" in str(e)
        assert not (root / "out").exists()
