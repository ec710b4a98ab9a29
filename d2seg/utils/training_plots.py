"""The plots of a run's ``metrics.json``: ``training_curves.png`` and ``per_class_metrics.png``.

``training_curves.png`` stacks panels over a shared iteration axis: the losses (``total_loss``
bold, each term thin, ``validation_loss`` dashed; metrics.json holds them as the median of the
last 20 iterations, the value the log line shows), the learning rate, and the headline
evaluation metrics — percentages and fractions on separate, labelled panels.

``per_class_metrics.png`` shows each task's per-class metric (``segm/AP-<class>``,
``sem_seg/IoU-<class>``, ...): one line per class over the evaluations when there are few
classes, otherwise the last evaluation as horizontal bars sorted by value, which stays
readable at 70 classes.

Sizes are in inches at ``plotting.DPI``, with text of at least 8 pt.
"""

import json
import math
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter

from d2seg.evaluation.units import base_metric, is_fraction, unit, with_unit
from d2seg.utils.events import is_training_loss
from d2seg.utils.plotting import DPI, bars_height_in, save_png, sorted_bars

WIDTH_IN = 11.0
LINE_PANEL_IN = 2.8
# Headline metrics drawn over training; the others (APs, fwIoU, ...) are in report.md.
HEADLINE_METRICS = ("AP", "AP50", "mIoU", "IoU", "PQ", "Dice", "MCC")
# The per-class metric of each task.
PER_CLASS_METRICS = {"bbox": "AP", "segm": "AP", "sem_seg": "IoU", "panoptic_seg": "PQ"}
MAX_CLASS_LINES = 10
BARS_WIDTH_IN = 6.0

Series = tuple[list[int], list[float]]


def read_metrics(metrics_json: str | os.PathLike) -> dict[str, Series]:
    """``name -> (iterations, values)`` of a metrics.json (JSON lines), sorted by iteration.

    A row written again for the same iteration (a resumed run repeats the iterations after its
    last checkpoint) replaces the earlier one.
    """
    by_name: dict[str, dict[int, float]] = {}
    with open(metrics_json, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            it = record.pop("iteration")
            for name, value in record.items():
                by_name.setdefault(name, {})[it] = value
    return {name: (sorted(values), [values[i] for i in sorted(values)])
            for name, values in by_name.items()}


def headline_keys(series: dict[str, Series]) -> list[str]:
    """Evaluation keys such as ``segm/AP`` or ``sem_seg/mIoU`` (never ``*-<class>``)."""
    return sorted(k for k in series if "/" in k and not k.startswith("val/")
                  and k.split("/", 1)[1] in HEADLINE_METRICS)


def per_class_groups(series: dict[str, Series]) -> dict[str, list[str]]:
    """``"segm/AP" -> ["segm/AP-balloon", ...]``: each task's per-class keys."""
    groups: dict[str, list[str]] = {}
    for key in sorted(series):
        task, _, metric = key.partition("/")
        if "-" in metric and PER_CLASS_METRICS.get(task) == base_metric(key):
            groups.setdefault(f"{task}/{base_metric(key)}", []).append(key)
    return groups


def _legend_outside(axes: Axes) -> None:
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)


def _plot_losses(axes: Axes, series: dict[str, Series]) -> None:
    # total_loss first, then the terms, validation_loss last: the legend reads top-down.
    names = sorted((k for k in series if is_training_loss(k)),
                   key=lambda n: (n != "total_loss", n == "validation_loss", n))
    for name in names:
        style = {"color": "black", "linewidth": 2.2} if name == "total_loss" else {"linewidth": 1.2}
        if name == "validation_loss":
            style = {"linestyle": "--", "marker": "o", "markersize": 4, "color": "tab:red"}
        axes.plot(*series[name], label=name, **style)
    values = [v for n in names for v in series[n][1] if math.isfinite(v)]
    # Loss terms often differ by 100× (box regression vs mask); a log axis keeps all readable.
    if values and min(values) > 0 and max(values) / min(values) > 30:
        axes.set_yscale("log")
    axes.set(title="losses (median of the last 20 iterations, as in the log)", ylabel="loss")
    _legend_outside(axes)


def _plot_metrics(axes: Axes, series: dict[str, Series], *, keys: Sequence[str], label: str
                  ) -> None:
    for key in keys:
        axes.plot(*series[key], marker="o", markersize=4, label=f"{key} ({unit(key)})")
    axes.set(title=f"evaluation ({label})", ylabel=label)
    _legend_outside(axes)


