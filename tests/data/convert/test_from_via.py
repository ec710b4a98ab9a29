"""VIA source: Matterport's balloon set (VIA 1.x, 53 of 61 images absent) and VIA 2.x projects."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from d2seg.data.catalog import DatasetCatalog, MetadataCatalog
from d2seg.data.datasets import resolve_dataset
from d2seg.data.convert.from_via import ViaSource
from d2seg.data.convert.pipeline import convert_dataset
from d2seg.data.convert.record import ConversionReport
from d2seg.data.convert.source import SourceOptions
from d2seg.errors import AnnotationError, DatasetError

BALLOON_PRESENT = 8
BALLOON_MISSING = 53


@pytest.fixture(scope="module")
def balloon_dir(shared_data: Path) -> Path:
    return shared_data / "balloon" / "train"


@pytest.fixture(scope="module")
def balloon_json(balloon_dir: Path) -> dict:
    return json.loads((balloon_dir / "via_region_data.json").read_text())


def test_balloon_lists_present_images_and_reports_missing_ones(balloon_dir, balloon_json):
    report = ConversionReport()
    items = ViaSource(balloon_dir).items(report)

    assert len(balloon_json) == BALLOON_PRESENT + BALLOON_MISSING
    present = sorted(p.name for p in balloon_dir.glob("*.jpg"))
    assert items == present
    missing = [e for e in report.entries if e.action == "missing"]
    assert len(missing) == BALLOON_MISSING == len(report.entries)
    absent = {v["filename"] for v in balloon_json.values()} - set(present)
    assert {e.reason.split("'")[1] for e in missing} == absent
    assert all(e.file == "via_region_data.json" for e in missing)


def test_balloon_regions_become_balloon_instances_like_labelme_polygons(balloon_dir, balloon_json):
    labelme_utils = pytest.importorskip("labelme.utils")
    source = ViaSource(balloon_dir)
    report = ConversionReport()
    entries = {v["filename"]: v for v in balloon_json.values()}
    for item in source.items(ConversionReport()):
        record = source.load(item, report)
        with Image.open(balloon_dir / item) as image:
            assert (record.width, record.height) == image.size
        assert record.file_name == item
        assert record.image_path.resolve() == (balloon_dir / item).resolve()
        regions = list(entries[item]["regions"].values())
        assert len(record.instances) == len(regions)
        assert source.labels(item) == ["balloon"] * len(regions)
        for instance, region in zip(record.instances, regions):
            xs = region["shape_attributes"]["all_points_x"]
            ys = region["shape_attributes"]["all_points_y"]
            assert instance.label == "balloon"
            # VIA 1.x closes polygons explicitly; the repeated point is dropped.
            assert (xs[0], ys[0]) == (xs[-1], ys[-1])
            (polygon,) = instance.polygons
            assert len(polygon) == 2 * (len(xs) - 1)
            oracle = labelme_utils.shape_to_mask(
                (record.height, record.width), list(zip(xs, ys)), "polygon"
            )
            np.testing.assert_array_equal(instance.mask, oracle)
    # Closed polygons are VIA 1.x's normal spelling, not a problem to report.
    assert report.entries == []


def test_balloon_end_to_end(balloon_dir, tmp_path):
    out = tmp_path / "out"
    summary = convert_dataset(balloon_dir, out, fmt="via", workers=2)

    assert summary["categories"] == ["balloon"]
    assert summary["splits"]["all"]["images"] == BALLOON_PRESENT
    assert summary["report"]["missing"] == BALLOON_MISSING
    coco = json.loads((out / "annotations" / "all.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["balloon"]
    assert len(coco["annotations"]) == 12
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(
        p.name for p in balloon_dir.glob("*.jpg")
    )
    # The output is a training dataset as it stands: its json path is a dataset name.
    name = resolve_dataset(str(out / "annotations" / "all.json"))
    dicts = DatasetCatalog.get(name)
    assert all(Path(d["file_name"]).is_file() for d in dicts)
    assert sum(len(d["annotations"]) for d in dicts) == 12
    assert MetadataCatalog.get(name).thing_classes == ["balloon"]
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_balloon_strict_names_the_missing_images(balloon_dir, tmp_path):
    with pytest.raises(AnnotationError) as excinfo:
        convert_dataset(balloon_dir, tmp_path / "out", fmt="via", strict=True)
    message = str(excinfo.value)
    assert "missing: image '" in message and "not found" in message
    assert "via_region_data.json" in message
    assert not (tmp_path / "out").exists()


def _write_image(path: Path, width: int = 64, height: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 120, np.uint8)).save(path)


def _region(shape: dict, **attributes) -> dict:
    return {"shape_attributes": shape, "region_attributes": attributes}


def _points(name: str, xs: list, ys: list) -> dict:
    return {"name": name, "all_points_x": xs, "all_points_y": ys}


def test_clean_via1_export_passes_strict_with_an_empty_report(tmp_path):
    src = tmp_path / "via1"
    export = {}
    polygons = {"a.jpg": ([4, 40, 30, 10], [4, 6, 30, 28]), "b.jpg": ([10, 50, 10], [5, 5, 40])}
    for name, (xs, ys) in polygons.items():
        _write_image(src / name)
        closed = _points("polygon", xs + xs[:1], ys + ys[:1])  # VIA 1.x repeats the first point
        export[f"{name}1234"] = {
            "fileref": "",
            "size": 1234,
            "filename": name,
            "base64_img_data": "",
            "file_attributes": {},
            "regions": {"0": _region(closed)},
        }
    (src / "via_region_data.json").write_text(json.dumps(export))
    out = tmp_path / "out"

    summary = convert_dataset(src, out, fmt="via", strict=True)

    assert summary["report"] == {} and summary["splits"]["all"]["images"] == 2
    assert json.loads((out / "report.json").read_text())["entries"] == []
    coco = json.loads((out / "annotations" / "all.json").read_text())
    assert [len(a["segmentation"][0]) for a in coco["annotations"]] == [2 * 4, 2 * 3]


@pytest.fixture
def via2_project(tmp_path: Path) -> Path:
    """A VIA 2.x project file: ``_via_img_metadata``, list regions, every shape type."""
    root = tmp_path / "via2"
    _write_image(root / "imgs" / "a.png")
    _write_image(root / "imgs" / "b.png")
    metadata = {
        "a.png100": {
            "filename": "imgs/a.png",
            "size": 100,
            "file_attributes": {},
            "regions": [
                _region(_points("polygon", [5, 30, 30, 5], [5, 5, 20, 20]), label="cat"),
                _region({"name": "rect", "x": 40, "y": 2, "width": 30, "height": 10}, name="box"),
                _region({"name": "circle", "cx": 10, "cy": 35, "r": 6}, label="cat"),
                _region({"name": "ellipse", "cx": 45, "cy": 35, "rx": 8, "ry": 4, "theta": 0.5}),
                _region(_points("polyline", [0, 20], [46, 46]), label="wire"),
                _region({"name": "point", "cx": 60, "cy": 40}, label="dot"),
                _region({"name": "freehand"}, label="cat"),
            ],
        },
        "b.png100": {"filename": "imgs/b.png", "size": 100, "file_attributes": {}, "regions": []},
        "c.png100": {"filename": "imgs/c.png", "size": 100, "file_attributes": {}, "regions": []},
    }
    project = {"_via_settings": {}, "_via_img_metadata": metadata, "_via_attributes": {}}
    (root / "project.json").write_text(json.dumps(project))
    (root / "notes.json").write_text(json.dumps({"comment": "not VIA"}))
    return root


def test_via2_project_with_list_regions_and_every_shape(via2_project):
    report = ConversionReport()
    source = ViaSource(via2_project, SourceOptions(mask_label="thing"))
    assert source.items(report) == ["imgs/a.png", "imgs/b.png"]
    assert {(e.file, e.action) for e in report.entries} == {
        ("project.json", "missing"),
        ("notes.json", "skipped"),
    }
    record = source.load("imgs/a.png", report)
    labels = [i.label for i in record.instances]
    # the ellipse has no label attribute: the implicit class comes from --mask-label
    assert labels == ["cat", "box", "cat", "thing", "wire", "dot"]
    assert source.labels("imgs/a.png") == labels + ["cat"]
    polygon, rect, circle, ellipse, line, point = record.instances
    assert polygon.polygons == [[5.0, 5.0, 30.0, 5.0, 30.0, 20.0, 5.0, 20.0]]
    rect_xs = rect.polygons[0][0::2]
    assert min(rect_xs) == 40.0 and 62.0 <= max(rect_xs) <= record.width  # 70 clipped
    assert circle.polygons is None and line.polygons is None and point.polygons is None
    assert len(ellipse.polygons[0]) == 2 * 64
    assert ellipse.mask[35, 45] and not ellipse.mask[35, 36]
    assert circle.mask[35, 10] and circle.mask.sum() == pytest.approx(np.pi * 36, rel=0.25)
    unsupported = [e for e in report.entries if e.shape == 6]
    assert [e.action for e in unsupported] == ["skipped"] and "freehand" in unsupported[0].reason
    assert any(e.action == "clipped" and e.shape == 1 for e in report.entries)
    assert source.load("imgs/b.png", report).instances == []


def test_via2_plain_export_and_pickled_source(tmp_path):
    _write_image(tmp_path / "x.jpg")
    export = {
        "x.jpg1": {
            "filename": "x.jpg",
            "size": 1,
            "regions": [_region(_points("polygon", [1, 20, 10], [1, 1, 15]))],
        }
    }
    (tmp_path / "via_export_json.json").write_text(json.dumps(export))
    source = ViaSource(tmp_path)
    assert source.items(ConversionReport()) == ["x.jpg"]
    worker_copy = pickle.loads(pickle.dumps(source))
    record = worker_copy.load("x.jpg", ConversionReport())
    assert [i.label for i in record.instances] == ["balloon"]
    assert record.instances[0].polygons == [[1.0, 1.0, 20.0, 1.0, 10.0, 15.0]]
    # --mask-label names the implicit class, even when it is the masks source's default name
    assert ViaSource(tmp_path, SourceOptions(mask_label="object")).labels("x.jpg") == ["object"]


def test_broken_region_names_file_image_and_region(tmp_path):
    _write_image(tmp_path / "x.jpg")
    bad = {"x.jpg1": {"filename": "x.jpg", "regions": {"0": _region({"name": "rect", "x": 1})}}}
    (tmp_path / "via.json").write_text(json.dumps(bad))
    source = ViaSource(tmp_path)
    source.items(ConversionReport())
    expected = r"via\.json: 'x\.jpg' regions\[0\].*x/y/width/height.*fix:"
    with pytest.raises(AnnotationError, match=expected):
        source.load("x.jpg", ConversionReport())


def test_folder_without_via_files_is_a_dataset_error(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"shapes": []}))
    with pytest.raises(DatasetError, match="no VIA annotation file found.*fix:"):
        ViaSource(tmp_path).items(ConversionReport())
