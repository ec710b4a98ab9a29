"""Read Labelme JSON files of every version and rasterise their shapes.

Versions in the wild, all accepted:

- pre-3.x: no ``shape_type`` (every shape is a polygon), no ``imageHeight``/``imageWidth``,
  no ``group_id``; per-shape ``line_color``/``fill_color``.
- 3.x: top-level ``lineColor``/``fillColor``; ``shape_type`` and ``flags`` appear.
- 4.x: ``group_id``; ``imageHeight``/``imageWidth``.
- 5.x: ``description``; ``mask`` shapes = two corner points (top-left, bottom-right) plus
  ``"mask"``, a base64 PNG of the crop between them.

Shape types: ``polygon``, ``rectangle`` (two opposite corners, either order), ``circle``
(centre + a point on the rim), ``line`` (2 points), ``linestrip``, ``point``, ``mask`` and
``oriented_rectangle`` (4 corners). Any other ``shape_type`` is read and left to the caller to
skip. Rasterisation reproduces ``labelme.utils.shape_to_mask`` pixel for pixel (Pillow
``ImageDraw`` with ``outline=1, fill=1``; lines 10 px wide, points of radius 5), so ``area`` and
``bbox`` equal those of labelme's own COCO example converter.

Two label names are reserved, as in labelme's ``labels.txt``:

- ``__ignore__`` marks an ignore region: 255 in semantic maps, void in panoptic maps, and
  DROPPED from COCO instances (instance files have no way to say "do not learn here").
- ``_background_`` is never a category.

Image size: ``imageData`` (embedded base64 image) wins over ``imagePath``; EXIF orientation is
applied, as Labelme does when it displays an image. An ``imagePath`` that resolves outside the
input folder is refused unless explicitly allowed, so a crafted annotation cannot make the
converter copy arbitrary files.
"""

import base64
import binascii
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageDraw

from d2seg.data.io import exif_orientation, image_pixels, open_image, read_json
from d2seg.errors import AnnotationError, ConfigError

IGNORE_LABEL = "__ignore__"
BACKGROUND_LABEL = "_background_"
RESERVED_LABELS = (IGNORE_LABEL, BACKGROUND_LABEL)

# labelme.utils.shape_to_mask defaults: lines are drawn 10 px wide, points as radius-5 disks.
LINE_WIDTH = 10
POINT_RADIUS = 5

# Shapes whose outline is a COCO polygon; the others are written as RLE.
POLYGON_SHAPE_TYPES = frozenset({"polygon", "rectangle", "oriented_rectangle"})
# shape_type -> (minimum, maximum) number of points; None = no maximum.
POINT_COUNTS: dict[str, tuple[int, int | None]] = {
    "polygon": (3, None),
    "rectangle": (2, 2),
    "oriented_rectangle": (4, 4),
    "circle": (2, 2),
    "line": (2, 2),
    "linestrip": (2, None),
    "point": (1, 1),
    "mask": (2, 2),
}
SUPPORTED_SHAPE_TYPES = tuple(POINT_COUNTS)


@dataclass
class LabelmeShape:
    """One entry of ``shapes``.

    Attributes:
        index: position in the file's ``shapes`` list (for messages: ``shapes[index]``).
        label: the label string, exactly as annotated.
        shape_type: ``polygon`` when the file has none (pre-3.x).
        points: float64 array K×2 of (x, y) pixel coordinates, all finite.
        group_id: shapes with the same (label, group_id) form one instance; None = alone.
        mask: for ``mask`` shapes, the bool crop h×w pasted at the first point; else None.
    """

    index: int
    label: str
    shape_type: str
    points: np.ndarray
    group_id: int | str | None
    mask: np.ndarray | None = None


@dataclass
class LabelmeAnnotation:
    """A parsed Labelme file.

    Attributes:
        path: the JSON file.
        shapes: its shapes, in file order (later shapes are drawn on top).
        image_path: ``imagePath`` with Windows separators turned into ``/``; None if absent.
        image_data: the decoded bytes of ``imageData``, or None.
        height, width: ``imageHeight``/``imageWidth`` when the file has them, else None.
    """

    path: Path
    shapes: list[LabelmeShape]
    image_path: str | None
    image_data: bytes | None
    height: int | None
    width: int | None


