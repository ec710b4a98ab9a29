#!/usr/bin/env python
"""Print the headline results of training runs: one block per run folder.

    python tools/summarize_run.py output/demo/balloons_run output/demo/carvana_run

Reads ``OUTPUT_DIR/metrics.json`` (the loss as the log showed it: the median of the last 20
iterations), ``OUTPUT_DIR/model_best.pth`` when there is one (the iteration it was saved at,
its metric, and that evaluation's headline numbers) and the final evaluation's
``OUTPUT_DIR/inference/<dataset>/results.json``. Percentages carry ``%``; Dice, precision,
recall and MCC are fractions. Per-class values are in each report.md.
"""

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from d2seg.checkpoint import load_checkpoint_file  # noqa: E402
from d2seg.errors import DatasetError  # noqa: E402
from d2seg.evaluation.units import format_number, unit  # noqa: E402
from d2seg.utils.cli import run_cli  # noqa: E402
from d2seg.utils.training_plots import Series, read_metrics  # noqa: E402


def _value(key: str, value: float) -> str:
    return f"{format_number(key, value)}{' %' if unit(key) == '%' else ''}"


def _headline(metrics: dict[str, float]) -> str:
    """``AP 40.00 %, AP50 75.50 %`` of one task's finite, non per-class metrics."""
    return ", ".join(f"{k} {_value(k, v)}" for k, v in metrics.items()
                     if "-" not in k and isinstance(v, (int, float)) and math.isfinite(v))


def _evaluation_at(series: dict[str, Series], iteration: int) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` put at ``iteration`` in metrics.json."""
    tasks: dict[str, dict[str, float]] = {}
    for key, (iterations, values) in series.items():
        task, _, metric = key.partition("/")
        if metric and task != "val" and iteration in iterations:
            tasks.setdefault(task, {})[metric] = values[iterations.index(iteration)]
    return tasks


def _best_model(run_dir: str, series: dict[str, Series], final_iter: int | None) -> list[str]:
    path = os.path.join(run_dir, "model_best.pth")
    if not os.path.exists(path):
        return []
    checkpoint = load_checkpoint_file(path)
    it = checkpoint["iteration"]
    # BestCheckpointer stores the watched metric under its own name, e.g. "segm/AP".
    metric = ", ".join(f"{k} {_value(k, v)}" for k, v in checkpoint.items()
                       if "/" in k and isinstance(v, float))
    lines = [f"  best model: {path}, saved at iteration {it + 1} with {metric}"]
    if it != final_iter:  # else the final evaluation below is the best model's
        lines += [f"    {task} at iteration {it + 1}: {_headline(values)}"
                  for task, values in _evaluation_at(series, it).items()]
    return lines


def summarize(run_dir: str) -> list[str]:
    """Lines describing one run folder: iterations, smoothed loss, best model, evaluations."""
    inference = os.path.join(run_dir, "inference")
    if not os.path.isdir(inference):
        raise DatasetError(
            f"{run_dir} has no inference/ folder; fix: give a training OUTPUT_DIR that has "
            f"DATASETS.TEST, or run tools/train_net.py --eval-only on it"
        )
    lines = [f"{run_dir}"]
    metrics_json = os.path.join(run_dir, "metrics.json")
    series = read_metrics(metrics_json) if os.path.exists(metrics_json) else {}
    final_iter = None
    if "total_loss" in series:
        iterations, losses = series["total_loss"]
        final_iter = iterations[-1]
        lines.append(f"  iterations: {final_iter + 1}, total_loss {losses[-1]:.4g} "
                     f"(median of the last 20 iterations, as the log shows)")
    lines += _best_model(run_dir, series, final_iter)
    # A training run evaluates its final model last; results.json may also come from --eval-only.
    evaluated_final = final_iter is not None and _evaluation_at(series, final_iter)
    final = f"model_final, iteration {final_iter + 1}" if evaluated_final else "last evaluation"
    for dataset in sorted(os.listdir(inference)):
        path = os.path.join(inference, dataset, "results.json")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
        for task, values in results.items():
            lines.append(f"  {dataset} {task} ({final}): {_headline(values)}")
        lines.append(f"  report: {os.path.join(inference, dataset, 'report.md')}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", help="OUTPUT_DIR of one or more runs")
    for run_dir in parser.parse_args().run_dirs:
        print("\n".join(summarize(run_dir)))
    return 0


if __name__ == "__main__":
    run_cli(main)
