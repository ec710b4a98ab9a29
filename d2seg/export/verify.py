"""Check exported ONNX graphs against the PyTorch model with onnxruntime, on sample images.

Each check returns a JSON-able dict of its numbers and raises :class:`ExportError` when the
graph disagrees with PyTorch beyond the tolerance. Images are uint8 H×W×C arrays in
``INPUT.FORMAT`` order (:func:`d2seg.export.samples.sample_images`).
"""

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn
from torchvision.ops import box_iou

from d2seg.errors import ExportError
from d2seg.export.onnx import INPUT_NAME
from d2seg.modeling.postprocess import detector_postprocess

LOGIT_ATOL = 1e-4
FP16_MIN_ARGMAX_AGREEMENT = 0.999
_FIX = "fix: report the config as a d2seg export bug; nothing was written"


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
        batch = _batch(images)
        onnx_logits = session.run(None, {INPUT_NAME: batch})[0]
        torch_logits = _torch_logits(model, images)
        if onnx_logits.shape != torch_logits.shape:
            raise ExportError(
                f"{path}: logits {onnx_logits.shape} from onnxruntime but {torch_logits.shape} "
                f"from PyTorch; {_FIX}"
            )
        worst = max(worst, float(np.abs(onnx_logits - torch_logits).max()))
        shapes.append(list(batch.shape))
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


@dataclass(frozen=True)
class DetectionTolerance:
    """When an ONNX detection matches a PyTorch one (same class, box IoU ≥ ``min_box_iou``,
    |Δscore| ≤ ``score_atol``), and the share of PyTorch detections that must match."""

    min_box_iou: float
    score_atol: float
    min_matched: float


FP32_TOLERANCE = DetectionTolerance(min_box_iou=0.99, score_atol=1e-3, min_matched=1.0)
# An fp16 trunk moves boxes and scores slightly; near-tied detections at the score threshold or
# the per-image limit may swap, hence not every detection must match.
FP16_TOLERANCE = DetectionTolerance(min_box_iou=0.9, score_atol=0.02, min_matched=0.95)


def _match_detections(
    expected: dict, actual: dict, tolerance: DetectionTolerance
) -> tuple[int, float, float, float]:
    """Greedy one-to-one matching of PyTorch detections (by decreasing score) to ONNX ones →
    (unmatched, min box IoU, max |Δscore|, min mask IoU) over the matches."""
    ious = box_iou(expected["boxes"], actual["boxes"])
    used: set[int] = set()
    unmatched, min_iou, max_score_diff, min_mask_iou = 0, 1.0, 0.0, 1.0
    for i in torch.argsort(expected["scores"], descending=True).tolist():
        score_diffs = (actual["scores"] - expected["scores"][i]).abs()
        candidates = [
            j for j in range(len(actual["boxes"]))
            if j not in used
            and int(actual["classes"][j]) == int(expected["classes"][i])
            and float(ious[i, j]) >= tolerance.min_box_iou
            and float(score_diffs[j]) <= tolerance.score_atol
        ]
        if not candidates:
            unmatched += 1
            continue
        j = max(candidates, key=lambda c: float(ious[i, c]))
        used.add(j)
        min_iou = min(min_iou, float(ious[i, j]))
        max_score_diff = max(max_score_diff, float(score_diffs[j]))
        if "masks" in expected:
            a, b = expected["masks"][i], actual["masks"][j]
            union = int((a | b).sum())
            min_mask_iou = min(min_mask_iou, int((a & b).sum()) / union if union else 1.0)
    return unmatched, min_iou, max_score_diff, min_mask_iou


@torch.no_grad()
def check_rcnn(
    model: nn.Module,
    path: str | os.PathLike,
    images: list[np.ndarray],
    tolerance: DetectionTolerance = FP32_TOLERANCE,
) -> dict:
    """Match each image's PyTorch detections to the graph's (:class:`DetectionTolerance`);
    :class:`ExportError` when fewer than ``tolerance.min_matched`` of them match. ONNX outputs
    go through :func:`detector_postprocess` (pasted masks) as PyTorch's do."""
    session = _session(path)
    names = [o.name for o in session.get_outputs()]
    per_image = []
    for image in images:
        height, width = image.shape[:2]
        expected = model([{"image": torch.from_numpy(image.transpose(2, 0, 1).copy())}])
        expected = {k: v.cpu() for k, v in expected[0]["instances"].items()}
        outputs = session.run(None, {INPUT_NAME: _batch([image])})
        actual = detector_postprocess(
            {name: torch.from_numpy(value) for name, value in zip(names, outputs)},
            (height, width), height, width,
        )
        unmatched, min_iou, max_score_diff, min_mask_iou = _match_detections(
            expected, actual, tolerance
        )
        per_image.append({
            "input_shape": [1, image.shape[2], height, width],
            "torch_detections": len(expected["scores"]),
            "onnx_detections": len(actual["scores"]),
            "unmatched": unmatched,
            "min_box_iou": min_iou,
            "max_abs_score_diff": max_score_diff,
            "min_mask_iou": min_mask_iou,
        })
    total = sum(i["torch_detections"] for i in per_image)
    matched = 1.0 - sum(i["unmatched"] for i in per_image) / total if total else 1.0
    if matched < tolerance.min_matched:
        raise ExportError(
            f"{path}: only {matched:.1%} of {total} PyTorch detections on {len(images)} sample "
            f"images have an onnxruntime detection of the same class with box IoU ≥ "
            f"{tolerance.min_box_iou} and |Δscore| ≤ {tolerance.score_atol} (needed "
            f"{tolerance.min_matched:.0%}); {_FIX}"
        )
    return {
        "graph": Path(path).name,
        "matched": matched,
        "min_box_iou": min(i["min_box_iou"] for i in per_image),
        "max_abs_score_diff": max(i["max_abs_score_diff"] for i in per_image),
        "tolerance": asdict(tolerance),
        "images": per_image,
    }
