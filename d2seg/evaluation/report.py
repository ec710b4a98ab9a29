"""The evaluation report people read: ``report.md`` + ``results.json`` + PNG plots.

``write_report(results, folder, **evaluator.report_inputs())`` writes, each file atomically
(a later evaluation into the same folder replaces the previous report):

- ``results.json``: the results dict (NaN written as ``null``);
- ``report.md``: headline metrics and a table listing every class, per task, linking the plots;
- ``pr_curves_<bbox|segm>.png``: one panel per class, precision over recall at IoU 0.50 and
  0.75 (from ``COCOeval.eval["precision"]``, area "all", 100 detections);
- ``instance_confusion.png``: ground-truth class × predicted class (+ background) of the
  matched detections (``coco_evaluation.instance_confusion_matrix``);
- ``semantic_confusion.png`` (row-normalised pixel confusion) and ``semantic_iou.png``
  (per-class IoU bars).

Plots use matplotlib's Agg renderer (no display). Pixel sizes are fixed by the class count
(:func:`figure_size_px`), so a report's layout does not depend on the data.
"""

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

from d2seg.evaluation.coco_evaluation import AP_METRICS
from d2seg.utils.io import atomic_open, atomic_write_json

DPI = 100
PR_COLUMNS = 4
PR_IOU_THRESHOLDS = (0.5, 0.75)


def report_folder(output_dir: str | os.PathLike, dataset_name: str) -> Path:
    """``output_dir/inference/<dataset>``; a dataset given as a json path uses the file's stem."""
    name = Path(dataset_name).stem if dataset_name.endswith(".json") else dataset_name
    return Path(output_dir) / "inference" / re.sub(r"[^\w.+-]", "_", name)


def figure_size_px(kind: str, num_classes: int) -> tuple[int, int]:
    """(width, height) in pixels of a plot: ``"pr_curves"``, ``"confusion"`` or ``"iou_bars"``.

    ``num_classes`` counts the classes drawn (for ``"confusion"`` including background).
    """
    if kind == "pr_curves":
        columns = min(PR_COLUMNS, num_classes)
        return 300 * columns, 250 * math.ceil(num_classes / columns)
    if kind == "confusion":
        side = max(500, 40 * num_classes + 250)
        return side, side
    if kind == "iou_bars":
        return max(600, 40 * num_classes + 200), 450
    raise ValueError(f"unknown plot kind {kind!r}")


def _new_figure(kind: str, num_classes: int, margins_px: tuple[int, int, int, int]) -> Figure:
    """A figure of :func:`figure_size_px` with fixed (left, bottom, right, top) pixel margins.

    Fixed margins instead of ``tight_layout``: laying out a grid of 80 panels twice costs
    seconds per plot.
    """
    width, height = figure_size_px(kind, num_classes)
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    left, bottom, right, top = margins_px
    figure.subplots_adjust(left=left / width, bottom=bottom / height, right=1 - right / width,
                           top=1 - top / height, wspace=0.3, hspace=0.5)
    return figure


def _save(figure: Figure, path: Path) -> None:
    with atomic_open(path, "wb") as f:
        figure.savefig(f, format="png", dpi=DPI)


