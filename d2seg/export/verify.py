"""Check exported ONNX graphs against the PyTorch model with onnxruntime, on sample images.

Each check returns a JSON-able dict of its numbers and raises :class:`ExportError` when the
graph disagrees with PyTorch beyond the tolerance. Sample images are uint8 H×W×C arrays in
``INPUT.FORMAT`` order (:func:`sample_images`).
"""

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch
from torch import nn
from torchvision.ops import box_iou

from d2seg.config import CfgNode
from d2seg.data.catalog import DatasetCatalog, resolve_dataset
from d2seg.data.detection_utils import read_image
from d2seg.data.synthetic import render_sample
from d2seg.errors import D2SegError, ExportError
from d2seg.export.onnx import INPUT_NAME
from d2seg.modeling.postprocess import detector_postprocess

logger = logging.getLogger(__name__)

MAX_SAMPLES = 4
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".npy")
LOGIT_ATOL = 1e-4
FP16_MIN_ARGMAX_AGREEMENT = 0.999
BOX_MIN_IOU = 0.99
SCORE_ATOL = 1e-3
_FIX = "fix: report the config as a d2seg export bug; nothing was written"


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
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) \
            if folder.is_dir() else []
        if not files:
            raise ExportError(
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
            raise ExportError(
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


def _session(path: str | os.PathLike) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime warns about every empty (0-detection) output
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _batch(images: list[np.ndarray]) -> np.ndarray:
    """Same-size uint8 H×W×C images → float32 N×C×H×W pixels 0-255 (the graph input)."""
    return np.stack([im.transpose(2, 0, 1) for im in images]).astype(np.float32)


@torch.no_grad()
def _torch_logits(model: nn.Module, images: list[np.ndarray]) -> np.ndarray:
    inputs = [{"image": torch.from_numpy(im.transpose(2, 0, 1).copy())} for im in images]
    return torch.stack([r["sem_seg"] for r in model(inputs)]).cpu().numpy()


def _labels(logits: np.ndarray) -> np.ndarray:
    """N×K×H×W logits → N×H×W labels: argmax over K, or ``logit > 0`` for one sigmoid logit."""
    return logits[:, 0] > 0 if logits.shape[1] == 1 else logits.argmax(axis=1)


def check_semantic(
    model: nn.Module, path: str | os.PathLike, batches: list[list[np.ndarray]]
) -> dict:
    """Max |Δlogit| of the fp32 graph at ``path`` vs PyTorch on each batch of same-size images;
    :class:`ExportError` above ``LOGIT_ATOL``."""
    session, worst, shapes = _session(path), 0.0, []
    for images in batches:
        onnx_logits = session.run(None, {INPUT_NAME: _batch(images)})[0]
        torch_logits = _torch_logits(model, images)
        if onnx_logits.shape != torch_logits.shape:
            raise ExportError(
                f"{path}: logits {onnx_logits.shape} from onnxruntime but {torch_logits.shape} "
                f"from PyTorch; {_FIX}"
            )
        worst = max(worst, float(np.abs(onnx_logits - torch_logits).max()))
        shapes.append(list(_batch(images).shape))
    if worst > LOGIT_ATOL:
        raise ExportError(
            f"{path}: max |Δlogit| {worst:.3g} between onnxruntime and PyTorch exceeds "
            f"{LOGIT_ATOL:g}; {_FIX}"
        )
    return {"graph": Path(path).name, "input_shapes": shapes, "max_abs_logit_diff": worst,
            "tolerance": LOGIT_ATOL}


def check_semantic_fp16(
    model: nn.Module, path: str | os.PathLike, batches: list[list[np.ndarray]]
) -> dict:
    """Share of pixels whose label (argmax, or sign for one logit) the fp16 graph at ``path``
    gives as PyTorch does; :class:`ExportError` below ``FP16_MIN_ARGMAX_AGREEMENT``."""
    session, agree, total = _session(path), 0, 0
    for images in batches:
        onnx_labels = _labels(session.run(None, {INPUT_NAME: _batch(images)})[0])
        torch_labels = _labels(_torch_logits(model, images))
        agree += int((onnx_labels == torch_labels).sum())
        total += torch_labels.size
    agreement = agree / total
    if agreement < FP16_MIN_ARGMAX_AGREEMENT:
        raise ExportError(
            f"{path}: fp16 labels agree with PyTorch on {agreement:.4%} of pixels, below "
            f"{FP16_MIN_ARGMAX_AGREEMENT:.1%}; fix: deploy the fp32 model.onnx (this model "
            f"is not fp16-safe)"
        )
    return {"graph": Path(path).name, "pixels": total, "argmax_agreement": agreement,
            "min_agreement": FP16_MIN_ARGMAX_AGREEMENT}


def _match_detections(expected: dict, actual: dict) -> tuple[int, float, float, float]:
    """Greedy one-to-one matching of PyTorch detections (by decreasing score) to ONNX ones of
    the same class → (unmatched, min box IoU, max |Δscore|, min mask IoU) over the matches."""
    ious = box_iou(expected["boxes"], actual["boxes"]) if len(actual["boxes"]) else None
    used: set[int] = set()
    unmatched, min_iou, max_score_diff, min_mask_iou = 0, 1.0, 0.0, 1.0
    for i in torch.argsort(expected["scores"], descending=True).tolist():
        candidates = [
            j for j in range(len(actual["boxes"]))
            if j not in used
            and int(actual["classes"][j]) == int(expected["classes"][i])
            and float(ious[i, j]) >= BOX_MIN_IOU
            and abs(float(actual["scores"][j] - expected["scores"][i])) <= SCORE_ATOL
        ]
        if not candidates:
            unmatched += 1
            continue
        j = max(candidates, key=lambda c: float(ious[i, c]))
        used.add(j)
        min_iou = min(min_iou, float(ious[i, j]))
        max_score_diff = max(max_score_diff, abs(float(actual["scores"][j] - expected["scores"][i])))
        if "masks" in expected:
            a, b = expected["masks"][i], actual["masks"][j]
            union = int((a | b).sum())
            min_mask_iou = min(min_mask_iou, int((a & b).sum()) / union if union else 1.0)
    return unmatched, min_iou, max_score_diff, min_mask_iou


@torch.no_grad()
def check_rcnn(model: nn.Module, path: str | os.PathLike, images: list[np.ndarray]) -> dict:
    """Every PyTorch detection on each image must have an ONNX detection of the same class with
    box IoU ≥ ``BOX_MIN_IOU`` and |Δscore| ≤ ``SCORE_ATOL``; :class:`ExportError` otherwise.
    ONNX outputs go through :func:`detector_postprocess` (pasted masks) as PyTorch's do."""
    session = _session(path)
    names = [o.name for o in session.get_outputs()]
    per_image = []
    for index, image in enumerate(images):
        height, width = image.shape[:2]
        expected = model([{"image": torch.from_numpy(image.transpose(2, 0, 1).copy())}])
        expected = {k: v.cpu() for k, v in expected[0]["instances"].items()}
        outputs = session.run(None, {INPUT_NAME: _batch([image])})
        actual = detector_postprocess(
            {name: torch.from_numpy(value) for name, value in zip(names, outputs)},
            (height, width), height, width,
        )
        unmatched, min_iou, max_score_diff, min_mask_iou = _match_detections(expected, actual)
        if unmatched:
            raise ExportError(
                f"{path}: sample {index} ({height}x{width}): {unmatched} of "
                f"{len(expected['scores'])} PyTorch detections have no onnxruntime detection of "
                f"the same class with box IoU ≥ {BOX_MIN_IOU} and |Δscore| ≤ {SCORE_ATOL}; {_FIX}"
            )
        per_image.append({
            "input_shape": [1, image.shape[2], height, width],
            "torch_detections": len(expected["scores"]),
            "onnx_detections": len(actual["scores"]),
            "min_box_iou": min_iou,
            "max_abs_score_diff": max_score_diff,
            "min_mask_iou": min_mask_iou,
        })
    return {
        "graph": Path(path).name,
        "min_box_iou": min(i["min_box_iou"] for i in per_image),
        "max_abs_score_diff": max(i["max_abs_score_diff"] for i in per_image),
        "box_iou_threshold": BOX_MIN_IOU,
        "score_tolerance": SCORE_ATOL,
        "images": per_image,
    }
