"""An uploaded image's bytes → the model's input, with the size limits checked on the header.

The pixels are decoded by :func:`~d2seg.engine.prediction_sources.read_input`, exactly as
``tools/predict.py`` reads a file (EXIF orientation, 16-bit scaling, multi-band TIFFs, colour
→ gray for a grayscale model), so an upload gives the records predicting on the file gives.
"""

import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from d2seg.engine.prediction_sources import read_input
from d2seg.errors import D2SegError
from d2seg.serving.errors import ApiError

# Pillow's format name → the suffix read_input dispatches on.
SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif", "BMP": ".bmp", "WEBP": ".webp",
            "GIF": ".gif"}
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_ACCEPTED = "JPEG, PNG or TIFF (also BMP, WebP, GIF)"


def _tiff_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a TIFF's first page, from its header (any band count)."""
    import tifffile  # only TIFF uploads need it

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            return int(page.imagewidth), int(page.imagelength)
    except Exception as e:  # tifffile raises many types on a broken header
        raise ApiError(422, f"the uploaded TIFF cannot be read ({e}); fix: upload a complete, "
                            f"valid image file") from e


def probe_image(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """(suffix, width, height) of an uploaded image, read from its header only.

    Raises :class:`ApiError` 422 for an empty body, 415 for bytes that are no image format
    d2seg reads, 413 for more than ``max_pixels`` pixels (a decompression bomb is refused
    before any pixel is decoded).
    """
    if not data:
        raise ApiError(422, "the request has no image (empty body); fix: send the image file "
                            "as the body or as the multipart field 'file'")
    if data[:4] in _TIFF_MAGIC:
        suffix, (width, height) = ".tif", _tiff_size(data)
    else:
        try:
            with Image.open(io.BytesIO(data)) as image:
                suffix, (width, height) = SUFFIXES.get(image.format), image.size
        except Image.DecompressionBombError as e:
            raise ApiError(413, f"the image declares too many pixels ({e}); fix: downscale it "
                                f"to at most --max-pixels {max_pixels}") from e
        except Exception as e:  # Pillow raises many types on data it cannot identify
            raise ApiError(415, f"the upload is not an image d2seg reads; fix: send a "
                                f"{_ACCEPTED} file") from e
        if suffix is None:
            raise ApiError(415, f"{image.format} images are not accepted; fix: send a "
                                f"{_ACCEPTED} file")
    if width * height > max_pixels:
        raise ApiError(413, f"the image is {width}×{height} = {width * height} pixels, more "
                            f"than the server's --max-pixels {max_pixels}; fix: downscale it "
                            f"(or tile it with tools/predict.py)")
    return suffix, width, height


def decode_image(data: bytes, input_format: str, num_channels: int,
                 max_pixels: int) -> tuple[np.ndarray, str]:
    """An uploaded image as uint8 H×W×C in the model's ``input_format`` and channels, and
    the file suffix of its format (``".jpg"``, ...).

    Raises :class:`ApiError`: those of :func:`probe_image`, and 422 for an image that cannot
    be decoded (truncated, corrupt) or whose bands the model cannot take.
    """
    suffix, _, _ = probe_image(data, max_pixels)
    # read_input reads files: the upload goes through a private temp file that no request
    # names and that is deleted when decoded.
    with tempfile.NamedTemporaryFile(suffix=suffix, prefix="d2seg-upload-") as f:
        f.write(data)
        f.flush()
        try:
            return read_input(Path(f.name), input_format, num_channels), suffix
        except D2SegError as e:
            message = str(e) if e.__cause__ is None else (  # the decoder's: truncated, corrupt
                f"the uploaded image cannot be decoded ({e.__cause__}); fix: upload a "
                f"complete, valid image file")
            raise ApiError(422, message.replace(f.name, "the uploaded image")) from e