def _decode_base64(text: Any, where: str, what: str) -> bytes:
    if not isinstance(text, str):
        raise AnnotationError(
            f"{where}: {what} is a {type(text).__name__}, not a base64 string; fix: re-save the "
            f"file in Labelme"
        )
    try:
        return base64.b64decode(text)
    except (binascii.Error, ValueError) as e:
        raise AnnotationError(
            f"{where}: {what} is not valid base64 ({e}); fix: re-save the file in Labelme"
        ) from e


def _pixels(source: bytes | Path, where: str) -> np.ndarray:
    """Decoded, EXIF-oriented pixels (H×W or H×W×3 uint8) of an embedded or on-disk image."""
    image = open_image(source, where, error=AnnotationError)
    return image_pixels(image, where, error=AnnotationError)


def _bad_points(raw: Any, where: str) -> AnnotationError:
    return AnnotationError(
        f"{where}: 'points' must be a list of [x, y] number pairs, got {str(raw)[:60]}; fix: "
        f"correct the points or delete the shape"
    )


def _parse_points(raw: Any, where: str) -> np.ndarray:
    if not isinstance(raw, list) or not raw:
        raise _bad_points(raw, where)
    try:
        # numpy rejects ragged lists; the dtype check rejects strings, None and nested lists
        points = np.asarray(raw)
    except (ValueError, TypeError, OverflowError) as e:
        raise _bad_points(raw, where) from e
    if points.ndim != 2 or points.shape[1] != 2 or points.dtype.kind not in "iuf":
        raise _bad_points(raw, where)
    points = points.astype(np.float64)
    if not np.isfinite(points).all():
        raise AnnotationError(
            f"{where}: 'points' contains NaN or infinity; fix: redraw or delete the shape"
        )
    return points


def _parse_mask_crop(shape: dict, where: str) -> np.ndarray:
    data = _decode_base64(shape.get("mask"), where, "'mask'")
    pixels = _pixels(data, where)
    return pixels.any(axis=2) if pixels.ndim == 3 else pixels.astype(bool)


def _parse_shape(index: int, shape: Any, path: Path) -> LabelmeShape:
    where = f"{path}: shapes[{index}]"
    if not isinstance(shape, dict):
        raise AnnotationError(f"{where} is a {type(shape).__name__}, not an object; fix: delete it")
    label = shape.get("label")
    if not isinstance(label, str) or not label:
        raise AnnotationError(
            f"{where}: 'label' is {label!r}, expected a non-empty string; fix: set its label"
        )
    shape_type = shape.get("shape_type")
    if shape_type is None:
        shape_type = "polygon"  # pre-3.x files have only polygons
    if not isinstance(shape_type, str):
        raise AnnotationError(
            f"{where}: 'shape_type' is {shape_type!r}, expected one of "
            f"{', '.join(SUPPORTED_SHAPE_TYPES)}; fix: correct it"
        )
    points = _parse_points(shape.get("points"), where)
    if shape_type in POINT_COUNTS:
        low, high = POINT_COUNTS[shape_type]
        if len(points) < low or (high is not None and len(points) > high):
            expected = f"{low}" if low == high else f"at least {low}"
            raise AnnotationError(
                f"{where}: a {shape_type} needs {expected} point(s), this one has {len(points)}; "
                f"fix: redraw or delete the shape"
            )
    group_id = shape.get("group_id")
    if isinstance(group_id, bool) or not isinstance(group_id, (int, str, type(None))):
        raise AnnotationError(
            f"{where}: 'group_id' is {group_id!r}, expected an integer or null; fix: correct it"
        )
    mask = _parse_mask_crop(shape, where) if shape_type == "mask" else None
    return LabelmeShape(index, label, shape_type, points, group_id, mask)


def _optional_size(raw: dict, key: str, path: Path) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise AnnotationError(
            f"{path}: '{key}' is {value!r}, expected a positive integer; fix: correct it or "
            f"remove it (it is then read from the image)"
        )
    return value


def shape_list(raw: Any, path: str | Path) -> list:
    """The unvalidated ``shapes`` list of a decoded Labelme file (checks only the top level)."""
    if not isinstance(raw, dict):
        raise AnnotationError(
            f"{path}: the top level is a {type(raw).__name__}, not an object; fix: this is not a "
            f"Labelme file, move it out of the input folder"
        )
    if "shapes" not in raw:
        raise AnnotationError(
            f"{path}: no 'shapes' key, so this is not a Labelme file; fix: move it out of the "
            f"input folder, or add \"shapes\": [] for an image without objects"
        )
    shapes = raw["shapes"]
    if not isinstance(shapes, list):
        raise AnnotationError(
            f"{path}: 'shapes' is a {type(shapes).__name__}, not a list; fix: re-save the file in "
            f"Labelme"
        )
    return shapes