def plot_pr_curves(coco_eval: Any, class_names: Sequence[str], path: Path) -> None:
    """One panel per class: precision vs recall at IoU 0.50 and 0.75 (area all, 100 dets)."""
    precision = coco_eval.eval["precision"]  # T×R×K×A×M
    recall = np.asarray(coco_eval.params.recThrs)
    iou_thresholds = np.asarray(coco_eval.params.iouThrs)
    figure = _new_figure("pr_curves", len(class_names), (60, 50, 15, 30))
    columns = min(PR_COLUMNS, len(class_names))
    rows = math.ceil(len(class_names) / columns)
    for k, name in enumerate(class_names):
        axes = figure.add_subplot(rows, columns, k + 1)
        for threshold in PR_IOU_THRESHOLDS:
            curve = precision[int(np.argmin(np.abs(iou_thresholds - threshold))), :, k, 0, -1]
            if (curve > -1).any():
                axes.plot(recall, np.clip(curve, 0, None), label=f"IoU {threshold:.2f}")
        if not axes.lines:
            axes.text(0.5, 0.5, "no ground truth", ha="center", va="center")
        else:
            axes.legend(fontsize=6, loc="lower left")
        axes.set(xlim=(0, 1), ylim=(0, 1.02))
        axes.set_title(name, fontsize=8)
        axes.tick_params(labelsize=6)
    figure.supxlabel("recall", fontsize=8)
    figure.supylabel("precision", fontsize=8)
    _save(figure, path)


def plot_confusion(
    confusion: np.ndarray, labels: Sequence[str], path: Path, *, title: str, normalise: bool
) -> None:
    """A confusion matrix heat map (row = ground truth, column = prediction)."""
    values = confusion.astype(np.float64)
    if normalise:
        rows = values.sum(1, keepdims=True)
        values = np.divide(values, rows, out=np.zeros_like(values), where=rows > 0)
    figure = _new_figure("confusion", len(labels), (170, 170, 90, 40))
    axes = figure.add_subplot()
    # Square-root colour scale: a few large cells (background, one frequent class) would
    # otherwise wash out every other count.
    image = axes.imshow(values, cmap="Blues", norm=PowerNorm(0.5, vmin=0))
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    ticks = np.arange(len(labels))
    axes.set_xticks(ticks, labels, rotation=90, fontsize=7)
    axes.set_yticks(ticks, labels, fontsize=7)
    axes.set(xlabel="predicted", ylabel="ground truth", title=title)
    if len(labels) <= 25:
        for (i, j), value in np.ndenumerate(values):
            text = f"{value:.2f}" if normalise else str(int(value))
            axes.text(j, i, text, ha="center", va="center", fontsize=6,
                      color="white" if value > values.max() / 2 else "black")
    _save(figure, path)


def plot_iou_bars(metrics: dict[str, float], class_names: Sequence[str], path: Path) -> None:
    """Per-class IoU (%) bars from the ``IoU-<class>`` keys of the sem_seg results."""
    values = [metrics.get(f"IoU-{name}", float("nan")) for name in class_names]
    figure = _new_figure("iou_bars", len(class_names), (70, 150, 20, 40))
    axes = figure.add_subplot()
    axes.bar(range(len(values)), np.nan_to_num(values))
    axes.set_xticks(range(len(values)), class_names, rotation=90, fontsize=7)
    axes.set(ylim=(0, 100), ylabel="IoU (%)", title="per-class IoU")
    _save(figure, path)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _per_class_rows(
    metrics: dict[str, float], names: Sequence[str], keys: Sequence[str]
) -> list[list[Any]]:
    return [[name, *(metrics.get(f"{key}-{name}", float("nan")) for key in keys)]
            for name in names]


