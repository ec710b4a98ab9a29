"""The one place that reads image files, JSON files and EXIF orientation.

Images are opened with Pillow. Pixels read for training (:func:`read_image`) and by the
annotation readers (:func:`image_pixels`) have their EXIF orientation applied: what a person sees
in a viewer, and what Labelme measures. Every reader raises a d2seg error that names the file and
says how to fix it; ``error`` picks its class (an annotation being converted is an
:class:`AnnotationError`, a dataset's file loaded for training or evaluation a
:class:`DatasetError`).

``INPUT.FORMAT`` layouts of :func:`read_image`: ``"RGB"``/``"BGR"`` (H×W×3), ``"L"`` (H×W×1
grayscale) or ``"N"`` (the file's own channels: a raster, see :func:`read_raster`, or any image
Pillow reads, untouched). 16-bit photos are scaled to 8 bits; rasters keep their values.
"""

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from d2seg.errors import D2SegError, DatasetError

EXIF_ORIENTATION_TAG = 0x0112
IMAGE_FORMATS = ("BGR", "RGB", "L", "N")
# Multi-band arrays: read with numpy / tifffile, values kept as stored (see read_raster).
RASTER_SUFFIXES = (".npy", ".tif", ".tiff")

# Pillow modes of single-channel images with more than 8 bits per pixel.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_CONVERTER_HINT = (
    "create it with tools/convert_labelme.py --input DIR --output OUT (writes "
    "OUT/annotations/*.json)"
)


def read_json(
    path: str | os.PathLike,
    what: str,
    *,
    error: type[D2SegError] = DatasetError,
    fix: str = "repair or regenerate it",
    missing_fix: str = f"check the path, or {_CONVERTER_HINT}",
) -> Any:
    """The decoded JSON of ``path`` (``what`` names it in messages, e.g. "COCO annotation file").

    A missing file is an ``error`` that says ``missing_fix``; an unreadable or invalid one an
    ``error`` that says ``fix``. The defaults fit a dataset's COCO json.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} not found; fix: {missing_fix}")
    try:
        with open(path, "rb") as f:
            return json.load(f)
    # JSONDecodeError is a ValueError; deeply nested input raises RecursionError
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise error(f"{path}: cannot read it as JSON ({e}); fix: {fix}") from e


def open_image(
    source: bytes | str | os.PathLike,
    where: str,
    what: str = "image",
    *,
    error: type[D2SegError] = DatasetError,
) -> Image.Image:
    """Open an image file or encoded bytes lazily (the header only).

    ``where`` names it in messages (a path, or ``"a.json: shapes[2]"`` for embedded data).
    """
    try:
        return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    # Pillow raises many exception types on corrupt data; any of them means a bad image.
    except Exception as e:
        raise error(
            f"{where}: cannot read the {what} ({e}); fix: replace it with a valid image file, "
            f"or remove it from the dataset"
        ) from e


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation 1..8 of an opened image; 1 (upright) without a valid one.

    A broken EXIF block or a value outside 1..8 counts as upright, as viewers (and Pillow's
    ``exif_transpose``) show such images. A PNG's ``eXIf`` chunk counts when it precedes the
    pixel data (where the PNG extensions put it): looking for a later one makes Pillow decode
    the whole image, which made reading a PNG's size as slow as reading its pixels.
    """
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception:  # a corrupt EXIF block: Pillow raises anything from it
        return 1
    return orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1


def decode_image(
    image: Image.Image,
    where: str,
    what: str = "image",
    *,
    error: type[D2SegError] = DatasetError,
    exif: bool = True,
) -> Image.Image:
    """``image`` (from :func:`open_image`) with its pixels decoded and, with ``exif``, its EXIF
    orientation applied; truncated or corrupt pixel data is an ``error`` naming ``where``."""
    try:
        if exif:
            image = ImageOps.exif_transpose(image)
        image.load()
    except Exception as e:  # corrupt or truncated pixel data, see open_image
        raise error(
            f"{where}: cannot decode the {what} ({e}); fix: replace it with a valid image file, "
            f"or remove it from the dataset"
        ) from e
    return image


def image_pixels(
    image: Image.Image, where: str, what: str = "image", *, error: type[D2SegError] = DatasetError
) -> np.ndarray:
    """Decoded pixels with EXIF orientation applied: uint8 H×W (grayscale) or H×W×3 (RGB)."""
    mode = "L" if image.mode in ("1", "L", "LA", "I;16", "I") else "RGB"
    return np.asarray(decode_image(image, where, what, error=error).convert(mode))


