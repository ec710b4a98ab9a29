"""tools/summarize_run.py: the headline numbers of a run folder, one block per run."""

import json
import subprocess
import sys


def run(repo_root, *args):
    return subprocess.run(
        [sys.executable, str(repo_root / "tools" / "summarize_run.py"), *map(str, args)],
        capture_output=True, text=True, timeout=60,
    )


def test_prints_final_loss_and_summary_metrics_without_per_class_values(repo_root, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "inference" / "val").mkdir(parents=True)
    (run_dir / "metrics.json").write_text(
        json.dumps({"iteration": 9, "total_loss": 0.5}) + "\n"
        + json.dumps({"iteration": 9, "segm/AP": 40.0}) + "\n"
    )
    results = {"segm": {"AP": 40.0, "AP50": 75.5, "APs": float("nan"), "AP-balloon": 40.0}}
    (run_dir / "inference" / "val" / "results.json").write_text(json.dumps(results))
    done = run(repo_root, run_dir)
    assert done.returncode == 0, done.stderr
    assert "iterations: 10, final total_loss: 0.5000" in done.stdout
    assert "val segm: AP 40.00, AP50 75.50" in done.stdout
    assert "AP-balloon" not in done.stdout and "nan" not in done.stdout


def test_a_folder_without_evaluation_is_one_line_exit_2(repo_root, tmp_path):
    done = run(repo_root, tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "no inference/ folder" in done.stderr