def _names_from_keys(metrics: dict[str, float], prefix: str) -> list[str]:
    return [key[len(prefix):] for key in metrics if key.startswith(prefix)]


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_report(
    results: dict[str, dict[str, float]],
    output_dir: str | os.PathLike,
    *,
    dataset_name: str = "",
    thing_classes: Sequence[str] | None = None,
    coco_evals: dict[str, Any] | None = None,
    instance_confusion: np.ndarray | None = None,
    stuff_classes: Sequence[str] | None = None,
    semantic_confusion: np.ndarray | None = None,
) -> Path:
    """Write ``report.md``, ``results.json`` and the plots into ``output_dir``.

    Args:
        results: evaluator results (``{"bbox": {...}, "segm": {...}, "sem_seg": {...},
            "panoptic_seg": {...}}``); every key present gets a section.
        dataset_name: shown in the title.
        thing_classes: instance class names (contiguous order); default from ``AP-`` keys.
        coco_evals: task → COCOeval after ``accumulate`` (for the PR curves).
        instance_confusion: (C+1)×(C+1) counts, last row/column background.
        stuff_classes: semantic class names; default from the ``IoU-`` keys.
        semantic_confusion: K×K pixel counts.

    Returns the path of ``report.md``.
    """
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "results.json", _json_safe(results), indent=2)
    lines = [f"# Evaluation report{f': {dataset_name}' if dataset_name else ''}", ""]
    coco_evals = coco_evals or {}
    tasks = [task for task in ("bbox", "segm") if task in results]
    if tasks:
        names = list(thing_classes or _names_from_keys(results[tasks[0]], "AP-"))
        lines += ["## Instances (COCO AP, %)", ""]
        lines += _table(["", *AP_METRICS],
                        [[task, *(results[task].get(k, float("nan")) for k in AP_METRICS)]
                         for task in tasks])
        lines += _table(["class", *(f"AP {task}" for task in tasks)], [
            [name, *(results[task].get(f"AP-{name}", float("nan")) for task in tasks)]
            for name in names
        ])
    for task in tasks:
        if coco_evals.get(task) is not None:
            plot_pr_curves(coco_evals[task], names, folder / f"pr_curves_{task}.png")
            lines += [f"Precision–recall per class ({task}) at IoU 0.50 and 0.75: "
                      f"![pr curves {task}](pr_curves_{task}.png)", ""]
    if instance_confusion is not None and thing_classes:
        labels = [*thing_classes, "background"]
        plot_confusion(instance_confusion, labels, folder / "instance_confusion.png",
                       title="instances (IoU ≥ 0.5, score ≥ 0.5)", normalise=False)
        lines += ["## Instance confusion matrix", "",
                  "Detections with score ≥ 0.5 matched to ground truth of any class by IoU ≥ "
                  "0.5; background row = false positives, background column = missed objects.",
                  "", "![instance confusion](instance_confusion.png)", ""]
    if "sem_seg" in results:
        metrics = results["sem_seg"]
        names = list(stuff_classes or _names_from_keys(metrics, "IoU-"))
        headline = [k for k in ("IoU", "mIoU", "fwIoU", "mACC", "pACC", "Dice", "F1",
                                "precision", "recall", "MCC") if k in metrics]
        lines += ["## Semantic segmentation", "",
                  "IoU/ACC columns in %, Dice/precision/recall/MCC as fractions.", ""]
        lines += _table(headline, [[metrics[k] for k in headline]])
        per_class_keys = ["IoU", "ACC", "Dice", "precision", "recall", "MCC"]
        lines += _table(["class", *per_class_keys],
                        _per_class_rows(metrics, names, per_class_keys))
        plot_iou_bars(metrics, names, folder / "semantic_iou.png")
        lines += ["![per-class IoU](semantic_iou.png)", ""]
        if semantic_confusion is not None:
            plot_confusion(semantic_confusion, names, folder / "semantic_confusion.png",
                           title="pixels (row-normalised)", normalise=True)
            lines += ["![semantic confusion](semantic_confusion.png)", ""]
    if "panoptic_seg" in results:
        metrics = results["panoptic_seg"]
        lines += ["## Panoptic segmentation (%)", ""]
        lines += _table(["", "PQ", "SQ", "RQ"], [
            [group, *(metrics.get(f"{k}{suffix}", float("nan")) for k in ("PQ", "SQ", "RQ"))]
            for group, suffix in (("all", ""), ("things", "_th"), ("stuff", "_st"))
        ])
        names = _names_from_keys(metrics, "PQ-")
        lines += _table(["class", "PQ", "SQ", "RQ"],
                        _per_class_rows(metrics, names, ["PQ", "SQ", "RQ"]))
    with atomic_open(folder / "report.md", "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return folder / "report.md"
