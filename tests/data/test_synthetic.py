"""Synthetic datasets: deterministic, valid Labelme (labelme's own loader is the oracle), exact
ground truth, and Carvana-style palette GIF masks."""

import json
import subprocess
import sys
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from d2seg.data.synthetic import (
    SYNTHETIC_CLASSES,
    SYNTHETIC_DATASETS,
    make_balloons,
    make_carvana,
    make_chipsets,
    render_sample,
)
from d2seg.errors import ConfigError, DatasetError

labelme = pytest.importorskip("labelme")

SIZE = (96, 128)
LABELME_KINDS = ["balloons", "chipsets", "shapes"]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synthetic")
    return {kind: make(root / kind, 6, size=SIZE, seed=3)
            for kind, make in SYNTHETIC_DATASETS.items()}


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("kind", sorted(SYNTHETIC_DATASETS))
def test_same_seed_gives_identical_bytes(kind, tmp_path, datasets):
    again = SYNTHETIC_DATASETS[kind](tmp_path / kind, 6, size=SIZE, seed=3)
    assert folder_bytes(again) == folder_bytes(datasets[kind])


@pytest.mark.parametrize("kind", sorted(SYNTHETIC_DATASETS))
def test_different_seeds_differ(kind, tmp_path, datasets):
    other = folder_bytes(SYNTHETIC_DATASETS[kind](tmp_path / kind, 6, size=SIZE, seed=4))
    mine = folder_bytes(datasets[kind])
    assert other.keys() == mine.keys()
    images = [name for name in mine if name.endswith(".jpg")]
    assert all(other[name] != mine[name] for name in images)


def labelme_instances(label_file, height: int, width: int) -> list[tuple[str, np.ndarray]]:
    """Instances as Labelme's converters build them: shapes with one (label, group_id) merge."""
    instances: dict[tuple, np.ndarray] = {}
    for i, shape in enumerate(label_file.shapes):
        key = (shape["label"], shape["group_id"] if shape["group_id"] is not None else f"#{i}")
        mask = labelme.utils.shape_to_mask((height, width), shape["points"], shape["shape_type"])
        instances[key] = instances.get(key, np.zeros((height, width), bool)) | mask
    return [(key[0], mask) for key, mask in instances.items()]


@pytest.mark.parametrize("kind", LABELME_KINDS)
def test_labelme_loads_every_file_and_its_masks_are_the_objects(kind, datasets):
    folder = datasets[kind]
    json_files = sorted(folder.glob("*.json"))
    assert len(json_files) == 6
    for index, path in enumerate(json_files):
        raw = json.loads(path.read_text(encoding="utf-8"))
        assert list(raw) == ["version", "flags", "shapes", "imagePath", "imageData",
                             "imageHeight", "imageWidth"]
        assert raw["version"].startswith("5.") and raw["imageData"] is None
        assert raw["imagePath"] == path.with_suffix(".jpg").name
        for shape in raw["shapes"]:
            assert list(shape) == ["label", "points", "group_id", "description", "shape_type",
                                   "flags"]

        label_file = labelme.LabelFile(str(path))  # reads the image and checks its size
        assert (raw["imageHeight"], raw["imageWidth"]) == SIZE
        sample = render_sample(kind, seed=3, size=SIZE, index=index)
        instances = labelme_instances(label_file, *SIZE)
        assert [label for label, _ in instances] == sample["labels"]
        for (_, mask), expected in zip(instances, sample["masks"]):
            np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize("kind", sorted(SYNTHETIC_DATASETS))
def test_render_sample_matches_the_written_image(kind, datasets):
    sample = render_sample(kind, seed=3, size=SIZE, index=2)
    image = sample["image"]
    assert image.dtype == np.uint8 and image.shape == (*SIZE, 3)
    masks = sample["masks"]
    assert masks.dtype == bool and masks.shape[1:] == SIZE and len(masks) >= 1
    assert masks.reshape(len(masks), -1).any(axis=1).all()
    assert masks.sum(axis=0).max() == 1, "instances must not overlap (exact ground truth)"
    assert sample["labels"] == [SYNTHETIC_CLASSES[kind][c] for c in sample["classes"]]
    jpeg = np.asarray(Image.open(next(datasets[kind].glob("*_0002.jpg"))), dtype=np.float32)
    assert np.abs(jpeg - image).mean() < 6  # JPEG loss only; another image differs by ~30+


