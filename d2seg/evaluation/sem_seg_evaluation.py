"""Semantic segmentation metrics from one confusion matrix over the non-ignored pixels.

Scale: the keys Detectron2 reports — ``mIoU, fwIoU, mACC, pACC, IoU-<class>, ACC-<class>,
BoundaryIoU-<class>`` (and the binary headline ``IoU``) — are percentages (×100). ``Dice, F1,
precision, recall, MCC`` and their ``-<class>`` variants are fractions (0..1; MCC -1..1), as
torchmetrics returns them.

IoU follows Detectron2's rule by default: a class absent from the ground truth has no IoU (NaN),
even where it is predicted, and is left out of mIoU. ``strict_iou=True``
(``TEST.SEM_SEG_STRICT_IOU``) scores such a class 0 and counts it, so false positives of absent
classes lower mIoU.
"""

import logging
import os
from typing import Any

import cv2
import numpy as np
import torch

from d2seg.config import CfgNode
from d2seg.data.io import read_sem_seg
from d2seg.errors import DatasetError
from d2seg.evaluation.evaluator import DatasetEvaluator, gather_to_main
from d2seg.modeling.postprocess import sem_seg_labels
from d2seg.utils.io import atomic_write_json

logger = logging.getLogger(__name__)
# A binary model's headline keys hold the foreground class's value (mIoU etc. stay two-class).
BINARY_HEADLINE = ("IoU", "Dice", "F1", "MCC", "precision", "recall")


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ratio, 0 where the denominator is 0 (torchmetrics' zero_division=0)."""
    out = np.zeros(np.broadcast(numerator, denominator).shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _mean(values: np.ndarray, valid: np.ndarray) -> float:
    return float(values[valid].mean()) if valid.any() else float("nan")


def multiclass_mcc(confusion: np.ndarray) -> float:
    """Gorodkin's R_K, the multi-class Matthews correlation of a K×K confusion matrix.

    Equals the binary MCC for K = 2; 0 when either marginal is concentrated on one class.
    """
    confusion = confusion.astype(np.float64)
    total, correct = confusion.sum(), np.trace(confusion)
    predicted, actual = confusion.sum(0), confusion.sum(1)
    covariance = correct * total - predicted @ actual
    denominator = np.sqrt((total**2 - predicted @ predicted) * (total**2 - actual @ actual))
    return float(covariance / denominator) if denominator > 0 else 0.0


def label_boundary(labels: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """Detectron2's ``_mask_to_boundary`` of an H×W label map: ``labels`` minus its grey-level
    erosion (3×3, ``max(1, round(dilation_ratio × image diagonal))`` times, zero border).
    Inside a region it is 0; within that distance of a change of label it is positive."""
    labels = labels.astype(np.uint8)
    height, width = labels.shape
    iterations = max(1, int(round(dilation_ratio * np.sqrt(height**2 + width**2))))
    padded = cv2.copyMakeBorder(labels, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), dtype=np.uint8), iterations=iterations)[1:-1, 1:-1]
    return labels - eroded


def boundary_iou(boundary_confusion: np.ndarray) -> np.ndarray:
    """Per class ×100 Boundary IoU from the (K+1)×(K+1) counts of (predicted, true) boundary
    values (Detectron2's ``BoundaryIoU-<class>``); NaN where the union is empty."""
    counts = boundary_confusion.astype(np.float64)
    tp = np.diag(counts)[:-1]
    pos_gt, pos_pred = counts[:-1, :-1].sum(0), counts[:-1, :-1].sum(1)
    union = pos_gt + pos_pred - tp
    iou = np.full(len(tp), np.nan)
    np.divide(tp, union, out=iou, where=union > 0)
    return iou * 100


def semantic_metrics(
    confusion: np.ndarray, class_names: list[str], *, strict_iou: bool = False
) -> dict[str, float]:
    """Metrics of a K×K pixel confusion matrix (row = ground truth, column = prediction).

    Per class (one-vs-rest): ``IoU`` = TP/(TP+FP+FN), ``ACC`` = recall, ``Dice`` = ``F1`` =
    2TP/(2TP+FP+FN), ``precision``, ``recall``, ``MCC``; NaN for a class absent from both
    ground truth and prediction (``ACC`` and — unless ``strict_iou`` — ``IoU`` NaN for a class
    absent from the ground truth, as Detectron2). Means are over the classes that are not NaN,
    like Detectron2's mIoU and torchmetrics' macro averages. ``fwIoU`` weights IoU by ground-truth pixel share; ``pACC`` is the pixel
    accuracy; ``MCC`` (the mean key) is the multi-class R_K, not a mean of per-class values.
    """
    confusion = confusion.astype(np.float64)
    tp = np.diag(confusion)
    gt_pixels, pred_pixels = confusion.sum(1), confusion.sum(0)
    fp, fn = pred_pixels - tp, gt_pixels - tp
    tn = confusion.sum() - tp - fp - fn
    present = gt_pixels + pred_pixels > 0
    in_gt = gt_pixels > 0
    per_class = {
        "IoU": _divide(tp, tp + fp + fn) * 100,
        "ACC": _divide(tp, gt_pixels) * 100,
        "Dice": _divide(2 * tp, 2 * tp + fp + fn),
        "precision": _divide(tp, tp + fp),
        "recall": _divide(tp, gt_pixels),
        "MCC": _divide(
            tp * tn - fp * fn, np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        ),
    }
    per_class["F1"] = per_class["Dice"]
    iou = per_class["IoU"]
    iou_valid = present if strict_iou else in_gt
    metrics = {
        "mIoU": _mean(iou, iou_valid),
        "fwIoU": float((iou * gt_pixels).sum() / gt_pixels.sum()) if in_gt.any() else float("nan"),
        "mACC": _mean(per_class["ACC"], in_gt),
        "pACC": float(tp.sum() / gt_pixels.sum() * 100) if in_gt.any() else float("nan"),
        "Dice": _mean(per_class["Dice"], present),
        "F1": _mean(per_class["F1"], present),
        "precision": _mean(per_class["precision"], present),
        "recall": _mean(per_class["recall"], present),
        "MCC": multiclass_mcc(confusion),
    }
    for key, values in per_class.items():
        valid = in_gt if key == "ACC" else iou_valid if key == "IoU" else present
        for k, name in enumerate(class_names):
            metrics[f"{key}-{name}"] = float(values[k]) if valid[k] else float("nan")
    return metrics


class SemSegEvaluator(DatasetEvaluator):
    """mIoU and friends of a model's ``sem_seg`` logits against ``sem_seg_file_name`` PNGs.

    Multi-class models output K×H×W logits (prediction = argmax). Binary models output one
    logit map 1×H×W (prediction = logit > 0 → classes {0, 1}); then ``IoU`` (×100), ``Dice``,
    ``F1``, ``MCC``, ``precision`` and ``recall`` are the foreground class's values, while
    ``mIoU``, ``fwIoU``, ``mACC`` and ``pACC`` stay two-class. See the module docstring for
    which keys are ×100.
    """

    def __init__(
        self,
        dataset_name: str | None = None,
        *,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        ignore_label: int | None = None,
        output_dir: str | os.PathLike | None = None,
        strict_iou: bool = False,
    ):
        """
        Args:
            dataset_name: registered dataset; gives ``stuff_classes`` and ``ignore_label``.
            num_classes: class count K (≥ 2; a binary model counts background + foreground);
                default ``len(class_names)``.
            class_names: names for the per-class keys; default the metadata's
                ``stuff_classes``, else ``class_0..class_{K-1}``.
            ignore_label: label value excluded from every metric (default 255).
            output_dir: where ``sem_seg_confusion.json`` (class names + K×K pixel counts,
                row = ground truth) is written by ``evaluate``; ``None``: not written.
            strict_iou: a class predicted but absent from the ground truth scores IoU 0 and
                counts in mIoU (default: NaN and left out, Detectron2's rule).
        """
        metadata = None
        if dataset_name is not None:
            from d2seg.data.catalog import MetadataCatalog

            metadata = MetadataCatalog.get(dataset_name)
            class_names = class_names or metadata.get("stuff_classes")
            ignore_label = metadata.get("ignore_label") if ignore_label is None else ignore_label
        if class_names is not None and len(class_names) == 1:
            class_names = ["background", *class_names]  # a binary dataset names only the object
        num_classes = num_classes or (len(class_names) if class_names else None)
        if not num_classes or num_classes < 2:
            raise DatasetError(
                f"SemSegEvaluator: dataset '{dataset_name}' gives no class count; fix: set "
                f"stuff_classes in its metadata or pass num_classes=K (2 for a binary model)"
            )
        self._num_classes = num_classes
        self._class_names = list(class_names or [f"class_{k}" for k in range(num_classes)])
        if len(self._class_names) != num_classes:
            raise DatasetError(
                f"SemSegEvaluator: {len(self._class_names)} class names for {num_classes} "
                f"classes; fix: give one name per class"
            )
        self._ignore_label = 255 if ignore_label is None else ignore_label
        self._output_dir = output_dir
        self._confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        self._boundary_confusion = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
        self._strict_iou = strict_iou
        self._binary = False

    @classmethod
    def from_config(
        cls, cfg: CfgNode, dataset_name: str, output_dir: str | os.PathLike | None = None
    ) -> dict[str, Any]:
        """Constructor arguments: ``MODEL.SEM_SEG_HEAD.IGNORE_VALUE`` as the ignore label."""
        return {
            "dataset_name": dataset_name,
            "ignore_label": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "output_dir": output_dir,
            "strict_iou": cfg.TEST.SEM_SEG_STRICT_IOU,
        }

    def reset(self) -> None:
        self._confusion = np.zeros_like(self._confusion)
        self._boundary_confusion = np.zeros_like(self._boundary_confusion)
        self._binary = False

    def _prediction(self, logits: torch.Tensor, source: str) -> np.ndarray:
        channels = logits.shape[0]
        if channels == 1 and self._num_classes == 2:
            self._binary = True
            return sem_seg_labels(logits).cpu().numpy()
        if channels != self._num_classes:
            raise DatasetError(
                f"{source}: the model outputs {channels} sem_seg channels but the dataset has "
                f"{self._num_classes} classes; fix: set MODEL.SEM_SEG_HEAD.NUM_CLASSES to match"
            )
        return sem_seg_labels(logits).cpu().numpy()

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            if "sem_seg" not in out:
                continue
            source = inp["sem_seg_file_name"]
            pred = self._prediction(out["sem_seg"].detach(), source)
            gt = read_sem_seg(source).astype(np.int64)
            if gt.shape != pred.shape:
                raise DatasetError(
                    f"{source}: label is {gt.shape[0]}x{gt.shape[1]} but the prediction is "
                    f"{pred.shape[0]}x{pred.shape[1]}; fix: the image's height/width in the "
                    f"dataset must match its label PNG"
                )
            valid = gt != self._ignore_label
            self._count_boundaries(np.where(valid, gt, self._num_classes), pred)
            gt, pred = gt[valid], pred[valid]
            if gt.size and (gt.min() < 0 or gt.max() >= self._num_classes):
                bad = int(gt[(gt < 0) | (gt >= self._num_classes)][0])
                raise DatasetError(
                    f"{source}: label value {bad} is not a class (0..{self._num_classes - 1}) "
                    f"nor the ignore label {self._ignore_label}; fix: relabel the PNG or set "
                    f"the dataset's stuff_classes / ignore_label"
                )
            k = self._num_classes
            self._confusion += np.bincount(gt * k + pred, minlength=k * k).reshape(k, k)

    def _count_boundaries(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Detectron2's boundary counts: ignored pixels are class K in ``gt``."""
        if gt.min() < 0 or gt.max() > self._num_classes:
            return  # process() names the bad label
        k = self._num_classes + 1
        b_gt, b_pred = label_boundary(gt), label_boundary(pred)
        codes = k * b_pred.reshape(-1).astype(np.int64) + b_gt.reshape(-1)
        self._boundary_confusion += np.bincount(codes, minlength=k * k).reshape(k, k)

    def evaluate(self) -> dict[str, Any]:
        gathered = gather_to_main([(self._confusion, self._boundary_confusion, self._binary)])
        if gathered is None:
            return {}
        self._confusion = sum(c for c, _, _ in gathered)
        self._boundary_confusion = sum(b for _, b, _ in gathered)
        self._binary = any(b for _, _, b in gathered)
        if not self._confusion.any():
            logger.warning("SemSegEvaluator: no labelled pixels were evaluated; metrics are NaN")
        if self._output_dir is not None:
            atomic_write_json(
                os.path.join(self._output_dir, "sem_seg_confusion.json"),
                {"class_names": self._class_names, "confusion": self._confusion.tolist()},
            )
        metrics = semantic_metrics(self._confusion, self._class_names,
                                   strict_iou=self._strict_iou)
        for name, value in zip(self._class_names, boundary_iou(self._boundary_confusion)):
            metrics[f"BoundaryIoU-{name}"] = float(value)
        if self._binary:
            foreground = self._class_names[1]
            metrics.update({key: metrics[f"{key}-{foreground}"] for key in BINARY_HEADLINE})
        return {"sem_seg": metrics}

    def report_inputs(self) -> dict[str, Any]:
        """The pixel confusion matrix and class names of the last evaluate."""
        return {"stuff_classes": self._class_names, "semantic_confusion": self._confusion}
