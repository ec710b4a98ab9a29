"""convert_dataset against labelme's own converters, pycocotools, and itself (splits, workers)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from d2seg.data.convert.pipeline import convert_dataset
from d2seg.data.convert.split import parse_split_args, split_items
from d2seg.errors import AnnotationError, ConfigError, DatasetError

STEMS = ["2011_000003", "2011_000006", "2011_000025"]


@pytest.fixture(scope="module")
def example(shared_data):
    return shared_data / "labelme_examples" / "instance_segmentation"


@pytest.fixture(scope="module")
def converted(example, tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "out"
    summary = convert_dataset(
        example / "data_annotated", out, labels_file=example / "labels.txt"
    )
    return out, summary


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _by_name(coco: dict) -> list[tuple]:
    """(image base name, category name, area, bbox) per annotation, in file order."""
    images = {i["id"]: Path(i["file_name"]).name for i in coco["images"]}
    names = {c["id"]: c["name"] for c in coco["categories"]}
    return [
        (images[a["image_id"]], names[a["category_id"]], a["area"], a["bbox"])
        for a in coco["annotations"]
    ]


def test_area_and_bbox_equal_labelmes_converter(example, converted):
    out, summary = converted
    ours = _load(out / "annotations" / "all.json")
    theirs = _load(example / "data_dataset_coco" / "annotations.json")
    # labelme's image ids follow an old unsorted order: compare by file name, in order per image
    def by_image(rows):  # a stable sort: keeps the per-image order
        return sorted(rows, key=lambda r: r[0])

    assert by_image(_by_name(ours)) == by_image(_by_name(theirs))
    assert len(ours["annotations"]) == 12
    assert [c["id"] for c in ours["categories"]] == list(range(1, 21))
    assert [c["name"] for c in ours["categories"]][-5:] == [
        "potted plant", "sheep", "sofa", "train", "tv/monitor"
    ]
    assert summary["categories"][14] == "person" and summary["splits"]["all"]["annotations"] == 12
    assert summary["report"] == {"clipped": 1}  # the chair reaching y = 375.38


def test_semantic_maps_equal_labelme2voc(example, converted):
    out, _ = converted
    for stem in STEMS:
        ours = np.asarray(Image.open(out / "sem_seg" / "all" / f"{stem}.png"))
        voc = example / "data_dataset_voc" / "SegmentationClass"
        theirs = np.asarray(Image.open(voc / f"{stem}.png"))
        assert ours.dtype == np.uint8 and ours.shape == theirs.shape
        assert 255 in ours or stem == "2011_000025"
        assert (ours != theirs).sum() <= 5, stem


def test_every_json_loads_in_pycocotools_and_decodes_to_its_area(converted):
    out, _ = converted
    coco = COCO(str(out / "annotations" / "all.json"))
    for ann in coco.dataset["annotations"]:
        decoded = coco.annToMask(ann)
        segm = ann["segmentation"]
        if isinstance(segm, dict):
            assert decoded.sum() == ann["area"]
        else:
            # Labelme's mask includes the 1-px outline, pycocotools' polygon fill does not:
            # the same area up to half the perimeter.
            perimeter = sum(
                np.linalg.norm(q - np.roll(q, 1, axis=0), axis=1).sum()
                for q in (np.reshape(p, (-1, 2)) for p in segm)
            )
            assert 0 <= ann["area"] - decoded.sum() <= perimeter / 2
    for image in coco.dataset["images"]:
        assert (out / "images" / image["file_name"]).is_file()


def test_primitives_rle_decodes_to_its_area(shared_data, tmp_path):
    out = tmp_path / "out"
    summary = convert_dataset(shared_data / "labelme_examples" / "primitives", out)
    assert summary["splits"]["all"]["annotations"] == 8
    coco = COCO(str(out / "annotations" / "all.json"))
    kinds = {}
    for ann in coco.dataset["annotations"]:
        name = coco.cats[ann["category_id"]]["name"]
        kinds[name] = "rle" if isinstance(ann["segmentation"], dict) else "polygon"
        if kinds[name] == "rle":
            assert coco.annToMask(ann).sum() == ann["area"]
    assert kinds == {
        "rectangle": "polygon", "polygon": "polygon", "circle": "rle", "line": "rle",
        "point": "rle", "line_strip": "rle", "octagon": "rle",
    }


def test_panoptic_png_matches_segments_info(converted):
    out, _ = converted
    panoptic = _load(out / "panoptic" / "all.json")
    assert all(c["isthing"] == 1 for c in panoptic["categories"])
    instances = _load(out / "annotations" / "all.json")
    assert [i["id"] for i in panoptic["images"]] == [i["id"] for i in instances["images"]]
    for ann in panoptic["annotations"]:
        rgb = np.asarray(Image.open(out / "panoptic" / "all" / ann["file_name"]), dtype=np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]
        assert set(np.unique(ids)) - {0} == {s["id"] for s in ann["segments_info"]}
        for segment in ann["segments_info"]:
            visible = ids == segment["id"]
            assert visible.sum() == segment["area"]
            rle = mask_util.encode(np.asfortranarray(visible.astype(np.uint8)))
            assert mask_util.toBbox(rle).tolist() == segment["bbox"]


def _labelme_folder(folder: Path, count: int, labels=("cat", "dog")) -> Path:
    """``count`` tiny Labelme files, one object each, labels cycling through ``labels``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (32, 24), (i, 50, 90)).save(folder / f"im{i:02d}.png")
        shapes = [{"label": labels[i % len(labels)], "shape_type": "polygon", "group_id": None,
                   "points": [[2, 2], [10 + i % 10, 3], [6, 20]]}] if i % 5 else []
        raw = {"version": "5.5.0", "shapes": shapes, "imagePath": f"im{i:02d}.png",
               "imageData": None, "imageHeight": 24, "imageWidth": 32}
        (folder / f"im{i:02d}.json").write_text(json.dumps(raw), encoding="utf-8")
    return folder


