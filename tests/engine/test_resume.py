"""Exact ``--resume`` on mixed image sizes with worker processes, and Ctrl-C/SIGTERM that save.

The slow tests run ``tools/train_net.py`` as a user does, in a subprocess, and send it real
signals; a ``sitecustomize.py`` on the child's PYTHONPATH reports each finished iteration in a
file (so the test knows when to send the signal) and slows steps down a little (so the signal
lands mid-run). The fast tests drive a toy trainer in-process.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from d2seg.checkpoint import D2SegCheckpointer, load_checkpoint_file
from d2seg.data.convert.pipeline import convert_dataset
from d2seg.data.synthetic import make_carvana
from d2seg.engine import hooks
from d2seg.engine.train_loop import HookBase, SimpleTrainer, StopTraining
from d2seg.engine.trainer import capture_rng_state, restore_rng_state
from d2seg.utils.cli import Interrupted
from d2seg.utils.events import EventStorage, JSONWriter

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_NET = REPO_ROOT / "tools" / "train_net.py"
UNET_GRAY = str(REPO_ROOT / "configs" / "tiny" / "unet_R_18_gray_binary_tiny.yaml")
MAX_ITER = 12


# ---------------------------------------------------------------------------------------------
# In-process: a toy trainer that signals itself.


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1, 1)

    def forward(self, batch):
        x = torch.stack(batch)
        return {"loss_fit": ((self.linear(x) - 2 * x) ** 2).mean()}


def toy_batches():
    while True:
        yield list(torch.rand(4, 1))


class SignalAt(HookBase):
    """Sends this process ``signals`` (in order) before the step of ``iteration``."""

    def __init__(self, iteration, *signals):
        self.iteration, self.signals = iteration, signals

    def before_step(self):
        if self.trainer.iter == self.iteration:
            for signum in self.signals:
                os.kill(os.getpid(), signum)


def toy_trainer(tmp_path, *extra_hooks):
    model = Toy()
    trainer = SimpleTrainer(model, toy_batches(), torch.optim.SGD(model.parameters(), lr=0.1))
    checkpointer = D2SegCheckpointer(model, str(tmp_path))
    trainer.register_hooks([hooks.PeriodicCheckpointer(checkpointer, 100, lambda: {}),
                            *extra_hooks])
    return trainer


def test_ctrl_c_finishes_the_step_saves_it_and_restores_the_handlers(tmp_path):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    trainer = toy_trainer(tmp_path, SignalAt(2, signal.SIGINT))
    with pytest.raises(Interrupted) as stop:
        trainer.train(0, 10)
    assert stop.value.exit_code == 130 and trainer.iter == 2 and not trainer.completed
    saved = tmp_path / "model_0000002.pth"
    assert str(saved) in str(stop.value) and "iteration 3/10" in str(stop.value)
    assert (tmp_path / "last_checkpoint").read_text() == saved.name
    assert load_checkpoint_file(str(saved))["iteration"] == 2
    assert not (tmp_path / "model_final.pth").exists()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


class StopAt(HookBase):
    """Ends training (StopTraining, as an early-stopping or pruning hook does) after the step of
    ``iteration``."""

    def __init__(self, iteration):
        self.iteration = iteration

    def after_step(self):
        if self.trainer.iter == self.iteration:
            raise StopTraining("enough")


def test_a_signal_during_a_step_that_a_hook_ends_reaches_the_previous_handler(tmp_path):
    # The loop never gets to act on the SIGTERM: it must not be dropped (a tuning sweep would
    # go on with its next trial), so the handler that was there before receives it.
    received = []
    before = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        trainer = toy_trainer(tmp_path, SignalAt(2, signal.SIGTERM), StopAt(2))
        trainer.train(0, 10)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert trainer.completed and trainer.iter == 2
    assert received == [signal.SIGTERM]


def test_second_ctrl_c_aborts_at_once_without_saving(tmp_path):
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest runs in the background
    trainer = toy_trainer(tmp_path, SignalAt(2, signal.SIGINT, signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        trainer.train(0, 10)
    assert trainer.iter == 2
    assert not list(tmp_path.glob("*.pth"))
    assert signal.getsignal(signal.SIGINT) is before


def test_sigterm_saves_and_exits_143_and_a_repeated_sigterm_does_not_abort(tmp_path):
    trainer = toy_trainer(tmp_path, SignalAt(1, signal.SIGTERM, signal.SIGTERM))
    with pytest.raises(Interrupted) as stop:
        trainer.train(0, 10)
    assert stop.value.exit_code == 143 and str(stop.value).startswith("SIGTERM:")
    assert (tmp_path / "model_0000001.pth").exists()


class DrawsLikeAnEvaluation(HookBase):
    """Draws from the global RNG after each step, as evaluation does (a test loader's base
    seed, RoI sampling in a validation loss)."""

    def after_step(self):
        torch.rand(3)


class AbortAt(HookBase):
    def __init__(self, iteration):
        self.iteration = iteration

    def before_step(self):
        if self.trainer.iter == self.iteration:
            raise KeyboardInterrupt


def test_a_checkpoint_holds_the_rng_state_after_all_hooks_of_its_iteration(tmp_path):
    # Toy batches come from the global RNG, so a resumed run sees the same data only if the
    # checkpoint's RNG state is the one the next step starts from.
    def run(folder, start_iter, *extra_hooks):
        torch.manual_seed(0)
        model = Toy()
        trainer = SimpleTrainer(model, toy_batches(), torch.optim.SGD(model.parameters(), lr=0.1))
        checkpointer = D2SegCheckpointer(model, str(folder))
        if start_iter:
            extra = checkpointer.resume_or_load("", resume=True)
            restore_rng_state(extra["rng"])
        trainer.register_hooks([
            hooks.PeriodicCheckpointer(checkpointer, 3, lambda: {"rng": capture_rng_state()}),
            DrawsLikeAnEvaluation(), *extra_hooks,
        ])
        trainer.train(start_iter, 8)
        return model.state_dict()

    straight = run(tmp_path / "straight", 0)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed", 0, AbortAt(4))
    assert load_checkpoint_file(str(tmp_path / "resumed" / "model_0000002.pth"))["iteration"] == 2
    resumed = run(tmp_path / "resumed", 3)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_run_cli_prints_the_interrupt_line_and_exits_with_its_code():
    code = ("from d2seg.utils.cli import Interrupted, run_cli\n"
            "def main():\n"
            "    raise Interrupted(15, 'SIGTERM: stopped; saved x.pth')\n"
            "run_cli(main)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (proc.returncode, proc.stderr) == (143, "SIGTERM: stopped; saved x.pth\n")


def test_json_writer_drops_rows_of_the_iterations_a_resumed_run_redoes(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("".join(json.dumps({"iteration": i, "loss": 1.0}) + "\n" for i in range(8)))
    storage = EventStorage(start_iter=5)  # resumed from the checkpoint of iteration 4
    storage.put_scalar("loss", 0.5)
    JSONWriter(str(path)).write(storage)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3, 4, 5]
    assert rows[-1]["loss"] == 0.5


# ---------------------------------------------------------------------------------------------
# tools/train_net.py in a subprocess, real signals.

PROGRESS = """
    # Rank 0 writes each finished iteration to D2SEG_TEST_PROGRESS; steps take >= 0.3 s.
    import os
    import time
    from d2seg.engine.train_loop import SimpleTrainer
    from d2seg.utils import comm

    _run_step = SimpleTrainer.run_step

    def run_step(self):
        _run_step(self)
        time.sleep(0.3)
        if comm.is_main_process():
            with open(os.environ["D2SEG_TEST_PROGRESS"], "a") as f:
                f.write(f"{self.iter}\\n")

    SimpleTrainer.run_step = run_step