def _plot_lr(axes: Axes, series: dict[str, Series]) -> None:
    axes.plot(*series["lr"], color="tab:green", label="lr")
    axes.set(title="learning rate", ylabel="lr")
    axes.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))  # 0.02, not 2.0 × 1e−2
    _legend_outside(axes)


def plot_training_curves(series: dict[str, Series], output_png: str | os.PathLike) -> bool:
    """Write ``training_curves.png`` of ``name -> (iterations done, values)``; ``False``
    (nothing written) when there is no loss, LR or headline metric."""
    metrics = headline_keys(series)
    percents = [k for k in metrics if not is_fraction(k)]
    fractions = [k for k in metrics if is_fraction(k)]
    panels = [
        *([_plot_losses] if any(is_training_loss(k) for k in series) else []),
        *([_plot_lr] if "lr" in series else []),
        *([partial(_plot_metrics, keys=percents, label="%")] if percents else []),
        *([partial(_plot_metrics, keys=fractions, label="fraction, 0–1")] if fractions else []),
    ]
    if not panels:
        return False
    figure = Figure(figsize=(WIDTH_IN, LINE_PANEL_IN * len(panels)), dpi=DPI, layout="constrained")
    all_axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for axes, draw in zip(all_axes, panels):
        draw(axes, series)
        axes.grid(alpha=0.3)
    all_axes[-1].set_xlabel("iteration")
    save_png(figure, output_png)
    return True


def _class_name(key: str) -> str:
    return key.split("/", 1)[1].split("-", 1)[1]


def _plot_class_lines(axes: Axes, series: dict[str, Series], group: str, keys: list[str]) -> None:
    for key in keys:
        axes.plot(*series[key], marker="o", markersize=4, label=_class_name(key))
    axes.set(title=f"{group} per class", xlabel="iteration", ylabel=with_unit(group))
    axes.grid(alpha=0.3)
    _legend_outside(axes)


def _plot_class_bars(axes: Axes, series: dict[str, Series], group: str, keys: list[str]) -> None:
    last = max(series[k][0][-1] for k in keys)
    values = {_class_name(k): series[k][1][-1] for k in keys if series[k][0][-1] == last}
    sorted_bars(axes, values, xlabel=with_unit(group), percent=unit(group) == "%",
                title=f"{group} per class after {last} iterations (last evaluation)")


def plot_per_class_metrics(series: dict[str, Series], output_png: str | os.PathLike) -> bool:
    """Write ``per_class_metrics.png`` of ``name -> (iterations done, values)``; ``False``
    (nothing written) when there is no per-class metric."""
    groups = per_class_groups(series)
    if not groups:
        return False
    evaluations = {group: len({i for k in keys for i in series[k][0]})
                   for group, keys in groups.items()}
    as_lines = {group: len(keys) <= MAX_CLASS_LINES and evaluations[group] > 1
                for group, keys in groups.items()}
    heights = [LINE_PANEL_IN if as_lines[g] else bars_height_in(len(keys))
               for g, keys in groups.items()]
    if any(as_lines.values()):  # stacked, sharing the page width with their legends
        figure = Figure(figsize=(WIDTH_IN, sum(heights)), dpi=DPI, layout="constrained")
        all_axes = figure.subplots(len(groups), 1, squeeze=False,
                                   gridspec_kw={"height_ratios": heights})[:, 0]
    else:  # bars side by side (bbox and segm AP of the same classes) halve the height
        figure = Figure(figsize=(max(WIDTH_IN, BARS_WIDTH_IN * len(groups)), max(heights)),
                        dpi=DPI, layout="constrained")
        all_axes = figure.subplots(1, len(groups), squeeze=False)[0]
    for axes, (group, keys) in zip(all_axes, groups.items()):
        draw = _plot_class_lines if as_lines[group] else _plot_class_bars
        draw(axes, series, group, keys)
    save_png(figure, output_png)
    return True


def write_training_plots(output_dir: str | os.PathLike) -> list[Path]:
    """The plots of ``output_dir/metrics.json`` (those with something to show), written into
    ``output_dir``; none when there is no metrics.json."""
    folder = Path(output_dir)
    if not (folder / "metrics.json").exists():
        return []
    # x = iterations done, as the log counts them ("iter: 20/60"); metrics.json is 0-based.
    series = {k: ([i + 1 for i in its], values)
              for k, (its, values) in read_metrics(folder / "metrics.json").items()}
    plots = {"training_curves.png": plot_training_curves,
             "per_class_metrics.png": plot_per_class_metrics}
    return [folder / name for name, plot in plots.items() if plot(series, folder / name)]