def parse_labelme(raw: Any, path: str | Path) -> LabelmeAnnotation:
    """Validate the decoded JSON of a Labelme file; raises AnnotationError naming what to fix."""
    path = Path(path)
    shapes = shape_list(raw, path)
    image_path = raw.get("imagePath")
    if image_path is not None and not isinstance(image_path, str):
        raise AnnotationError(
            f"{path}: 'imagePath' is {image_path!r}, expected a string; fix: set it to the "
            f"image's file name"
        )
    image_data = raw.get("imageData") or None  # some tools write "" for "not embedded"
    if image_data is not None:
        image_data = _decode_base64(image_data, str(path), "'imageData'")
    elif not image_path:
        raise AnnotationError(
            f"{path}: neither 'imageData' nor 'imagePath' says which image this is; fix: set "
            f"'imagePath' to the image's file name"
        )
    return LabelmeAnnotation(
        path=path,
        shapes=[_parse_shape(i, shape, path) for i, shape in enumerate(shapes)],
        image_path=PureWindowsPath(image_path).as_posix() if image_path else None,
        image_data=image_data,
        height=_optional_size(raw, "imageHeight", path),
        width=_optional_size(raw, "imageWidth", path),
    )


def load_json(path: str | Path) -> Any:
    """The decoded JSON of an annotation file; unreadable or invalid JSON raises AnnotationError."""
    return read_json(
        path,
        "annotation file",
        error=AnnotationError,
        fix="repair or delete the file (truncated files come from interrupted saves)",
        missing_fix="check the path",
    )


def read_labelme(path: str | Path) -> LabelmeAnnotation:
    """Read and validate one Labelme JSON file."""
    return parse_labelme(load_json(path), path)


def read_labels_file(path: str | Path) -> list[str]:
    """Category names of a labelme ``labels.txt``: one per line, in order.

    Blank lines and the reserved ``__ignore__`` and ``_background_`` lines are skipped.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"{path}: cannot read the labels file ({e}); fix: pass --labels a UTF-8 text file "
            f"with one class name per line"
        ) from e
    names = [line.strip() for line in lines]
    names = [n for n in names if n and n not in RESERVED_LABELS]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(
            f"{path}: label(s) listed twice: {', '.join(duplicates)}; fix: keep one line each"
        )
    if not names:
        raise ConfigError(f"{path}: no class names; fix: list one class name per line")
    return names


@dataclass
class LabelmeImage:
    """The image of a Labelme file.

    Attributes:
        height, width: size in pixels after EXIF orientation.
        pixels: decoded pixels (H×W or H×W×3 uint8) when they must be written from memory
            (embedded ``imageData`` or an EXIF-rotated file); None when ``path`` can be copied.
        path: the image file on disk, or None for embedded data.
    """

    height: int
    width: int
    pixels: np.ndarray | None
    path: Path | None


def resolve_image_path(
    annotation: LabelmeAnnotation, root: Path, allow_outside_root: bool
) -> tuple[Path, bool]:
    """The image file of ``annotation`` and whether it was found by its file name only.

    ``imagePath`` is relative to the JSON file. When it does not exist, the file of the same
    name next to the JSON is used (annotations moved from another machine, e.g. Windows paths).
    Raises AnnotationError when ``imagePath`` leaves ``root`` (unless allowed) or no image exists.
    """
    assert annotation.image_path is not None
    json_dir = annotation.path.parent
    candidate = (json_dir / annotation.image_path).resolve()
    if not allow_outside_root and not candidate.is_relative_to(root.resolve()):
        raise AnnotationError(
            f"{annotation.path}: imagePath '{annotation.image_path}' resolves outside the input "
            f"folder {root}; fix: move the image into the input folder and set imagePath to its "
            f"relative path, or pass --allow-outside-root if you trust this file"
        )
    if candidate.is_file():
        return candidate, False
    by_name = json_dir / PurePosixPath(annotation.image_path).name
    if by_name.is_file():
        return by_name, True
    raise AnnotationError(
        f"{annotation.path}: image '{annotation.image_path}' not found (looked at {candidate} "
        f"and {by_name}); fix: put the image there or correct imagePath"
    )


def load_image(annotation: LabelmeAnnotation, image_file: Path | None) -> LabelmeImage:
    """Open the image (embedded data when present, else ``image_file``) and check its size.

    Pixels are decoded only when they must be written from memory; otherwise only the header
    is read.
    """
    where = str(annotation.path)
    if annotation.image_data is not None:
        pixels = _pixels(annotation.image_data, where)
        height, width = pixels.shape[:2]
        path = None
    else:
        assert image_file is not None
        where = f"{annotation.path}: image {image_file}"
        image = open_image(image_file, where, error=AnnotationError)
        if exif_orientation(image) != 1:
            pixels = image_pixels(image, where, error=AnnotationError)
            height, width = pixels.shape[:2]
        else:  # upright: the file is copied as it is, only its header is read
            pixels = None
            width, height = image.size
        path = image_file
    if (annotation.height, annotation.width) != (None, None) and (
        annotation.height not in (None, height) or annotation.width not in (None, width)
    ):
        raise AnnotationError(
            f"{annotation.path}: imageHeight×imageWidth {annotation.height}×{annotation.width} "
            f"differ from the image's {height}×{width} (after EXIF orientation); fix: the JSON "
            f"belongs to another image: correct imagePath, or re-open and re-save it in Labelme"
        )
    return LabelmeImage(height, width, pixels, path)


def _paste_mask(shape: LabelmeShape, height: int, width: int) -> np.ndarray:
    """Paste a ``mask`` shape's crop with its top-left at int(points[0]), as labelme does."""
    assert shape.mask is not None
    out = np.zeros((height, width), dtype=bool)
    x0, y0 = (int(v) for v in shape.points[0])
    h, w = shape.mask.shape
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + h, height), min(x0 + w, width)
    if ys < ye and xs < xe:
        out[ys:ye, xs:xe] = shape.mask[ys - y0 : ye - y0, xs - x0 : xe - x0]
    return out


