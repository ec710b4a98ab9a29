#!/usr/bin/env python
"""Print the headline results of training runs: one block per run folder.

    python tools/summarize_run.py output/demo/balloons_run output/demo/carvana_run

Reads ``OUTPUT_DIR/inference/<dataset>/results.json`` (written by every evaluation) and
``OUTPUT_DIR/metrics.json``; prints the summary metrics (per-class values are in report.md).
"""

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from d2seg.errors import DatasetError  # noqa: E402
from d2seg.utils.cli import run_cli  # noqa: E402


def summarize(run_dir: str) -> list[str]:
    """Lines describing one run folder: iterations, final loss, and each dataset's metrics."""
    inference = os.path.join(run_dir, "inference")
    if not os.path.isdir(inference):
        raise DatasetError(
            f"{run_dir} has no inference/ folder; fix: give a training OUTPUT_DIR that has "
            f"DATASETS.TEST, or run tools/train_net.py --eval-only on it"
        )
    lines = [f"{run_dir}"]
    metrics = os.path.join(run_dir, "metrics.json")
    if os.path.exists(metrics):
        with open(metrics, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
        losses = [r for r in records if "total_loss" in r]
        if losses:
            last = losses[-1]
            lines.append(f"  iterations: {last['iteration'] + 1}, final total_loss: "
                         f"{last['total_loss']:.4f}")
    for dataset in sorted(os.listdir(inference)):
        path = os.path.join(inference, dataset, "results.json")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
        for task, values in results.items():
            headline = ", ".join(
                f"{k} {v:.2f}" for k, v in values.items()
                if "-" not in k and isinstance(v, (int, float)) and math.isfinite(v)
            )
            lines.append(f"  {dataset} {task}: {headline}")
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