"""

KILL_AT_ITERATION = """
    # Writers write after every iteration; SIGKILL right before iteration D2SEG_TEST_KILL_AT.
    import os
    import signal
    from d2seg.engine import hooks
    from d2seg.engine.train_loop import SimpleTrainer

    _kill_at = int(os.environ["D2SEG_TEST_KILL_AT"])
    _run_step = SimpleTrainer.run_step
    _writer_init = hooks.PeriodicWriter.__init__

    def run_step(self):
        if self.iter == _kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        _run_step(self)

    def writer_init(self, writers, period=20):
        _writer_init(self, writers, period=1)

    SimpleTrainer.run_step = run_step
    hooks.PeriodicWriter.__init__ = writer_init
"""


@pytest.fixture(scope="module")
def mixed_cars(tmp_path_factory) -> str:
    """10 synthetic cars, 5 wide (64×96) and 5 tall (96×64), as one COCO json (+ semantic PNGs):
    aspect-ratio grouping then keeps images waiting in a bucket across iterations."""
    root = tmp_path_factory.mktemp("mixed_cars")
    raw = root / "raw"
    raw.mkdir()
    for kind, size, seed in (("wide", (64, 96), 1), ("tall", (96, 64), 2)):
        for path in make_carvana(root / kind, 5, size=size, seed=seed).iterdir():
            path.rename(raw / f"{kind}_{path.name}")
    convert_dataset(raw, root / "coco", fmt="masks")
    return str(root / "coco" / "annotations" / "all.json")


def unet_args(dataset: str, out: Path, *extra: str) -> list[str]:
    """A 12-iteration tiny U-Net run with random crops, two scales, flips, 2 workers, batches of
    3 (odd, so buckets hold images across batches) and no periodic checkpoint."""
    return ["--config-file", UNET_GRAY, "DATASETS.TRAIN", f"('{dataset}',)", "DATASETS.TEST", "()",
            "INPUT.MIN_SIZE_TRAIN", "(48, 64)", "INPUT.MAX_SIZE_TRAIN", "96",
            "INPUT.CROP.ENABLED", "True", "INPUT.RANDOM_FLIP", "horizontal",
            "DATALOADER.NUM_WORKERS", "2", "SOLVER.IMS_PER_BATCH", "3",
            "SOLVER.MAX_ITER", str(MAX_ITER), "SOLVER.WARMUP_ITERS", "2",
            "SOLVER.CHECKPOINT_PERIOD", "100", "SEED", "7", "OUTPUT_DIR", str(out), *extra]


def site_env(folder: Path, code: str, **variables: str) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(textwrap.dedent(code), encoding="utf-8")
    # The hook imports d2seg before train_net.py puts its own checkout first on sys.path.
    path = os.pathsep.join(filter(None, [str(folder), str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, **variables}


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
                            env=env or {**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def run_and_signal(args: list[str], tmp_path: Path, signum: int, at_iteration: int, *,
                   group: bool) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``args``, send ``signum`` once rank 0 has finished ``at_iteration`` (to the whole
    process group, as a terminal's Ctrl-C, with ``group``); returns the result and the last
    iteration the run had finished when the signal was sent."""
    progress = tmp_path / "progress.txt"
    env = site_env(tmp_path / "site", PROGRESS, D2SEG_TEST_PROGRESS=str(progress))
    proc = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 600
    done = -1
    while done < at_iteration:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
        if progress.exists():
            done = max([int(line) for line in progress.read_text().split()], default=-1)
    (os.killpg if group else os.kill)(proc.pid, signum)
    stdout, stderr = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr), done


