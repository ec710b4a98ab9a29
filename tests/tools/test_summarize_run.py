"""tools/summarize_run.py: the headline numbers of a run folder, one block per run."""

import json
import logging
import re
import subprocess
import sys

from torch import nn

from d2seg.checkpoint import D2SegCheckpointer
from d2seg.utils.events import EventStorage, JSONWriter, ProgressWriter


def run(repo_root, *args):
    return subprocess.run(
        [sys.executable, str(repo_root / "tools" / "summarize_run.py"), *map(str, args)],
        capture_output=True, text=True, timeout=60,
    )


def write_rows(path, *rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_prints_summary_metrics_with_units_without_per_class_values(repo_root, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "inference" / "val").mkdir(parents=True)
    write_rows(run_dir / "metrics.json", {"iteration": 9, "total_loss": 0.5},
               {"iteration": 9, "segm/AP": 40.0})
    results = {"segm": {"AP": 40.0, "AP50": 75.5, "APs": None, "AP-balloon": 40.0},
               "sem_seg": {"mIoU": 80.0, "Dice": 0.9123, "MCC": 0.85}}
    (run_dir / "inference" / "val" / "results.json").write_text(json.dumps(results))
    done = run(repo_root, run_dir)
    assert done.returncode == 0, done.stderr
    assert "iterations: 10, total_loss 0.5 (median of the last 20 iterations" in done.stdout
    assert "val segm (model_final, iteration 10): AP 40.00 %, AP50 75.50 %\n" in done.stdout
    assert ("val sem_seg (model_final, iteration 10): mIoU 80.00 %, Dice 0.912, MCC 0.850"
            in done.stdout)
    assert "AP-balloon" not in done.stdout and "nan" not in done.stdout.lower()


def test_total_loss_is_the_one_the_last_log_line_showed(repo_root, tmp_path, caplog):
    run_dir = tmp_path / "run"
    (run_dir / "inference").mkdir(parents=True)
    storage = EventStorage()
    writer = JSONWriter(str(run_dir / "metrics.json"))
    progress = ProgressWriter(40, use_bar=False)
    with caplog.at_level(logging.INFO, logger="d2seg.utils.events"):
        for it in range(40):
            storage.iter = it
            storage.put_scalar("total_loss", 9.0 if it % 4 == 0 else 1.0 + it / 1000)
            if (it + 1) % 20 == 0:
                writer.write(storage)
                progress.write(storage)
    logged = re.findall(r"total_loss: (\S+)", caplog.text)[-1]
    done = run(repo_root, run_dir)
    assert done.returncode == 0, done.stderr
    assert f"total_loss {logged} " in done.stdout
    assert "total_loss 9" not in done.stdout  # not the raw value of the last iteration


def test_describes_model_best_iteration_and_metric(repo_root, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "inference" / "val").mkdir(parents=True)
    write_rows(run_dir / "metrics.json",
               {"iteration": 99, "total_loss": 0.3},
               {"iteration": 39, "segm/AP": 45.0, "segm/AP50": 70.0, "segm/AP-balloon": 45.0},
               {"iteration": 99, "segm/AP": 41.0, "segm/AP50": 66.0})
    (run_dir / "inference" / "val" / "results.json").write_text(
        json.dumps({"segm": {"AP": 41.0, "AP50": 66.0}}))
    # as BestCheckpointer saves it: the 0-based iteration and the metric under its own name
    D2SegCheckpointer(nn.Linear(2, 2), str(run_dir)).save(
        "model_best", tag_last=False, iteration=39, **{"segm/AP": 45.0})
    done = run(repo_root, run_dir)
    assert done.returncode == 0, done.stderr
    assert (f"best model: {run_dir / 'model_best.pth'}, saved at iteration 40 with "
            f"segm/AP 45.00 %") in done.stdout
    assert "segm at iteration 40: AP 45.00 %, AP50 70.00 %\n" in done.stdout
    assert "val segm (model_final, iteration 100): AP 41.00 %" in done.stdout


def test_a_folder_without_evaluation_is_one_line_exit_2(repo_root, tmp_path):
    done = run(repo_root, tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "no inference/ folder" in done.stderr