def test_splits_are_seeded_and_share_category_ids(tmp_path):
    src = _labelme_folder(tmp_path / "in", 20)
    a = convert_dataset(src, tmp_path / "a", splits={"val": 0.2}, seed=3)
    b = convert_dataset(src, tmp_path / "b", splits={"val": 0.2}, seed=3)
    assert a == b and a["categories"] == ["cat", "dog"]
    assert {k: v["images"] for k, v in a["splits"].items()} == {"train": 16, "val": 4}
    assert sum(s["images_without_objects"] for s in a["splits"].values()) == 4  # every 5th
    names = {}
    for split in ("train", "val"):
        coco = _load(tmp_path / "a" / "annotations" / f"{split}.json")
        names[split] = {i["file_name"] for i in coco["images"]}
        assert [c["name"] for c in coco["categories"]] == ["cat", "dog"]
        for name in names[split]:
            assert (tmp_path / "a" / "sem_seg" / split / name).with_suffix(".png").is_file()
    assert not names["train"] & names["val"]
    assert _load(tmp_path / "b" / "annotations" / "val.json") == _load(
        tmp_path / "a" / "annotations" / "val.json"
    )
    convert_dataset(src, tmp_path / "c", splits={"val": 0.2}, seed=4)
    other_val = _load(tmp_path / "c" / "annotations" / "val.json")["images"]
    assert {i["file_name"] for i in other_val} != names["val"]


def test_split_items_sizes_and_validation():
    items = [f"f{i}" for i in range(10)]
    parts = split_items(items, {"val": 0.25, "test": 0.1}, seed=0)
    assert {k: len(v) for k, v in parts.items()} == {"test": 1, "train": 7, "val": 2}
    assert sorted(sum(parts.values(), [])) == items
    assert split_items(items, None) == {"all": items}
    assert parse_split_args(["val=0.2", "test=0.1"]) == {"val": 0.2, "test": 0.1}
    for bad in (["val"], ["val=x"], ["a/b=0.1"]):
        with pytest.raises(ConfigError, match="--split"):
            parse_split_args(bad)
    with pytest.raises(ConfigError, match="sum"):
        split_items(items, {"val": 0.7, "test": 0.5})


