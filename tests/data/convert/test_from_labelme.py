"""LabelmeSource: Labelme files → ImageRecords (groups, ignore regions, RLE-only shapes)."""

import json

import numpy as np
import pytest
from PIL import Image

from d2seg.data.convert.from_labelme import SOURCE, LabelmeSource
from d2seg.data.convert.record import ConversionReport
from d2seg.errors import DatasetError


def _write(folder, name, shapes, size=(48, 64)):
    """A Labelme 5.x file ``name``.json with a ``name``.png image of ``size`` (H, W)."""
    Image.new("RGB", size[::-1], (90, 120, 150)).save(folder / f"{name}.png")
    raw = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": f"{name}.png",
           "imageData": None, "imageHeight": size[0], "imageWidth": size[1]}
    (folder / f"{name}.json").write_text(json.dumps(raw), encoding="utf-8")


def _shape(label, points, shape_type="polygon", group_id=None):
    return {"label": label, "points": points, "group_id": group_id, "shape_type": shape_type,
            "flags": {}, "description": ""}


SQUARE = [[4, 4], [20, 4], [20, 20], [4, 20]]


def test_groups_lines_ignore_and_background(tmp_path):
    _write(tmp_path, "a", [
        _shape("cat", SQUARE, group_id=3),
        _shape("cat", [[30, 30], [40, 40]], "rectangle", group_id=3),
        _shape("cat", [[50, 5], [60, 10]], "rectangle"),  # no group_id: its own instance
        _shape("dog", [[5, 40], [60, 40]], "line"),
        _shape("dog", [[30, 10]], "point"),
        _shape("dog", [[30, 20], [34, 20]], "circle", group_id=1),
        _shape("dog", [[40, 20], [45, 22], [44, 28]], group_id=1),
        _shape("__ignore__", [[0, 0], [63, 47]], "rectangle"),
        _shape("cat", [[52, 30], [60, 38]], "rectangle"),  # drawn over the ignore region
        _shape("_background_", SQUARE),
    ])
    report = ConversionReport()
    record = LabelmeSource(tmp_path).load("a.json", report)
    labels = [(i.label, i.polygons is not None, i.source) for i in record.instances]
    assert labels == [
        ("cat", True, "a.json: shapes[0,1]"),
        ("cat", True, "a.json: shapes[2]"),
        ("dog", False, "a.json: shapes[3]"),
        ("dog", False, "a.json: shapes[4]"),
        ("dog", False, "a.json: shapes[5,6]"),  # a group with a circle is written as RLE
        ("cat", True, "a.json: shapes[8]"),
    ]
    grouped = record.instances[0]
    assert grouped.polygons == [
        [4.0, 4.0, 20.0, 4.0, 20.0, 20.0, 4.0, 20.0],
        [30.0, 30.0, 40.0, 30.0, 40.0, 40.0, 30.0, 40.0],
    ]
    assert grouped.mask[10, 10] and grouped.mask[35, 35] and not grouped.mask[25, 25]
    # __ignore__ is a region, not an instance, except where a later shape covers it
    assert record.ignore_mask is not None and record.ignore_mask[0, 0]
    assert not record.ignore_mask[34, 56]
    assert [(e.shape, e.action) for e in report.entries] == [(9, "skipped")]
    assert "_background_" in report.entries[0].reason


def test_points_outside_are_clipped_in_polygons_not_in_the_mask(tmp_path):
    _write(tmp_path, "c", [_shape("cat", [[-5, 10], [30, -3], [70, 50]])])
    report = ConversionReport()
    (instance,) = LabelmeSource(tmp_path).load("c.json", report).instances
    xs, ys = instance.polygons[0][0::2], instance.polygons[0][1::2]
    assert min(xs) == 0 and max(xs) == 64 and min(ys) == 0 and max(ys) == 48
    assert [(e.action, e.shape) for e in report.entries] == [("clipped", 0)]


def test_shapes_outside_the_image_are_skipped(tmp_path):
    _write(tmp_path, "o", [
        _shape("cat", [[70, 50], [90, 50], [90, 70]]),
        _shape("cat", [[5, 5], [1e6, 5], [5, 1e6]]),  # drawn on another image
    ])
    report = ConversionReport()
    assert LabelmeSource(tmp_path).load("o.json", report).instances == []
    reasons = {e.shape: (e.action, e.reason) for e in report.entries if e.action == "skipped"}
    assert "outside the image" in reasons[0][1] and "far outside" in reasons[1][1]


def test_unsupported_shape_type_is_skipped_and_reported(tmp_path):
    _write(tmp_path, "u", [_shape("cat", SQUARE, "cuboid"), _shape("cat", SQUARE)])
    report = ConversionReport()
    assert len(LabelmeSource(tmp_path).load("u.json", report).instances) == 1
    assert report.entries[0].shape == 0 and "cuboid" in report.entries[0].reason


def test_embedded_image_wins_over_image_path(shared_data):
    folder = shared_data / "labelme_examples" / "tutorial"
    source = SOURCE(folder)
    record = source.load("apc2016_obj3.json", ConversionReport())
    # imagePath names the JSON itself: the pixels must come from imageData
    assert record.image is not None and record.image.shape == (907, 1210, 3)
    assert record.image_path is None and record.file_name == "apc2016_obj3.png"
    jpg = np.asarray(Image.open(folder / "apc2016_obj3.jpg").convert("RGB"), dtype=np.int16)
    assert np.abs(record.image.astype(np.int16) - jpg).mean() < 3
    assert sorted(source.labels("apc2016_obj3.json"))[0] == "highland_6539_self_stick_notes"


def test_items_are_sorted_recursive_and_skip_hidden_folders(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".cache").mkdir()
    for folder, name in [(tmp_path, "b"), (tmp_path / "sub", "a"), (tmp_path / ".cache", "z")]:
        _write(folder, name, [])
    report = ConversionReport()
    assert LabelmeSource(tmp_path).items(report) == ["b.json", "sub/a.json"]
    record = LabelmeSource(tmp_path).load("sub/a.json", report)
    assert record.file_name == "sub/a.png" and record.instances == []


def test_folder_without_json_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="no Labelme .json files.*fix"):
        LabelmeSource(tmp_path).items(ConversionReport())
