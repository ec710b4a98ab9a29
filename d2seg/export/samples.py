"""Sample images an export is verified on: ``--samples``, else ``DATASETS.TEST``, else
deterministic synthetic scenes."""

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from d2seg.config import CfgNode
from d2seg.data.catalog import DatasetCatalog
from d2seg.data.datasets import resolve_dataset
from d2seg.data.io import read_image
from d2seg.data.synthetic import render_sample
from d2seg.errors import ConfigError, D2SegError

logger = logging.getLogger(__name__)

MAX_SAMPLES = 4
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".npy")


def _synthetic_images(cfg: CfgNode, height: int, width: int) -> list[np.ndarray]:
    """Deterministic synthetic scenes (``render_sample``) in ``INPUT.FORMAT``'s channels."""
    channels = len(cfg.MODEL.PIXEL_MEAN)
    images = []
    for index in range(MAX_SAMPLES):
        rgb = render_sample("balloons", seed=0, size=(height, width), index=index)["image"]
        if cfg.INPUT.FORMAT == "BGR":
            image = rgb[:, :, ::-1]
        elif cfg.INPUT.FORMAT == "RGB" and channels == 3:
            image = rgb
        else:
            gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None]
            image = np.repeat(gray, channels, axis=2)
        images.append(np.ascontiguousarray(image))
    return images


def _dataset_files(cfg: CfgNode) -> list[str]:
    """Image files of the first ``DATASETS.TEST`` set that resolves; [] when none does."""
    for name in cfg.DATASETS.TEST:
        try:
            records = DatasetCatalog.get(resolve_dataset(name))
        except D2SegError as e:
            logger.info(f"DATASETS.TEST {name!r} is not usable for export samples ({e})")
            continue
        files = [r["file_name"] for r in records[:MAX_SAMPLES] if os.path.isfile(r["file_name"])]
        if files:
            return files
    return []


def sample_images(
    cfg: CfgNode, samples_dir: str | os.PathLike | None, height: int, width: int
) -> tuple[list[np.ndarray], str]:
    """Up to ``MAX_SAMPLES`` uint8 H×W×C images in ``INPUT.FORMAT`` and where they came from:
    ``samples_dir`` (sorted image files) if given, else the ``DATASETS.TEST`` images when they
    resolve, else synthetic ``height``×``width`` scenes."""
    if samples_dir is not None:
        folder = Path(samples_dir)
        if not folder.is_dir():
            raise ConfigError(f"--samples {folder} is not a folder; fix: pass a folder of images")
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(
                f"--samples {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); fix: point "
                f"it at a folder of sample images, or leave it out to use DATASETS.TEST"
            )
        source = str(folder)
    else:
        files = _dataset_files(cfg)
        source = f"DATASETS.TEST {list(cfg.DATASETS.TEST)}"
    if not files:
        return _synthetic_images(cfg, height, width), "synthetic (d2seg.data.synthetic)"
    images = [read_image(f, cfg.INPUT.FORMAT) for f in files[:MAX_SAMPLES]]
    channels = len(cfg.MODEL.PIXEL_MEAN)
    for file, image in zip(files, images):
        if image.shape[2] != channels:
            raise ConfigError(
                f"sample image {file} has {image.shape[2]} channels but the model takes "
                f"{channels}; fix: pass --samples images that match INPUT.FORMAT"
            )
    return images, source


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 H×W×C → height×width×C (bilinear), what a deployed pipeline feeds a static graph."""
    if image.shape[:2] == (height, width):
        return image
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return resized.reshape(height, width, image.shape[2])


def letterbox_size(image_height: int, image_width: int, height: int, width: int
                   ) -> tuple[int, int]:
    """(h, w) of an image_height×image_width image resized with its aspect kept to fit in
    height×width (the region of the input, and of the model's output, that holds the image)."""
    scale = min(height / image_height, width / image_width)
    return (min(height, max(1, round(image_height * scale))),
            min(width, max(1, round(image_width * scale))))


def letterbox_image(image: np.ndarray, height: int, width: int, pad_value: float) -> np.ndarray:
    """uint8 H×W×C → height×width×C without distortion: resized (bilinear) with its aspect kept
    to :func:`letterbox_size`, placed top-left, the rest ``pad_value``. This is what the model
    saw in training: d2seg resizes keeping the aspect and pads bottom/right with 0 after
    normalisation, i.e. with ``MODEL.PIXEL_MEAN`` in pixel units (the value to pass)."""
    h, w = letterbox_size(image.shape[0], image.shape[1], height, width)
    out = np.full((height, width, image.shape[2]), np.clip(round(pad_value), 0, 255), np.uint8)
    out[:h, :w] = resize_image(image, h, w)
    return out
