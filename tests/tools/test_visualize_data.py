"""``tools/visualize_data.py``: the ground truth drawn as annotated and as the loader gives it."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from d2seg.data.convert.pipeline import convert_dataset
from d2seg.data.synthetic import make_balloons, make_carvana

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def visualize(run_tool):
    """``visualize(*argv) -> (exit status, stdout, stderr)``: tools/visualize_data.py."""
    return lambda *argv: run_tool("visualize_data", *argv)


@pytest.fixture(scope="module")
def balloons(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("balloons")
    make_balloons(root / "labelme", 6, size=(64, 80), seed=0)
    convert_dataset(root / "labelme", root / "coco", seed=0)
    return root / "coco"


def _pictures(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def test_annotations_are_drawn_over_each_selected_image(balloons, tmp_path, visualize):
    split = balloons / "annotations" / "all.json"
    code, out, err = visualize("--dataset", split, "--output-dir", tmp_path / "all", "--limit", 4)
    assert code == 0, err
    pictures = _pictures(tmp_path / "all")
    assert len(pictures) == 4 and "4 picture(s)" in out
    for stem, picture in pictures.items():
        original = np.asarray(Image.open(balloons / "images" / f"{stem}.jpg").convert("RGB"))
        assert picture.shape == original.shape
        assert (np.abs(picture.astype(int) - original).sum(axis=2) > 60).mean() > 0.02
    images = json.loads(split.read_text())["images"]
    wanted = [images[1], images[3]]
    code, _, err = visualize("--dataset", split, "--output-dir", tmp_path / "ids",
                             "--ids", *[im["id"] for im in wanted])
    assert code == 0, err
    assert sorted(_pictures(tmp_path / "ids")) == sorted(Path(im["file_name"]).stem
                                                         for im in wanted)


def test_semantic_ground_truth_is_drawn(tmp_path, visualize):
    make_carvana(tmp_path / "raw", 2, size=(64, 96), seed=0)
    convert_dataset(tmp_path / "raw", tmp_path / "coco", fmt="masks", seed=0)
    code, _, err = visualize("--dataset", tmp_path / "coco" / "annotations" / "all.json",
                             "--output-dir", tmp_path / "vis")
    assert code == 0, err
    pictures = _pictures(tmp_path / "vis")
    assert len(pictures) == 2
    for stem, picture in pictures.items():
        labels = np.asarray(Image.open(tmp_path / "coco" / "sem_seg" / "all" / f"{stem}.png"))
        original = np.asarray(Image.open(tmp_path / "coco" / "images" / f"{stem}.jpg")
                              .convert("RGB"))
        changed = np.abs(picture.astype(int) - original).sum(axis=2) > 60
        assert changed[labels == 1].mean() > 0.5  # the car is tinted


def test_dataloader_source_draws_the_augmented_training_images(balloons, tmp_path, visualize):
    code, out, err = visualize(
        "--config-file", REPO_ROOT / "configs" / "tiny" / "mask_rcnn_R_18_tiny.yaml",
        "--source", "dataloader", "--dataset", balloons / "annotations" / "all.json",
        "--output-dir", tmp_path / "loader", "--limit", 3, "MODEL.ROI_HEADS.NUM_CLASSES", "1")
    assert code == 0, err
    pictures = _pictures(tmp_path / "loader")
    assert len(pictures) == 3
    # INPUT.MIN_SIZE_TRAIN 96: the loader's images are resized from 64×80.
    assert all(p.shape == (96, 120, 3) for p in pictures.values())


def test_dataloader_without_config_and_unknown_ids_are_usage_errors(balloons, tmp_path, visualize):
    split = balloons / "annotations" / "all.json"
    code, _, err = visualize("--dataset", split, "--source", "dataloader", "--output-dir",
                             tmp_path / "a")
    assert code == 2 and "needs --config-file" in err
    code, _, err = visualize("--dataset", split, "--output-dir", tmp_path / "b", "--ids", 9999)
    assert code == 2 and "no image selected" in err
