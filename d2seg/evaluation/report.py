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
  (per-class IoU bars, sorted).

``plots=False`` writes ``results.json`` and ``report.md`` only (its tables, no figures): for runs
nobody reads the figures of, e.g. the trials of a hyper-parameter search, where drawing them
cost about a fifth of each trial.

Plots use matplotlib's Agg renderer (no display). Sizes in inches follow the class count and
the longest class name (:func:`figure_size_in`), with every text ≥ 8 pt at 100 dpi; the tables
label each metric's unit (``IoU (%)``, ``Dice (0–1)``).
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
from matplotlib.ticker import MaxNLocator

from d2seg.evaluation.coco_evaluation import AP_METRICS
from d2seg.evaluation.units import format_number, with_unit
from d2seg.utils.io import atomic_open, atomic_write_json
from d2seg.utils.plotting import DPI, bars_height_in, save_png, sorted_bars

PR_PANEL_IN = (2.6, 2.3)  # one class's precision–recall panel
PR_IOU_THRESHOLDS = (0.5, 0.75)
CONFUSION_CELL_IN = 0.2  # tick labels of 8 pt fit one per row/column
ANNOTATED_CELL_IN = 0.45  # room for "0.85" / "1234" in 8 pt inside each cell
MAX_ANNOTATED_CLASSES = 25
CONFUSION_RIGHT_IN, CONFUSION_TOP_IN = 1.4, 0.5  # colour bar and its label; title
CHAR_IN = 0.075  # width of one 8–9 pt character, for the margin of class names


def report_folder(output_dir: str | os.PathLike, dataset_name: str) -> Path:
    """``output_dir/inference/<dataset>``; a dataset given as a json path uses the file's stem."""
    name = Path(dataset_name).stem if dataset_name.endswith(".json") else dataset_name
    return Path(output_dir) / "inference" / re.sub(r"[^\w.+-]", "_", name)


def pr_columns(num_classes: int) -> int:
    """Panels per row of the PR-curve grid: 4, or 6 for many classes (a shorter page)."""
    return min(4 if num_classes <= 16 else 6, num_classes)


def _label_margin_in(labels: Sequence[str]) -> float:
    """Room for rotated or horizontal class names plus an axis label."""
    return 0.6 + CHAR_IN * max((len(label) for label in labels), default=1)


def _matrix_in(num_labels: int) -> float:
    cell = ANNOTATED_CELL_IN if num_labels <= MAX_ANNOTATED_CLASSES else CONFUSION_CELL_IN
    return max(3.0, cell * num_labels)


def figure_size_in(kind: str, labels: Sequence[str]) -> tuple[float, float]:
    """(width, height) in inches of a plot: ``"pr_curves"``, ``"confusion"`` or ``"iou_bars"``.

    ``labels`` are the classes drawn (for ``"confusion"`` including background); their count
    and longest name set the size, so that every text stays ≥ 8 pt at :data:`DPI`.
    """
    n = len(labels)
    if kind == "pr_curves":
        columns = pr_columns(n)
        return PR_PANEL_IN[0] * columns + 0.8, PR_PANEL_IN[1] * math.ceil(n / columns) + 1.2
    if kind == "confusion":
        matrix = _matrix_in(n) + _label_margin_in(labels)
        return matrix + CONFUSION_RIGHT_IN, matrix + CONFUSION_TOP_IN
    if kind == "iou_bars":
        return max(6.0, _label_margin_in(labels) + 5.0), bars_height_in(n)
    raise ValueError(f"unknown plot kind {kind!r}")


def _new_figure(kind: str, labels: Sequence[str], *, constrained: bool = True) -> Figure:
    """A figure of :func:`figure_size_in`. The PR grid and the confusion matrix place their
    axes by fixed margins instead: laying out 80 panels costs seconds per plot, and a layout
    engine would shrink a matrix's square cells to fit its long tick labels."""
    width, height = figure_size_in(kind, labels)
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained" if constrained else None)


