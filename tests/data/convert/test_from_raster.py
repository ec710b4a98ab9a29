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
        tifffile.imwrite(root / "scenes" / "field.tif", stored, photometric="minisblack")
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


@pytest.mark.slow
def test_a_60_band_crop_scene_converts_and_trains_a_tiny_unet(tmp_path, train_run):
    """The agricultural crop-type case: 12 months × 5 bands = 60 uint16 bands, 1800×1135
    pixels, 8 classes (0 = unlabelled), GDAL's bands-first layout."""
    rng = np.random.default_rng(0)
    height, width, bands = 1800, 1135, 60
    labels = np.zeros((height, width), np.uint8)
    for crop in range(1, 9):  # 8 fields of one crop each, the rest unlabelled
        y, x = rng.integers(0, height - 300), rng.integers(0, width - 300)
        labels[y:y + 300, x:x + 300] = crop
    signature = rng.integers(500, 4000, (9, bands)).astype(np.uint16)
    scene = signature[labels] + rng.integers(0, 200, (height, width, bands), dtype=np.uint16)
    (tmp_path / "scenes").mkdir()
    (tmp_path / "labels").mkdir()
    tifffile.imwrite(
        tmp_path / "scenes" / "field.tif", np.moveaxis(scene, -1, 0), photometric="minisblack"
    )
    tifffile.imwrite(tmp_path / "labels" / "field.tif", labels)
    del scene
    names = ("__ignore__", "wheat", "maize", "rice", "barley", "soy", "cotton", "fallow", "orchard")
    options = SourceOptions(labels_dir=str(tmp_path / "labels"), class_names=names, patch=256)
    summary = convert_dataset(tmp_path / "scenes", tmp_path / "data", fmt="raster",
                              options=options, splits={"val": 0.2})
    assert summary["bands"] == 60 and len(summary["pixel_mean"]) == 60
    assert summary["categories"] == list(names[1:])
    patches = sum(s["images"] for s in summary["splits"].values())
    assert patches + summary["patches_all_ignore"] == 8 * 5  # 8 rows × 5 columns of patches
    first = json.loads((tmp_path / "data/annotations/train.json").read_text())["images"][0]
    assert read_image(tmp_path / "data/images" / first["file_name"], "N").shape == (256, 256, 60)

    train_run(
        "configs/satellite/unet_R_18_patches.yaml", tmp_path / "run",
        "DATASETS.TRAIN", f"('{tmp_path / 'data/annotations/train.json'}',)",
        "DATASETS.TEST", "()",
        "MODEL.PIXEL_MEAN", str(summary["pixel_mean"]), "MODEL.PIXEL_STD", str(summary["pixel_std"]),
        "MODEL.DEVICE", "cpu", "MODEL.SEM_SEG_HEAD.DECODER_CHANNELS", "[32, 16, 16, 8, 8]",
        "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "128",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "4", "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.CHECKPOINT_PERIOD", "100", "SOLVER.EARLY_STOP.PATIENCE", "0",
        "TEST.EVAL_PERIOD", "0", "DATALOADER.NUM_WORKERS", "0", "SEED", "0",
    )
    metrics = [json.loads(line) for line in (tmp_path / "run/metrics.json").read_text().splitlines()]
    losses = [m["total_loss"] for m in metrics if "total_loss" in m]
    assert losses and all(np.isfinite(losses))
    assert (tmp_path / "run/model_final.pth").is_file()


def test_workers_write_the_same_dataset(tmp_path):
    _scene(tmp_path, 150, 100, 3, np.uint16, True)
    options = SourceOptions(labels_dir=str(tmp_path / "labels"), class_names=CLASSES,
                            ignore_value=9, patch=48)
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        convert_dataset(tmp_path / "scenes", out, fmt="raster", options=options, workers=workers)
        outputs.append(((out / "annotations/all.json").read_bytes(),
                        sorted(p.read_bytes() for p in (out / "images").glob("*.npy"))))
    assert outputs[0] == outputs[1]
