"""What ``tools/predict.py --input`` names: image files, folders, globs, ``.txt`` lists, videos,
converted COCO splits; and reading each image in the channels a model takes.

:func:`expand_inputs` turns the ``--input`` values into :class:`PredictionInput` items (in the
order given, folders walked recursively and sorted); a value that matches nothing is a
:class:`ConfigError` (a usage error), a file that cannot be used (unsupported, missing from a
list) is returned as a :class:`Skipped` entry so the rest is still processed. :func:`read_input`
decodes one image for a model of ``num_channels`` channels in ``input_format``.
"""

import glob
import itertools
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np

from d2seg.data.convert.layout import ConvertedLayout
from d2seg.data.io import read_image, read_json, read_raster
from d2seg.errors import ConfigError, D2SegError, DatasetError
from d2seg.utils.cli import user_message

PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif")
RASTER_EXTENSIONS = (".tif", ".tiff", ".npy")  # multi-band arrays, read as they are
IMAGE_EXTENSIONS = PHOTO_EXTENSIONS + RASTER_EXTENSIONS
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
_GLOB_CHARS = frozenset("*?[")


@dataclass
class PredictionInput:
    """One image or video to predict on.

    Attributes:
        path: the file.
        name: its output name without suffix, unique in a run (``sub/photo`` for
            ``folder/sub/photo.jpg``): ``overlays/<name>.png``, ``sem_seg/<name>.png``, ...
        kind: ``"image"`` or ``"video"``.
        image_id: the COCO ``image_id`` of ``predictions.json`` (the split's id when the input
            is a converted split's json, else its position from 1).
        camera: for ``--webcam N``: the OpenCV camera index (``path`` is then only a name).
    """

    path: Path
    name: str
    kind: str
    image_id: int = 0
    camera: int | None = None

    @classmethod
    def webcam(cls, index: int) -> "PredictionInput":
        """A live camera (a ``"video"`` without an end: it runs until ``max_frames`` or
        Ctrl-C)."""
        return cls(path=Path(f"webcam{index}"), name=f"webcam{index}", kind="video",
                   camera=index)


@dataclass
class Skipped:
    """An input that was not processed: the file and why (one line, with the fix)."""

    path: str
    reason: str


@dataclass
class ExpandedInputs:
    """The inputs to process, those refused before reading, and the COCO categories of a
    converted split given as input (``[{"id", "name"}]``; empty otherwise)."""

    items: list[PredictionInput] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    categories: list[dict] = field(default_factory=list)


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return None


def _folder_files(folder: Path) -> list[tuple[Path, str]]:
    """Images and videos under ``folder`` (recursive, sorted), named relative to it."""
    found = [p for p in folder.rglob("*") if p.is_file() and _kind(p) is not None]
    return [(p, p.relative_to(folder).with_suffix("").as_posix()) for p in sorted(found)]


def _list_file(path: Path) -> list[Path]:
    """The paths of a ``.txt`` list: one per line, relative to the list's folder; ``#``
    comments and blank lines ignored."""
    lines = path.read_text(encoding="utf-8").splitlines()
    entries = [line.strip() for line in lines]
    return [path.parent / e for e in entries if e and not e.startswith("#")]


def _split_json(path: Path, out: ExpandedInputs) -> list[tuple[Path, str, int]]:
    """The images of a converted split ``OUT/annotations/<split>.json`` (in ``OUT/images``)."""
    coco = read_json(path, "COCO annotation file")
    converted = ConvertedLayout.of_split(path)
    if not isinstance(coco, dict) or "images" not in coco or converted is None:
        raise ConfigError(
            f"--input {path}: a .json input must be a converted split OUT/annotations/<split>."
            f"json beside OUT/images; fix: pass the images themselves (a folder, a glob or a "
            f".txt list)"
        )
    images_dir = converted[0].images_dir
    out.categories = [{"id": c["id"], "name": c["name"]} for c in coco.get("categories", [])]
    return [(images_dir / im["file_name"], PurePosixPath(im["file_name"]).with_suffix("")
             .as_posix(), im["id"]) for im in coco["images"]]