def plot_pr_curves(coco_eval: Any, class_names: Sequence[str], path: Path) -> None:
    """One panel per class: precision vs recall at IoU 0.50 and 0.75 (area all, 100 dets)."""
    precision = coco_eval.eval["precision"]  # T×R×K×A×M
    recall = np.asarray(coco_eval.params.recThrs)
    iou_thresholds = np.asarray(coco_eval.params.iouThrs)
    figure = _new_figure("pr_curves", class_names, constrained=False)
    width, height = figure.get_size_inches()
    figure.subplots_adjust(left=0.8 / width, bottom=0.8 / height, right=1 - 0.15 / width,
                           top=1 - 0.6 / height, wspace=0.35, hspace=0.55)
    columns = pr_columns(len(class_names))
    rows = math.ceil(len(class_names) / columns)
    handles: list[Any] = []  # the two IoU lines of a class with ground truth, for the legend
    for k, name in enumerate(class_names):
        axes = figure.add_subplot(rows, columns, k + 1)
        for threshold in PR_IOU_THRESHOLDS:
            curve = precision[int(np.argmin(np.abs(iou_thresholds - threshold))), :, k, 0, -1]
            if (curve > -1).any():
                axes.plot(recall, np.clip(curve, 0, None), label=f"IoU {threshold:.2f}")
        if not axes.lines:
            axes.text(0.5, 0.5, "no ground truth", ha="center", va="center", fontsize=9)
        else:
            handles = axes.lines
        axes.set(xlim=(0, 1), ylim=(0, 1.02))
        axes.set_title(name, fontsize=9)
        axes.tick_params(labelsize=8)
    if handles:
        figure.legend(handles=handles, loc="upper right", ncols=len(handles), fontsize=9,
                      frameon=False)
    figure.supxlabel("recall", fontsize=10, y=0.15 / height, va="bottom")
    figure.supylabel("precision", fontsize=10, x=0.15 / width, ha="left")
    save_png(figure, path)


def plot_confusion(
    confusion: np.ndarray, labels: Sequence[str], path: Path, *, title: str, normalise: bool
) -> None:
    """A confusion matrix heat map (row = ground truth, column = prediction); each cell's value
    is written in it for up to :data:`MAX_ANNOTATED_CLASSES` labels."""
    values = confusion.astype(np.float64)
    if normalise:
        rows = values.sum(1, keepdims=True)
        values = np.divide(values, rows, out=np.zeros_like(values), where=rows > 0)
    figure = _new_figure("confusion", labels, constrained=False)
    width, height = figure.get_size_inches()
    margin, matrix = _label_margin_in(labels), _matrix_in(len(labels))
    axes = figure.add_axes((margin / width, margin / height, matrix / width, matrix / height))
    colorbar_axes = figure.add_axes(((margin + matrix + 0.2) / width,
                                     (margin + 0.2 * matrix) / height,
                                     0.2 / width, 0.6 * matrix / height))
    # Square-root colour scale: a few large cells (background, one frequent class) would
    # otherwise wash out every other count.
    image = axes.imshow(values, cmap="Blues", norm=PowerNorm(0.5, vmin=0), aspect="auto")
    colorbar = figure.colorbar(image, cax=colorbar_axes)
    colorbar.locator = MaxNLocator(4)  # linear ticks bunch up at the top of a √ scale
    colorbar.ax.tick_params(labelsize=8)
    colorbar.set_label("fraction of the row" if normalise else "count", fontsize=9)
    ticks = np.arange(len(labels))
    axes.set_xticks(ticks, labels, rotation=90, fontsize=8)
    axes.set_yticks(ticks, labels, fontsize=8)
    axes.set_xlabel("predicted", fontsize=10)
    axes.set_ylabel("ground truth", fontsize=10)
    axes.set_title(title, fontsize=10)
    if len(labels) <= MAX_ANNOTATED_CLASSES:
        for (i, j), value in np.ndenumerate(values):
            text = f"{value:.2f}" if normalise else str(int(value))
            axes.text(j, i, text, ha="center", va="center", fontsize=8,
                      color="white" if value > values.max() / 2 else "black")
    save_png(figure, path)


def plot_iou_bars(metrics: dict[str, float], class_names: Sequence[str], path: Path) -> None:
    """Per-class IoU (%) bars from the ``IoU-<class>`` keys of the sem_seg results, sorted best
    first (a class absent from ground truth and prediction is left out)."""
    values = {name: metrics[f"IoU-{name}"] for name in class_names
              if math.isfinite(metrics.get(f"IoU-{name}", float("nan")))}
    figure = _new_figure("iou_bars", class_names)
    sorted_bars(figure.add_subplot(), values, xlabel="IoU (%)", percent=True,
                title="per-class IoU")
    save_png(figure, path)