def stop_line(result: subprocess.CompletedProcess, signame: str) -> tuple[int, list[str]]:
    """The iteration of the checkpoint named in the one-line stop message, and its command."""
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"{signame}: stopped after iteration "), result.stderr[-3000:]
    saved = line.split("; saved ")[1].split(";")[0]
    iteration = load_checkpoint_file(saved)["iteration"]
    assert Path(saved).name == f"model_{iteration:07d}.pth"
    assert (Path(saved).parent / "last_checkpoint").read_text() == Path(saved).name
    command = shlex.split(line.split("; continue with: ")[1])
    assert command[:3] == ["python", str(TRAIN_NET), "--resume"]
    return iteration, [sys.executable, *command[1:]]


def assert_same_final_state(a_dir: Path, b_dir: Path) -> None:
    # model_final.pth is lean; the last iteration's full checkpoint also has the optimizer.
    last = f"model_{MAX_ITER - 1:07d}.pth"
    a = load_checkpoint_file(str(a_dir / last))
    b = load_checkpoint_file(str(b_dir / last))
    final = load_checkpoint_file(str(a_dir / "model_final.pth"))
    assert all(torch.equal(final["model"][k], a["model"][k]) for k in a["model"])
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:  # parameters and BatchNorm buffers
        assert torch.equal(a["model"][key], b["model"][key]), key
    for state_a, state_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for key in state_a:
            assert torch.equal(torch.as_tensor(state_a[key]), torch.as_tensor(state_b[key])), key
    assert a["iteration"] == b["iteration"] == MAX_ITER - 1


