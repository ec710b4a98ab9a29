"""Multi-band scenes cut into patches (``--format raster``)."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from d2seg.data.convert.from_raster import patch_origins
from d2seg.data.convert.pipeline import convert_dataset
from d2seg.data.convert.source import SourceOptions
from d2seg.data.io import read_image, read_sem_seg
from d2seg.errors import DatasetError

CLASSES = ("_background_", "wheat", "maize", "rice")


def _scene(root: Path, height: int, width: int, bands: int, dtype, planar: bool, suffix=".tif"):
    """A scene with a smooth per-band ramp + noise, and labels with an all-ignore corner."""
    rng = np.random.default_rng(0)
    scale = 255 if dtype == np.uint8 else 10000
    scene = (rng.random((height, width, bands)) * scale).astype(dtype)
    labels = (np.arange(width)[None, :] * 4 // width + np.zeros((height, 1), int)).astype(np.uint8)
    labels[: height // 2, : width // 2] = 9  # ignore
    (root / "scenes").mkdir(parents=True)
    (root / "labels").mkdir()
    stored = np.moveaxis(scene, -1, 0) if planar else scene
    if suffix == ".npy":
        np.save(root / "scenes" / "field.npy", stored)
    else:
        tifffile.imwrite(root / "scenes" / "field.tif", stored)
    tifffile.imwrite(root / "labels" / "field.tif", labels)
    return scene, labels


def test_patch_origins_cover_the_axis():
    assert patch_origins(256, 64, 64) == [0, 64, 128, 192]
    assert patch_origins(150, 64, 64) == [0, 64, 86]
    assert patch_origins(64, 64, 32) == [0]


@pytest.mark.parametrize("dtype, planar, suffix", [
    (np.uint16, True, ".tif"), (np.uint8, False, ".npy"), (np.float32, False, ".tif"),
])
def test_patches_reassemble_to_the_scene_with_its_statistics(tmp_path, dtype, planar, suffix):
    scene, labels = _scene(tmp_path, 150, 100, 5, dtype, planar, suffix)
    options = SourceOptions(labels_dir=str(tmp_path / "labels"), class_names=CLASSES,
                            ignore_value=9, patch=48, stride=48)
    summary = convert_dataset(tmp_path / "scenes", tmp_path / "out", fmt="raster", options=options)
    assert summary["categories"] == ["wheat", "maize", "rice"]
    out = tmp_path / "out"
    coco = json.loads((out / "annotations/all.json").read_text())
    rebuilt = np.full(scene.shape, -1, np.float64)
    semantic = np.zeros(labels.shape, np.uint8)
    for image in coco["images"]:
        y, x = (int(part[1:]) for part in Path(image["file_name"]).stem.split("_")[1:])
        patch = read_image(out / "images" / image["file_name"], "N")
        assert patch.dtype == (np.uint8 if dtype == np.uint8 else np.float32)
        rebuilt[y:y + 48, x:x + 48] = patch
        semantic[y:y + 48, x:x + 48] = read_sem_seg(out / "sem_seg/all" / image["file_name"].replace(".npy", ".png"))
    kept = rebuilt[..., 0] >= 0
    # the only patches missing are the all-ignore ones (top-left corner of 75×50 ignore)
    assert summary["patches_all_ignore"] == 1 and not kept[:48, :48].any() and kept[:, 50:].all()
    np.testing.assert_array_equal(rebuilt[kept], scene[kept].astype(np.float64))
    expected = np.where(labels == 9, 255, labels).astype(np.uint8)  # value v → category v
    np.testing.assert_array_equal(semantic[kept], expected[kept])
    np.testing.assert_allclose(summary["pixel_mean"], scene[kept].astype(np.float64).mean(0), rtol=1e-5)
    np.testing.assert_allclose(summary["pixel_std"], scene[kept].astype(np.float64).std(0), rtol=1e-5)
    assert json.loads((out / "report.json").read_text())["summary"]["pixel_mean"] == summary["pixel_mean"]


def test_scene_smaller_than_the_patch_is_reported(tmp_path):
    _scene(tmp_path, 40, 30, 2, np.uint8, False)
    options = SourceOptions(labels_dir=str(tmp_path / "labels"), class_names=CLASSES,
                            ignore_value=9, patch=48)
    with pytest.raises(DatasetError, match="no patch to write.*--patch 48"):
        convert_dataset(tmp_path / "scenes", tmp_path / "out", fmt="raster", options=options)
    assert not (tmp_path / "out").exists()
