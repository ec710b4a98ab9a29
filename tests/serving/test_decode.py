"""Uploaded bytes → the model's image: what tools/predict.py reads from the same file, and
the size limits checked from the header."""

import io

import numpy as np
import pytest
import tifffile
from PIL import Image

from d2seg.data.io import read_image
from d2seg.serving.decode import decode_image, probe_image
from d2seg.serving.errors import ApiError


def _encoded(array: np.ndarray, fmt: str, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def test_decoded_as_the_file_is_read_with_exif_and_channel_conversion(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    data = _encoded(rgb, "JPEG", exif=exif)
    (tmp_path / "photo.jpg").write_bytes(data)
    for fmt, channels in (("BGR", 3), ("RGB", 3), ("L", 1)):
        image, suffix = decode_image(data, fmt, channels, max_pixels=10_000)
        assert suffix == ".jpg" and image.shape == (40, 30, channels)
        assert np.array_equal(image, read_image(tmp_path / "photo.jpg", fmt))
    bands = rng.integers(0, 256, (12, 16, 5), dtype=np.uint8)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, bands)
    image, suffix = decode_image(buffer.getvalue(), "N", 5, max_pixels=10_000)
    assert suffix == ".tif" and np.array_equal(image, bands)


def test_limits_and_bad_bytes_are_refused_with_their_status(png_header):
    photo = _encoded(np.zeros((50, 60, 3), np.uint8), "PNG")
    assert probe_image(photo, 3000) == (".png", 60, 50)
    cases = [  # (bytes, --max-pixels, status, message)
        (b"", 10**6, 422, "empty body"),
        (b"GIF89a-not-really" * 10, 10**6, 415, "not an image"),
        (b"\x00" * 100, 10**6, 415, "not an image"),
        # Pillow refuses it itself unless its bound was lifted: the same 413 either way.
        (png_header(30000, 30000), 40_000_000, 413, "--max-pixels 40000000"),
        (png_header(3000, 2000), 10**6, 413, "6000000 pixels"),
        (photo, 2999, 413, "--max-pixels 2999"),
    ]
    for data, max_pixels, status, message in cases:
        with pytest.raises(ApiError) as e:
            probe_image(data, max_pixels)
        assert e.value.status == status and message in e.value.message, (status, e.value.message)
    with pytest.raises(ApiError) as e:
        decode_image(photo[: len(photo) // 2], "RGB", 3, 40_000_000)
    assert e.value.status == 422 and "cannot be decoded" in e.value.message
    with pytest.raises(ApiError) as e:
        decode_image(photo, "N", 4, 40_000_000)
    assert e.value.status == 422 and "d2seg-upload" not in e.value.message