def _number(metrics: dict[str, float], key: str) -> str:
    return format_number(key, metrics.get(key, float("nan")))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in rows]
    return lines + [""]


def _metric_table(
    first: str, rows: Sequence[tuple[str, dict[str, float], str]], keys: Sequence[str]
) -> list[str]:
    """A table with one column per metric, headed with its unit (``IoU (%)``).

    ``rows``: (row label, metrics, key suffix) — a row reads ``metrics[key + suffix]``.
    """
    return _table([first, *map(with_unit, keys)],
                  [[label, *(_number(metrics, key + suffix) for key in keys)]
                   for label, metrics, suffix in rows])


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
    model: str = "",
    thing_classes: Sequence[str] | None = None,
    coco_evals: dict[str, Any] | None = None,
    instance_confusion: np.ndarray | None = None,
    stuff_classes: Sequence[str] | None = None,
    semantic_confusion: np.ndarray | None = None,
    plots: bool = True,
) -> Path:
    """Write ``report.md``, ``results.json`` and (with ``plots``) the plots into ``output_dir``.

    Args:
        results: evaluator results (``{"bbox": {...}, "segm": {...}, "sem_seg": {...},
            "panoptic_seg": {...}}``); every key present gets a section.
        dataset_name: shown in the title.
        model: which model was evaluated (e.g. "model_best.pth (iteration 40)"), shown under it.
        thing_classes: instance class names (contiguous order); default from ``AP-`` keys.
        coco_evals: task → COCOeval after ``accumulate`` (for the PR curves).
        instance_confusion: (C+1)×(C+1) counts, last row/column background.
        stuff_classes: semantic class names; default from the ``IoU-`` keys.
        semantic_confusion: K×K pixel counts.
        plots: draw the PNGs and link them from ``report.md``; ``False``: tables only.

    Returns the path of ``report.md``.
    """
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "results.json", _json_safe(results), indent=2)
    lines = [f"# Evaluation report{f': {dataset_name}' if dataset_name else ''}", ""]
    if model:
        lines += [f"Model: {model}", ""]
    coco_evals = coco_evals or {}
    tasks = [task for task in ("bbox", "segm") if task in results]
    if tasks:
        names = list(thing_classes or _names_from_keys(results[tasks[0]], "AP-"))
        lines += ["## Instances (COCO AP)", ""]
        lines += _metric_table("task", [(task, results[task], "") for task in tasks], AP_METRICS)
        lines += _table(["class", *(f"AP {task} (%)" for task in tasks)], [
            [name, *(_number(results[task], f"AP-{name}") for task in tasks)] for name in names
        ])
    for task in tasks:
        if plots and coco_evals.get(task) is not None:
            plot_pr_curves(coco_evals[task], names, folder / f"pr_curves_{task}.png")
            lines += [f"Precision–recall per class ({task}) at IoU 0.50 and 0.75: "
                      f"![pr curves {task}](pr_curves_{task}.png)", ""]
    if plots and instance_confusion is not None and thing_classes:
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
                  "IoU and ACC are percentages; Dice, precision and recall fractions (0–1); "
                  "MCC ranges −1…1.", ""]
        lines += _metric_table("", [("all", metrics, "")], headline)
        per_class_keys = ["IoU", "ACC", "Dice", "precision", "recall", "MCC"]
        lines += _metric_table("class", [(name, metrics, f"-{name}") for name in names],
                               per_class_keys)
        if plots:
            plot_iou_bars(metrics, names, folder / "semantic_iou.png")
            lines += ["![per-class IoU](semantic_iou.png)", ""]
        if plots and semantic_confusion is not None:
            plot_confusion(semantic_confusion, names, folder / "semantic_confusion.png",
                           title="pixels (row-normalised)", normalise=True)
            lines += ["![semantic confusion](semantic_confusion.png)", ""]
    if "panoptic_seg" in results:
        metrics = results["panoptic_seg"]
        lines += ["## Panoptic segmentation", ""]
        lines += _metric_table("", [(group, metrics, suffix) for group, suffix in
                                    (("all", ""), ("things", "_th"), ("stuff", "_st"))],
                               ["PQ", "SQ", "RQ"])
        names = _names_from_keys(metrics, "PQ-")
        lines += _metric_table("class", [(name, metrics, f"-{name}") for name in names],
                               ["PQ", "SQ", "RQ"])
    with atomic_open(folder / "report.md", "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return folder / "report.md"