def expand_inputs(values: Sequence[str]) -> ExpandedInputs:
    """The inputs named by ``--input`` values, in order, each file once.

    A value is a file (image, raster, video; a ``.txt`` list of paths; a converted split's
    ``.json``), a folder (its images and videos, recursively) or a glob (quoted, ``**``
    allowed). Raises :class:`ConfigError` when a value matches nothing.
    """
    out = ExpandedInputs()
    candidates: list[tuple[Path, str, int | None]] = []
    for value in values:
        path = Path(value)
        if path.is_dir():
            files = [(p, name, None) for p, name in _folder_files(path)]
        elif path.is_file() and path.suffix.lower() == ".txt":
            files = [(p, p.stem, None) for p in _list_file(path)]
        elif path.is_file() and path.suffix.lower() == ".json":
            files = _split_json(path, out)
        elif path.is_file():
            files = [(path, path.stem, None)]
        elif _GLOB_CHARS & set(value):
            # As in a folder, what a glob sweeps up besides images and videos is left alone.
            files = [(Path(p), Path(p).stem, None) for p in sorted(glob.glob(value, recursive=True))
                     if Path(p).is_file() and _kind(Path(p)) is not None]
        else:
            files = []
        if not files:
            raise ConfigError(
                f"--input {value} matched no image or video; fix: give an existing image, video, "
                f"folder, .txt list or a quoted glob such as 'photos/*.jpg'"
            )
        candidates.extend(files)
    seen_paths: set[str] = set()
    used_names: set[str] = set()
    for path, name, image_id in candidates:
        key = os.path.abspath(path)
        if key in seen_paths:
            continue
        seen_paths.add(key)
        kind = _kind(path)
        if not path.is_file():
            out.skipped.append(Skipped(str(path), "not found; fix: correct the path in the list "
                                                  "(or the split's file_name)"))
            continue
        if kind is None:
            out.skipped.append(Skipped(str(path), (
                f"unsupported file type '{path.suffix}'; fix: give images "
                f"({' '.join(IMAGE_EXTENSIONS)}) or videos ({' '.join(VIDEO_EXTENSIONS)})")))
            continue
        unique, n = name, 1
        while unique in used_names:
            n += 1
            unique = f"{name}_{n}"
        used_names.add(unique)
        image_id = len(out.items) + 1 if image_id is None else image_id
        out.items.append(PredictionInput(path, unique, kind, image_id))
    return out


def _match_bands(array: np.ndarray, path: Path, input_format: str, num_channels: int) -> np.ndarray:
    """``array`` (H×W×bands, RGB order for 3 bands) in the model's channels: 3 bands into a
    grayscale model are converted, 1 band into a colour model is repeated, other mismatches are
    a :class:`DatasetError`."""
    bands = array.shape[2]
    if bands == num_channels:
        return np.ascontiguousarray(array[:, :, ::-1]) if input_format == "BGR" else array
    if bands == 3 and num_channels == 1:
        return cv2.cvtColor(array, cv2.COLOR_RGB2GRAY)[:, :, None]
    if bands == 1 and num_channels == 3:
        return np.repeat(array, 3, axis=2)
    raise DatasetError(
        f"{path} has {bands} band(s) but the model takes {num_channels} channel(s); fix: "
        f"select the model's bands (e.g. numpy.save of array[:, :, :{num_channels}]) or use a "
        f"model trained on {bands}-band images"
    )


def read_input(path: Path, input_format: str, num_channels: int) -> np.ndarray:
    """One image as H×W×C in ``input_format`` (the model's ``INPUT.FORMAT``): uint8, or
    float32 for a raster of another dtype (its stored values, as training read it).

    Photos are converted to the model's colour space (a colour photo into a grayscale model
    becomes gray); rasters (``.tif``, ``.npy``, read by :func:`~d2seg.data.io.read_raster`) and
    the photos of an ``"N"`` model keep their bands, which must match ``num_channels`` (see
    :func:`_match_bands`). Unreadable files are a :class:`DatasetError` naming them.
    """
    if path.suffix.lower() in RASTER_EXTENSIONS:
        array = read_raster(path)
        if array.dtype != np.uint8 and input_format != "N":
            raise DatasetError(
                f"{path} holds {array.dtype} values but the model takes 0-255 pixels "
                f"(INPUT.FORMAT {input_format!r}); fix: save uint8 bands, or train an "
                f"INPUT.FORMAT 'N' model on these rasters (it reads their values as they are)"
            )
    elif input_format == "N":
        array = read_image(path, "N")
    else:
        return read_image(path, input_format)
    return _match_bands(array, path, input_format, num_channels)


def read_ahead(
    items: Sequence[PredictionInput], read: Callable[[PredictionInput], Any], workers: int,
    ahead: int,
) -> Iterator[tuple[PredictionInput, Any, str | None]]:
    """``(item, read(item), None)`` for each item in order, decoded by ``workers`` threads up
    to ``ahead`` items in advance (so decoding overlaps the model); ``(item, None, message)``
    when ``read`` raised a :class:`D2SegError` (the one-line message)."""
    pending: deque = deque()
    remaining = iter(items)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for item in itertools.islice(remaining, max(1, ahead)):
            pending.append((item, pool.submit(read, item)))
        while pending:
            item, future = pending.popleft()
            following = next(remaining, None)
            if following is not None:
                pending.append((following, pool.submit(read, following)))
            try:
                yield item, future.result(), None
            except D2SegError as e:
                yield item, None, user_message(e)