def test_labels_txt_follows_labelme_convention(datasets):
    for kind in LABELME_KINDS:
        lines = (datasets[kind] / "labels.txt").read_text().splitlines()
        assert lines == ["__ignore__", "_background_", *SYNTHETIC_CLASSES[kind]]
    assert not (datasets["carvana"] / "labels.txt").exists()


def test_chipsets_have_grouped_polygons_rectangles_and_all_classes(datasets):
    shapes = [(p.name, s) for p in sorted(datasets["chipsets"].glob("*.json"))
              for s in json.loads(p.read_text())["shapes"]]
    grouped = [(name, s) for name, s in shapes if s["group_id"] is not None]
    assert grouped
    assert all(s["label"] == "chip" and s["shape_type"] == "polygon" for _, s in grouped)
    group_sizes: dict[tuple, int] = {}
    for name, s in grouped:
        group_sizes[name, s["group_id"]] = group_sizes.get((name, s["group_id"]), 0) + 1
    assert set(group_sizes.values()) == {2}  # an occluded chip: the two sides of the wire
    shapes = [s for _, s in shapes]
    assert {s["shape_type"] for s in shapes if s["label"] == "resistor"} == {"rectangle"}
    assert {s["label"] for s in shapes} == set(SYNTHETIC_CLASSES["chipsets"])


def test_carvana_masks_are_palette_gifs_of_zero_and_one(datasets):
    folder = datasets["carvana"]
    masks = sorted(folder.glob("*_mask.gif"))
    assert len(masks) == 6 and not list(folder.glob("*.json"))
    for index, path in enumerate(masks):
        assert (folder / path.name.replace("_mask.gif", ".jpg")).is_file()
        with Image.open(path) as gif:
            assert gif.format == "GIF" and gif.mode == "P"
            values = np.asarray(gif)
        assert set(np.unique(values)) == {0, 1}
        # One car = one connected component, so "--format masks" finds one instance.
        assert cv2.connectedComponents((values == 1).astype(np.uint8))[0] == 2
        np.testing.assert_array_equal(
            values == 1, render_sample("carvana", seed=3, size=SIZE, index=index)["masks"][0]
        )


def test_user_mistakes_raise_errors_that_say_the_fix(tmp_path):
    make_balloons(tmp_path / "b", 1, size=SIZE)
    with pytest.raises(DatasetError, match="already exists; fix"):
        make_chipsets(tmp_path / "b", 1, size=SIZE)
    with pytest.raises(ConfigError, match="at least 48"):
        make_carvana(tmp_path / "c", 1, size=(16, 16))
    with pytest.raises(ConfigError, match="at least 1"):
        make_balloons(tmp_path / "d", 0)
    with pytest.raises(ConfigError, match="one of"):
        render_sample("cats")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # nothing half-written


def test_cli_writes_a_dataset_and_reports_mistakes_in_one_line(tmp_path, repo_root):
    script = str(repo_root / "tools" / "make_synthetic.py")
    args = [sys.executable, script, "carvana", "--output", str(tmp_path / "cars"),
            "--num-images", "2", "--size", "64", "96"]
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "cars").glob("*_mask.gif"))) == 2
    again = subprocess.run(args, capture_output=True, text=True)
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "already exists; fix" in again.stderr


def test_shipped_annotations_are_what_the_readme_commands_write(tmp_path, repo_root):
    readme = (repo_root / "annotations" / "README.md").read_text()
    commands = [line.split()[2:] for line in readme.splitlines()
                if line.startswith("python tools/make_synthetic.py ")]
    assert [c[0] for c in commands] == ["balloons", "chipsets", "carvana"]
    for args in commands:
        shipped = repo_root / args[args.index("--output") + 1]
        args[args.index("--output") + 1] = str(tmp_path / args[0])
        done = subprocess.run([sys.executable, str(repo_root / "tools" / "make_synthetic.py"),
                               *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        fresh, committed = folder_bytes(tmp_path / args[0]), folder_bytes(shipped)
        assert sorted(fresh) == sorted(committed)
        for name, data in fresh.items():
            if name.endswith(".jpg"):  # JPEG bytes may vary with libjpeg; pixels may not
                a, b = (np.asarray(Image.open(BytesIO(d)), dtype=np.int16)
                        for d in (data, committed[name]))
                assert np.abs(a - b).max() <= 2, name
            else:
                assert data == committed[name], name
