"""d2seg.data.io: the one reader of images, JSON and EXIF, its errors naming file and fix."""

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from d2seg.data.io import (
    EXIF_ORIENTATION_TAG,
    exif_orientation,
    image_pixels,
    open_image,
    read_image,
    read_json,
    read_raster,
    read_sem_seg,
)
from d2seg.errors import AnnotationError, DatasetError


def test_read_json_names_the_file_and_the_fix_in_the_callers_error_class(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"images": []}))
    assert read_json(good, "COCO annotation file") == {"images": []}
    with pytest.raises(DatasetError, match=r"nope\.json: COCO file not found; fix: check the path"):
        read_json(tmp_path / "nope.json", "COCO file")
    broken = tmp_path / "broken.json"
    broken.write_text('{"shapes": [')
    with pytest.raises(AnnotationError, match=r"broken\.json: cannot read it as JSON .*fix: redo"):
        read_json(broken, "Labelme file", error=AnnotationError, fix="redo")


def _rotated_jpeg(path, orientation: int) -> np.ndarray:
    """A 20×30 (H×W) JPEG whose EXIF says ``orientation``; returns its stored pixels."""
    pixels = np.zeros((20, 30, 3), np.uint8)
    pixels[:, :10] = 255  # the left third white
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    Image.fromarray(pixels).save(path, exif=exif, quality=100)
    return pixels


def test_exif_orientation_is_applied_by_every_reader(tmp_path):
    path = tmp_path / "rotated.jpg"
    _rotated_jpeg(path, 6)  # 6: shown rotated 90° clockwise
    with open_image(path, str(path)) as image:
        assert exif_orientation(image) == 6
        assert image_pixels(image, str(path)).shape == (30, 20, 3)
    bgr = read_image(path, "BGR")
    assert bgr.shape == (30, 20, 3) and bgr[0, :, 0].mean() > 200  # white on top after rotation
    upright = tmp_path / "upright.png"
    Image.new("L", (4, 3)).save(upright)
    with open_image(upright, str(upright)) as image:
        assert exif_orientation(image) == 1


def test_unreadable_images_name_the_file_and_the_fix(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    with pytest.raises(AnnotationError, match=r"a\.json: cannot read the mask .*fix: replace"):
        open_image(junk, "a.json", "mask", error=AnnotationError)
    with pytest.raises(DatasetError, match=r"junk\.png: cannot read the image .*fix: replace"):
        read_image(junk)
    with pytest.raises(DatasetError, match=r"semantic label image .*gone\.png not found; fix:"):
        read_sem_seg(tmp_path / "gone.png")
    truncated = tmp_path / "truncated.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 7).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:80])
    with pytest.raises(DatasetError, match=r"truncated\.png: cannot decode the image .*fix:"):
        read_image(truncated)


def test_read_raster_keeps_values_and_puts_bands_last(tmp_path):
    planar = np.arange(3 * 20 * 30, dtype=np.uint16).reshape(3, 20, 30) * 20
    tifffile.imwrite(tmp_path / "scene.tif", planar, photometric="minisblack")
    array = read_raster(tmp_path / "scene.tif")
    assert array.dtype == np.float32 and array.shape == (20, 30, 3)
    np.testing.assert_array_equal(array, np.moveaxis(planar, 0, -1).astype(np.float32))
    np.save(tmp_path / "gray.npy", np.full((4, 5), 7, np.uint8))
    gray = read_image(tmp_path / "gray.npy", "N")
    assert gray.dtype == np.uint8 and gray.shape == (4, 5, 1)
    np.save(tmp_path / "text.npy", np.array([["a"]]))
    with pytest.raises(DatasetError, match=r"text\.npy is a <U1 array.*fix: save H×W×bands"):
        read_raster(tmp_path / "text.npy")