def rasterize_shape(shape: LabelmeShape, height: int, width: int) -> np.ndarray:
    """Bool mask H×W of one shape, identical to ``labelme.utils.shape_to_mask``.

    Parts outside the image are cut off. ``shape.shape_type`` must be a supported type.
    """
    if shape.shape_type == "mask":
        return _paste_mask(shape, height, width)
    canvas = PIL.Image.new("L", (width, height), 0)
    draw = PIL.ImageDraw.Draw(canvas)
    xy = [tuple(point) for point in shape.points.tolist()]
    kind = shape.shape_type
    if kind == "circle":
        (cx, cy), (px, py) = xy
        r = math.hypot(cx - px, cy - py)
        draw.ellipse(((cx - r, cy - r), (cx + r, cy + r)), outline=1, fill=1)
    elif kind == "rectangle":
        (x0, y0), (x1, y1) = xy
        draw.rectangle(
            ((min(x0, x1), min(y0, y1)), (max(x0, x1), max(y0, y1))), outline=1, fill=1
        )
    elif kind in ("line", "linestrip"):
        draw.line(xy, fill=1, width=LINE_WIDTH)
    elif kind == "point":
        ((cx, cy),) = xy
        draw.ellipse(
            ((cx - POINT_RADIUS, cy - POINT_RADIUS), (cx + POINT_RADIUS, cy + POINT_RADIUS)),
            outline=1,
            fill=1,
        )
    elif kind in ("polygon", "oriented_rectangle"):
        draw.polygon(xy, outline=1, fill=1)
    else:
        raise ValueError(f"unsupported shape_type {kind!r}")
    return np.asarray(canvas, dtype=bool)


def shape_polygon(shape: LabelmeShape) -> list[float]:
    """The COCO polygon ``[x1, y1, x2, y2, ...]`` of a polygon-like shape (not clipped).

    Rectangles become their 4 corners (clockwise from the top-left, whatever the corner order).
    """
    if shape.shape_type == "rectangle":
        (x0, y0), (x1, y1) = shape.points
        x0, x1 = sorted((float(x0), float(x1)))
        y0, y1 = sorted((float(y0), float(y1)))
        return [x0, y0, x1, y0, x1, y1, x0, y1]
    return shape.points.ravel().tolist()


def point_extent(shape: LabelmeShape) -> tuple[float, float, float, float]:
    """``(x_min, y_min, x_max, y_max)`` of the shape's points."""
    (x0, y0), (x1, y1) = shape.points.min(axis=0).tolist(), shape.points.max(axis=0).tolist()
    return x0, y0, x1, y1
