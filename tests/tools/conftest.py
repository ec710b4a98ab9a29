"""Fixtures of the tool tests: small generated datasets in the layouts the converters read."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def camvid_folder(tmp_path) -> Path:
    """``images/`` + ``labels/*_L.png``: 4 images with label maps, sky (0) on top, road (1)
    below (one component each), a void strip (11) on the left."""
    root = tmp_path / "camvid"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    values = np.zeros((24, 32), np.uint8)
    values[12:] = 1
    values[:, :2] = 11
    for stem in ("a", "b", "c", "d"):
        Image.new("RGB", (32, 24), (1, 2, 3)).save(root / "images" / f"{stem}.png")
        Image.fromarray(values).save(root / "labels" / f"{stem}_L.png")
    return root
