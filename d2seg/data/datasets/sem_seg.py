"""Images + per-pixel label PNGs as datasets: :func:`load_sem_seg` and :func:`register_sem_seg`."""

import functools
import logging
import os
from pathlib import Path

from d2seg.data.catalog import DatasetCatalog, MetadataCatalog
from d2seg.errors import DatasetError

logger = logging.getLogger(__name__)


def _files_by_stem(root: Path, ext: str) -> dict[str, Path]:
    """Files ``*.ext`` under ``root``, keyed by their relative path without the extension."""
    return {p.relative_to(root).with_suffix("").as_posix(): p for p in root.rglob(f"*.{ext}")}


def load_sem_seg(
    gt_root: str | os.PathLike,
    image_root: str | os.PathLike,
    gt_ext: str = "png",
    image_ext: str = "jpg",
) -> list[dict]:
    """Pair images with label PNGs by relative path without extension.

    Returns ``[{file_name, sem_seg_file_name}]`` (absolute paths), sorted by file name; the
    label PNG holds uint8 class ids per pixel (255 = ignore). Unpaired files are logged.
    """
    gt_root, image_root = Path(gt_root).resolve(), Path(image_root).resolve()
    for what, root in (("image_root", image_root), ("gt_root", gt_root)):
        if not root.is_dir():
            raise DatasetError(f"sem_seg {what} {root} is not a folder; fix: correct the path")
    images, labels = _files_by_stem(image_root, image_ext), _files_by_stem(gt_root, gt_ext)
    paired = sorted(images.keys() & labels.keys())
    if not paired:
        raise DatasetError(
            f"no '*.{image_ext}' under {image_root} has a '*.{gt_ext}' label with the same "
            f"relative path under {gt_root}; fix: check the folders and image_ext/gt_ext"
        )
    unpaired = len(images) + len(labels) - 2 * len(paired)
    if unpaired:
        logger.warning("%d images/labels under %s have no partner; ignored", unpaired, gt_root)
    return [{"file_name": str(images[k]), "sem_seg_file_name": str(labels[k])} for k in paired]


def register_sem_seg(
    name: str,
    image_root: str | os.PathLike,
    gt_root: str | os.PathLike,
    image_ext: str = "jpg",
    gt_ext: str = "png",
    *,
    metadata: dict | None = None,
) -> None:
    """Register images + per-pixel label PNGs.

    Metadata: ``image_root`` and ``sem_seg_root`` (= ``gt_root``) from the arguments,
    ``ignore_label`` 255 unless ``metadata`` says otherwise, and everything in ``metadata``
    (e.g. ``stuff_classes``, ``ignore_label``).
    """
    DatasetCatalog.register(
        name, functools.partial(load_sem_seg, str(gt_root), str(image_root), gt_ext, image_ext)
    )
    MetadataCatalog.get(name).set(image_root=str(image_root), sem_seg_root=str(gt_root)).set(
        **{"ignore_label": 255, **(metadata or {})}
    )