def _open_dataset_file(path: Path, what: str, exif: bool) -> Image.Image:
    """A dataset's image or label file, decoded (with ``exif``: EXIF-oriented, as images are;
    label maps are written pixel for pixel); DatasetError when missing or unreadable."""
    if not path.is_file():
        raise DatasetError(
            f"{what} {path} not found; fix: check the folders given when the dataset was "
            f"registered (image_root, label roots); a COCO json path finds its images in "
            f"OUT/images beside OUT/annotations"
        )
    return decode_image(open_image(path, str(path), what), str(path), what, exif=exif)


def _to_8bit(image: Image.Image) -> Image.Image:
    """16/32-bit integer images → 8 bits by scaling the full 16-bit range onto 0..255."""
    if image.mode not in _WIDE_MODES:
        return image
    wide = np.asarray(image).astype(np.float64)
    return Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), mode="L")


def read_image(file_name: str | os.PathLike, format: str = "BGR") -> np.ndarray:
    """Read an image as a uint8 H×W×C array in ``format`` with EXIF orientation applied.

    ``format``: ``"BGR"``/``"RGB"`` → C = 3, ``"L"`` → C = 1, ``"N"`` → the file's channels;
    ``.npy``/``.tif`` files are then :func:`read_raster` arrays (uint8, or float32 for any other
    dtype: e.g. the raster converter's patches of uint16 or float scenes). A missing or
    unreadable file is a :class:`DatasetError` naming it.
    """
    if format not in IMAGE_FORMATS:
        raise DatasetError(
            f"image format {format!r} is not one of {list(IMAGE_FORMATS)}; fix: set INPUT.FORMAT"
        )
    path = Path(file_name)
    if format == "N" and path.suffix.lower() in RASTER_SUFFIXES:
        return read_raster(path)
    image = _to_8bit(_open_dataset_file(path, "image", exif=True))
    if format == "N":
        array = np.asarray(image)
    else:
        array = np.asarray(image.convert("L" if format == "L" else "RGB"))
        if format == "BGR":
            array = array[:, :, ::-1]
    if array.ndim == 2:
        array = array[:, :, None]
    return np.array(array, dtype=np.uint8, order="C")  # a writable copy: torch shares it


def read_raster(file_name: str | os.PathLike) -> np.ndarray:
    """A ``.npy`` (numpy) or ``.tif`` (tifffile) multi-band array as H×W×C: uint8 as stored,
    every other dtype as float32 values (uint16 reflectances stay 0..65535: the model's
    ``PIXEL_MEAN``/``PIXEL_STD`` are in the file's units). A 2-D array is one band; a
    C×H×W array (bands first, as GDAL writes GeoTIFFs: the first axis is the smallest) is
    transposed. A missing or unreadable file is a :class:`DatasetError` naming it.
    """
    path = Path(file_name)
    if not path.is_file():
        raise DatasetError(f"image {path} not found; fix: check the dataset's image root")
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            import tifffile  # only rasters need it

            array = tifffile.imread(path)
    except Exception as e:  # numpy and tifffile raise many types on corrupt files
        raise DatasetError(
            f"image {path} is not a readable array ({e}); fix: re-save it with numpy.save or "
            f"tifffile.imwrite"
        ) from e
    if array.ndim == 2:
        array = array[:, :, None]
    elif array.ndim == 3 and array.shape[0] < min(array.shape[1:]):
        array = array.transpose(1, 2, 0)
    if array.ndim != 3 or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise DatasetError(
            f"image {path} is a {array.dtype} array of shape {array.shape}; fix: save H×W×bands "
            f"of uint8, uint16 or float32"
        )
    dtype = np.uint8 if array.dtype == np.uint8 else np.float32
    return np.ascontiguousarray(array, dtype=dtype)


def read_sem_seg(file_name: str | os.PathLike) -> np.ndarray:
    """Read a semantic label PNG as a uint8 H×W array of class ids (255 = ignore).

    Palette PNGs give their palette indices (not colours); an RGB label image is an error.
    """
    path = Path(file_name)
    labels = np.array(_open_dataset_file(path, "semantic label image", exif=False))
    if labels.ndim != 2:
        raise DatasetError(
            f"semantic label image {path} has {labels.shape[2]} channels; fix: write one channel "
            f"of class ids per pixel (uint8 PNG, 255 = ignore), e.g. tools/convert_labelme.py"
        )
    if labels.dtype != np.uint8:
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise DatasetError(
                f"semantic label image {path} has class ids outside 0..255; fix: write uint8 "
                f"class ids (255 = ignore)"
            )
        labels = labels.astype(np.uint8)
    return labels


def read_panoptic_ids(file_name: str | os.PathLike) -> np.ndarray:
    """Read a COCO panoptic PNG as an int64 H×W array of segment ids (R + 256·G + 256²·B)."""
    image = _open_dataset_file(Path(file_name), "panoptic PNG", exif=False)
    rgb = np.asarray(image.convert("RGB")).astype(np.int64)
    return rgb[:, :, 0] + 256 * rgb[:, :, 1] + 256 * 256 * rgb[:, :, 2]