def metric_iterations(out: Path) -> list[int]:
    lines = (out / "metrics.json").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["iteration"] for line in lines]


@pytest.mark.slow
def test_ctrl_c_then_resume_ends_with_the_weights_of_an_uninterrupted_run(mixed_cars, tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run([sys.executable, str(TRAIN_NET), *unet_args(mixed_cars, straight)])

    result, done = run_and_signal([sys.executable, str(TRAIN_NET), *unet_args(mixed_cars, stopped)],
                                  tmp_path, signal.SIGINT, 3, group=True)
    assert result.returncode == 130, result.stderr[-3000:]
    iteration, resume = stop_line(result, "SIGINT")
    assert done <= iteration < MAX_ITER - 1  # the step running at the signal was finished
    assert not (stopped / "model_final.pth").exists()

    continued = run(resume)
    assert f"Starting training from iteration {iteration + 1}" in continued.stdout
    assert_same_final_state(straight, stopped)
    iterations = metric_iterations(stopped)
    assert iterations == sorted(set(iterations)) and iterations[-1] == MAX_ITER - 1


@pytest.mark.slow
def test_sigterm_to_a_two_process_run_saves_exits_143_and_resumes_exactly(mixed_cars, tmp_path):
    # The launcher forwards SIGTERM to both ranks; they agree on the iteration to stop after.
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    def command(out):
        return [sys.executable, str(TRAIN_NET), "--num-gpus", "2",
                *unet_args(mixed_cars, out, "SOLVER.IMS_PER_BATCH", "4")]

    run(command(straight))
    result, done = run_and_signal(command(stopped), tmp_path, signal.SIGTERM, 2, group=False)
    assert result.returncode == 143, result.stderr[-3000:]
    iteration, resume = stop_line(result, "SIGTERM")
    assert done <= iteration < MAX_ITER - 1
    assert len(load_checkpoint_file(str(stopped / f"model_{iteration:07d}.pth"))["rng"]) == 2

    run(resume)
    assert_same_final_state(straight, stopped)


@pytest.mark.slow
def test_metrics_and_tensorboard_drop_what_a_killed_run_logged_after_its_checkpoint(
    mixed_cars, tmp_path
):
    out = tmp_path / "run"
    args = [sys.executable, str(TRAIN_NET), *unet_args(mixed_cars, out, "SOLVER.CHECKPOINT_PERIOD", "4")]
    env = site_env(tmp_path / "site", KILL_AT_ITERATION, D2SEG_TEST_KILL_AT="7")
    killed = subprocess.run(args, capture_output=True, text=True, cwd=REPO_ROOT, env=env,
                            timeout=600)
    assert killed.returncode == -signal.SIGKILL
    assert metric_iterations(out) == list(range(7))  # 4..6 come after model_0000003.pth

    run([args[0], args[1], "--resume", *args[2:]], env=site_env(
        tmp_path / "site", KILL_AT_ITERATION, D2SEG_TEST_KILL_AT="-1"))
    assert metric_iterations(out) == list(range(MAX_ITER))

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out))
    events.Reload()
    assert [e.step for e in events.Scalars("total_loss")] == list(range(MAX_ITER))