def test_workers_give_identical_output(tmp_path):
    src = _labelme_folder(tmp_path / "in", 12)
    convert_dataset(src, tmp_path / "one", splits={"val": 0.3}, workers=1)
    convert_dataset(src, tmp_path / "two", splits={"val": 0.3}, workers=2)
    files = {
        run: sorted(p.relative_to(tmp_path / run) for p in (tmp_path / run).rglob("*.*"))
        for run in ("one", "two")
    }
    assert files["one"] == files["two"]
    for rel in files["one"]:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel


def test_unknown_labels_are_skipped_or_fail_under_strict(tmp_path):
    src = _labelme_folder(tmp_path / "in", 6, labels=("cat", "dog", "cow"))
    labels = tmp_path / "labels.txt"
    labels.write_text("__ignore__\n_background_\ncat\ndog\n", encoding="utf-8")
    summary = convert_dataset(src, tmp_path / "out", labels_file=labels)
    report = _load(tmp_path / "out" / "report.json")
    assert summary["report"] == {"skipped": 1} and report["summary"] == summary
    assert "'cow' is not in --labels" in report["entries"][0]["reason"]
    with pytest.raises(AnnotationError, match="--strict: 1 problem.*cow"):
        convert_dataset(src, tmp_path / "strict", labels_file=labels, strict=True)
    assert not (tmp_path / "strict").exists()


def test_existing_output_and_failed_runs_leave_nothing(tmp_path):
    src = _labelme_folder(tmp_path / "in", 4)
    (tmp_path / "exists").mkdir()
    with pytest.raises(DatasetError, match="choose a new --output or delete it"):
        convert_dataset(src, tmp_path / "exists")
    (src / "im03.json").write_text("{\"shapes\": [", encoding="utf-8")
    with pytest.raises(AnnotationError, match="im03.json"):
        convert_dataset(src, tmp_path / "out", labels_file=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists", "in"]


def test_unknown_format_lists_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match="--format 'xml'.*labelme"):
        convert_dataset(tmp_path, tmp_path / "out", fmt="xml")


def test_outputs_selects_what_is_written_without_changing_it(tmp_path):
    src = _labelme_folder(tmp_path / "in", 6)
    convert_dataset(src, tmp_path / "all", splits={"val": 0.3})
    convert_dataset(src, tmp_path / "coco", splits={"val": 0.3}, outputs=("instances",))
    convert_dataset(src, tmp_path / "sem", splits={"val": 0.3}, outputs=["sem_seg"])

    def files(run: str) -> set[Path]:
        return {p.relative_to(tmp_path / run) for p in (tmp_path / run).rglob("*.*")}

    def written(run: str, top: str) -> set[Path]:
        return {p for p in files(run) if p.parts[0] == top}

    for run, kept in (("coco", {"images", "annotations"}), ("sem", {"images", "sem_seg"})):
        assert {p.parts[0] for p in files(run)} == kept | {"report.json"}
        for top in kept:
            assert written(run, top) == written("all", top)
            for rel in written(run, top):
                assert (tmp_path / run / rel).read_bytes() == (tmp_path / "all" / rel).read_bytes()
    with pytest.raises(ConfigError, match="--outputs instances,masks: unknown masks; fix:.*sem_seg"):
        convert_dataset(src, tmp_path / "bad", outputs=("instances", "masks"))
    with pytest.raises(ConfigError, match="nothing selected"):
        convert_dataset(src, tmp_path / "bad", outputs=())
    assert not (tmp_path / "bad").exists()
