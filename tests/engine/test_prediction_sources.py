"""Reading prediction inputs: rasters keep their values for band models, and a model that
takes 0-255 pixels refuses float rasters with the fix; the predictor runs on float rasters."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from d2seg import DefaultPredictor, build_model, get_cfg
from d2seg.engine.prediction_sources import read_input
from d2seg.errors import DatasetError

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def reflectances() -> np.ndarray:
    """A 40×48 scene of 4 uint16 bands, reflectance-like values up to 10000."""
    return np.random.default_rng(0).integers(0, 10000, (40, 48, 4)).astype(np.uint16)


def test_band_model_reads_raster_values_as_training_does(tmp_path, reflectances):
    tifffile.imwrite(tmp_path / "scene.tif", reflectances.transpose(2, 0, 1),  # bands first
                     photometric="minisblack")
    np.save(tmp_path / "scene.npy", reflectances.astype(np.float32) / 10000)
    image = read_input(tmp_path / "scene.tif", "N", 4)
    assert image.dtype == np.float32 and image.shape == (40, 48, 4)
    np.testing.assert_array_equal(image, reflectances.astype(np.float32))
    np.testing.assert_allclose(read_input(tmp_path / "scene.npy", "N", 4),
                               reflectances / 10000, rtol=1e-6)


def test_pixel_model_refuses_a_float_raster_with_the_fix(tmp_path, reflectances):
    np.save(tmp_path / "scene.npy", reflectances[:, :, :3].astype(np.float32))
    with pytest.raises(DatasetError, match=r"scene.npy holds float32 values .*fix: save uint8"):
        read_input(tmp_path / "scene.npy", "RGB", 3)
    np.save(tmp_path / "bytes.npy", (reflectances[:, :, :3] // 40).astype(np.uint8))
    assert read_input(tmp_path / "bytes.npy", "RGB", 3).dtype == np.uint8


def test_predictor_takes_float_rasters_for_band_models(tmp_path, reflectances):
    cfg = get_cfg()
    cfg.merge_from_file(str(REPO_ROOT / "configs" / "tiny" / "unet_R_18_tiny.yaml"))
    cfg.merge_from_list(["INPUT.FORMAT", "N", "MODEL.PIXEL_MEAN", str([5000.0] * 4),
                         "MODEL.PIXEL_STD", str([2900.0] * 4), "INPUT.MIN_SIZE_TEST", "0",
                         "DATASETS.STUFF_CLASSES", "('a', 'b', 'c')"])
    torch.manual_seed(0)
    torch.save(build_model(cfg).state_dict(), tmp_path / "w.pth")
    cfg.MODEL.WEIGHTS = str(tmp_path / "w.pth")
    predictor = DefaultPredictor(cfg)
    scene = reflectances.astype(np.float32)
    logits = predictor(scene)["sem_seg"]
    assert logits.shape == (3, 40, 48)
    # The values reach the model as they are: scaling the scene changes the prediction.
    assert not torch.equal(logits, predictor(scene / 100)["sem_seg"])
