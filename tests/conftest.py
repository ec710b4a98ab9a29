"""Shared fixtures: where the real annotation data written by others lives."""

import contextlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from d2seg.utils.cli import run_cli

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("D2SEG_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs ``-n 2``) each worker gets its share of the cores:
    torch's default of one thread per core in every worker would oversubscribe them. The
    environment variable reaches the tools the tests start as subprocesses."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.needs_tools("g++", ...)``: the test *fails* (never skips) when a command it
    needs is missing, since ``make test`` installs every one (Makefile ``system-deps``)."""
    for mark in item.iter_markers("needs_tools"):
        missing = [tool for tool in mark.args if shutil.which(tool) is None]
        if missing:
            pytest.fail(f"{', '.join(missing)} not found; fix: make system-deps (make test "
                        f"installs it)", pytrace=False)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (override with D2SEG_TEST_DATA); skipped only outside CI."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared test data missing at {SHARED_DATA}; CI must have it")
        pytest.skip(f"shared test data not found at {SHARED_DATA} (set D2SEG_TEST_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def train_run():
    """``train(config, output_dir, *opts)``: ``tools/train_net.py`` in a subprocess, as a user
    runs it (this checkout's d2seg first on its path); fails the test with the run's output."""

    def train(config: str, output_dir: Path, *opts: str) -> None:
        result = subprocess.run(
            [sys.executable, str(REPO_ROOT / "tools" / "train_net.py"), "--config-file", config,
             *opts, "OUTPUT_DIR", str(output_dir)],
            capture_output=True, text=True, cwd=REPO_ROOT, timeout=900,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]

    return train


@pytest.fixture(scope="session")
def run_tool():
    """``run(name, *argv) -> (exit status, stdout, stderr)``: ``tools/<name>.py``'s ``main`` in
    this process through ``run_cli``, exactly as its command line runs it."""
    modules = {}

    def run(name: str, *argv) -> tuple[int, str, str]:
        if name not in modules:
            path = REPO_ROOT / "tools" / f"{name}.py"
            spec = importlib.util.spec_from_file_location(f"{name}_tool", path)
            modules[name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(modules[name])
        out, err = io.StringIO(), io.StringIO()
        old_argv, sys.argv = sys.argv, [f"{name}.py", *map(str, argv)]
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                run_cli(modules[name].main)
        except SystemExit as e:
            code = e.code
        finally:
            sys.argv = old_argv
        return code, out.getvalue(), err.getvalue()

    return run


def _converted_split(root: Path, make, **convert) -> dict[str, Path]:
    """``make(folder)`` writes a synthetic source set; converted with a 25% val split:
    ``{"train": json, "val": json, "images": folder}``."""
    from d2seg.data.convert.pipeline import convert_dataset

    make(root / "raw")
    convert_dataset(root / "raw", root / "coco", splits={"val": 0.25}, seed=0, **convert)
    annotations = root / "coco" / "annotations"
    return {"train": annotations / "train.json", "val": annotations / "val.json",
            "images": root / "coco" / "images"}


@pytest.fixture(scope="session")
def balloon_split(tmp_path_factory) -> dict[str, Path]:
    """16 synthetic 96×128 Labelme balloon images as COCO instances, split 12/4."""
    from d2seg.data.synthetic import make_balloons

    return _converted_split(
        tmp_path_factory.mktemp("balloon_split"),
        lambda folder: make_balloons(folder, 16, size=(96, 128), seed=0),
        outputs=("instances",),
    )


@pytest.fixture(scope="session")
def car_split(tmp_path_factory) -> dict[str, Path]:
    """8 synthetic 64×96 Carvana-style cars (image + mask pairs) as COCO with semantic PNGs,
    split 6/2."""
    from d2seg.data.synthetic import make_carvana

    return _converted_split(
        tmp_path_factory.mktemp("car_split"),
        lambda folder: make_carvana(folder, 8, size=(64, 96), seed=0),
        fmt="masks",
    )


@pytest.fixture(scope="session")
def car_run(tmp_path_factory, train_run, car_split) -> dict[str, Path]:
    """A 6-iteration grayscale binary U-Net trained on ``car_split`` (a semantic model):
    ``{"run": run folder, **car_split}``. Tests only read it."""
    run = tmp_path_factory.mktemp("car_run") / "run"
    train_run(
        str(REPO_ROOT / "configs" / "tiny" / "unet_R_18_gray_binary_tiny.yaml"), run,
        "DATASETS.TRAIN", f"('{car_split['train']}',)",
        "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "6", "DATALOADER.NUM_WORKERS", "0",
    )
    return {"run": run, **car_split}
