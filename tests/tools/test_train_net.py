"""``tools/train_net.py`` end to end, as a user runs it: synthetic Labelme/Carvana data converted
to COCO in tmp folders, trained on CPU in a subprocess, results read back from OUTPUT_DIR.

Some tests change one behaviour of the child process (stop it at an iteration, kill it during a
checkpoint write, dump every rank's weights) with a ``sitecustomize.py`` put on its PYTHONPATH:
Python imports it at start-up, before ``train_net.py`` runs, and in spawned DDP workers too.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image

from d2seg.checkpoint import D2SegCheckpointer, load_checkpoint_file
from d2seg.config import get_cfg
from d2seg.data.convert.pipeline import convert_dataset
from d2seg.data.synthetic import make_balloons, make_carvana
from d2seg.modeling import build_model

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_NET = REPO_ROOT / "tools" / "train_net.py"
MASK_RCNN = str(REPO_ROOT / "configs" / "tiny" / "mask_rcnn_R_18_tiny.yaml")
UNET_GRAY = str(REPO_ROOT / "configs" / "tiny" / "unet_R_18_gray_binary_tiny.yaml")

# Short Mask R-CNN runs: 64 px inputs, one class, no evaluation.
QUICK_RCNN = [
    "MODEL.ROI_HEADS.NUM_CLASSES", "1",
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
    "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
    "DATASETS.TEST", "()",
]


@pytest.fixture(scope="module")
def balloons(tmp_path_factory) -> dict[str, str]:
    """60 synthetic 96 px balloon images as COCO: ``{"train": json, "val": json}`` (48/12)."""
    root = tmp_path_factory.mktemp("balloons")
    make_balloons(root / "labelme", 60, size=(96, 96), seed=0)
    convert_dataset(root / "labelme", root / "coco", splits={"val": 0.2}, seed=0,
                    outputs=("instances",))
    return {split: str(root / "coco" / "annotations" / f"{split}.json") for split in ("train", "val")}


@pytest.fixture(scope="module")
def carvana(tmp_path_factory) -> dict[str, str]:
    """24 synthetic cars (96×144) converted with ``fmt="masks"``: COCO json + semantic PNGs."""
    root = tmp_path_factory.mktemp("carvana")
    make_carvana(root / "raw", 24, size=(96, 144), seed=0)
    convert_dataset(root / "raw", root / "coco", fmt="masks", splits={"val": 0.25}, seed=0)
    return {split: str(root / "coco" / "annotations" / f"{split}.json") for split in ("train", "val")}


def write_site_hook(folder: Path, code: str) -> dict[str, str]:
    """Environment whose Python processes run ``code`` at start-up (as ``sitecustomize``)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(textwrap.dedent(code), encoding="utf-8")
    # The hook imports d2seg before train_net.py puts its own checkout first on sys.path.
    path = [str(folder), str(REPO_ROOT), os.environ.get("PYTHONPATH")]
    return {"PYTHONPATH": os.pathsep.join(filter(None, path))}


def train_net(*args: str, env: dict[str, str] | None = None, script: Path = TRAIN_NET
              ) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
        env={**os.environ, **(env or {})},
    )


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2 and exactly one line on stderr (no traceback) that contains every fragment."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def metrics(output_dir: Path) -> list[dict]:
    with open(output_dir / "metrics.json", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def model_weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint_file(str(path))["model"]


# ---------------------------------------------------------------------------------------------
# A real training run: learning, outputs, evaluation of its weights.


@pytest.fixture(scope="module")
def balloon_run(balloons, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("balloon_run") / "run"
    assert_ok(train_net(
        "--config-file", MASK_RCNN,
        "DATASETS.TRAIN", f"('{balloons['train']}',)", "DATASETS.TEST", f"('{balloons['val']}',)",
        "MODEL.ROI_HEADS.NUM_CLASSES", "1",
        "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "96",
        "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "96",
        "SOLVER.MAX_ITER", "120", "SOLVER.STEPS", "(100,)", "SOLVER.CHECKPOINT_PERIOD", "60",
        "TEST.EVAL_PERIOD", "60", "OUTPUT_DIR", str(out),
    ))
    return out


@pytest.mark.slow
def test_tiny_mask_rcnn_learns_synthetic_balloons(balloon_run):
    final = [m for m in metrics(balloon_run) if "segm/AP50" in m][-1]
    assert final["iteration"] == 119
    # COCO AP in percent, as Detectron2 reports it: AP50 >= 50 is AP50 >= 0.5.
    assert final["segm/AP50"] >= 50, final


@pytest.mark.slow
def test_run_folder_holds_metrics_events_curves_log_and_reloadable_config(balloon_run):
    records = metrics(balloon_run)
    train = [r for r in records if "total_loss" in r]
    # Written after the first iteration, then every 20 and at the end.
    assert [r["iteration"] for r in train] == [0, *range(19, 120, 20)]
    assert {"loss_cls", "loss_mask", "loss_rpn_cls", "lr", "time", "data_time"} <= train[0].keys()
    assert train[-1]["total_loss"] < train[0]["total_loss"]
    assert [r["iteration"] for r in records if "segm/AP" in r] == [59, 119]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (event_file,) = balloon_run.glob("events.out.tfevents.*")
    events = EventAccumulator(str(event_file))
    events.Reload()
    logged = events.Scalars("total_loss")
    assert [e.step for e in logged] == [r["iteration"] for r in train]
    assert logged[0].value == pytest.approx(train[0]["total_loss"])
    assert [e.step for e in events.Scalars("segm/AP50")] == [59, 119]

    with Image.open(balloon_run / "training_curves.png") as png:
        assert png.format == "PNG" and png.width > 100
    log = (balloon_run / "log.txt").read_text(encoding="utf-8")
    assert "Starting training from iteration 0" in log and "iter: 120/120" in log

    cfg = get_cfg()
    cfg.merge_from_file(str(balloon_run / "config.yaml"))
    assert (cfg.SOLVER.MAX_ITER, cfg.MODEL.ROI_HEADS.NUM_CLASSES) == (120, 1)
    assert cfg.OUTPUT_DIR == str(balloon_run)

    # model_best.pth and model_final.pth are lean copies; --resume continues from the newest
    # full checkpoint, that of the last iteration.
    assert (balloon_run / "last_checkpoint").read_text() == "model_0000119.pth"
    assert {"model_0000059.pth", "model_0000119.pth", "model_final.pth", "model_best.pth"} <= set(
        os.listdir(balloon_run))
    for lean in ("model_final.pth", "model_best.pth"):
        assert "optimizer" not in load_checkpoint_file(str(balloon_run / lean)), lean


@pytest.mark.slow
def test_eval_only_reproduces_the_final_evaluation(balloon_run, balloons, tmp_path):
    out = tmp_path / "eval"
    result = train_net(
        "--config-file", str(balloon_run / "config.yaml"), "--eval-only",
        "MODEL.WEIGHTS", str(balloon_run / "model_final.pth"), "DATASETS.TEST",
        f"('{balloons['val']}',)", "OUTPUT_DIR", str(out),
    )
    assert_ok(result)
    report = out / "inference" / "val" / "report.md"
    assert "segm" in report.read_text(encoding="utf-8")
    evaluated = json.loads((out / "inference" / "val" / "results.json").read_text())
    final = [m for m in metrics(balloon_run) if "segm/AP50" in m][-1]
    assert evaluated["segm"]["AP50"] == pytest.approx(final["segm/AP50"])
    assert not (out / "metrics.json").exists()


@pytest.mark.slow
def test_tiny_unet_learns_synthetic_car_masks(carvana, tmp_path):
    # Semantic labels come from the converter's OUT/sem_seg/<split>/*.png next to the json.
    out = tmp_path / "run"
    assert_ok(train_net(
        "--config-file", UNET_GRAY,
        "DATASETS.TRAIN", f"('{carvana['train']}',)", "DATASETS.TEST", f"('{carvana['val']}',)",
        "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "144",
        "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "144",
        "SOLVER.MAX_ITER", "60", "OUTPUT_DIR", str(out),
    ))
    final = [m for m in metrics(out) if "sem_seg/mIoU" in m][-1]
    assert final["sem_seg/mIoU"] >= 85, final  # percent, as Detectron2's SemSegEvaluator


# ---------------------------------------------------------------------------------------------
# Resume and crash safety.

STOP_AT_ITERATION = """
    # Aborts right before iteration D2SEG_TEST_STOP_AT (0-based) runs, as a second Ctrl-C does
    # (a first one saves first: tests/engine/test_resume.py).
    import os
    from d2seg.engine.train_loop import SimpleTrainer

    _stop_at = int(os.environ["D2SEG_TEST_STOP_AT"])
    _run_step = SimpleTrainer.run_step

    def run_step(self):
        if self.iter == _stop_at:
            raise KeyboardInterrupt
        _run_step(self)

    SimpleTrainer.run_step = run_step
"""


@pytest.mark.slow
def test_resume_continues_exactly_like_an_uninterrupted_run(balloons, tmp_path):
    # An abort saves nothing: the run resumes from its last periodic checkpoint. (Mixed aspect
    # ratios, workers and real signals: tests/engine/test_resume.py.)
    common = ["--config-file", MASK_RCNN, *QUICK_RCNN, "DATASETS.TRAIN", f"('{balloons['train']}',)",
              "SOLVER.MAX_ITER", "20", "SOLVER.WARMUP_ITERS", "5", "SOLVER.STEPS", "(15,)",
              "SOLVER.CHECKPOINT_PERIOD", "10", "SEED", "3", "DATALOADER.NUM_WORKERS", "0"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert_ok(train_net(*common, "OUTPUT_DIR", str(straight)))

    stop = write_site_hook(tmp_path / "stop", STOP_AT_ITERATION) | {"D2SEG_TEST_STOP_AT": "10"}
    interrupted = train_net(*common, "OUTPUT_DIR", str(resumed), env=stop)
    assert interrupted.returncode == 130 and "interrupted" in interrupted.stderr
    assert not (resumed / "model_final.pth").exists()
    assert (resumed / "last_checkpoint").read_text() == "model_0000009.pth"
    continued = train_net("--resume", *common, "OUTPUT_DIR", str(resumed))
    assert_ok(continued)
    assert "Starting training from iteration 10" in continued.stdout

    # model_final.pth is lean; the last iteration's full checkpoint has the optimizer too.
    a = load_checkpoint_file(str(straight / "model_0000019.pth"))
    b = load_checkpoint_file(str(resumed / "model_0000019.pth"))
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    # Optimizer moments, scheduler position and hook states match too.
    for state_a, state_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for key in state_a:
            assert torch.equal(torch.as_tensor(state_a[key]), torch.as_tensor(state_b[key]))
    assert a["scheduler"] == b["scheduler"]
    assert a["iteration"] == b["iteration"] == 19
    straight_lr = {r["iteration"]: r["lr"] for r in metrics(straight) if "lr" in r}
    resumed_lr = {r["iteration"]: r["lr"] for r in metrics(resumed) if "lr" in r}
    assert resumed_lr[19] == straight_lr[19]
    assert b["hooks"]["PeriodicCheckpointer"]["recent"] == [
        str(resumed / "model_0000009.pth"), str(resumed / "model_0000019.pth")]


KILL_DURING_SAVE = """
    # The process SIGKILLs itself in the middle of its D2SEG_TEST_KILL_AT_SAVE-th torch.save,
    # after writing part of the file: a deterministic "power cut" during a checkpoint write.
    import os
    import signal
    import torch

    _kill_at = int(os.environ["D2SEG_TEST_KILL_AT_SAVE"])
    _save = torch.save
    _saves = 0

    def save(obj, f, *args, **kwargs):
        global _saves
        _saves += 1
        if _saves == _kill_at:
            f.write(b"PK\\x03\\x04 half of a checkpoint")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return _save(obj, f, *args, **kwargs)

    torch.save = save
"""


@pytest.mark.slow
def test_kill_during_checkpoint_write_keeps_the_previous_checkpoint(balloons, tmp_path):
    out = tmp_path / "run"
    common = ["--config-file", MASK_RCNN, *QUICK_RCNN, "DATASETS.TRAIN", f"('{balloons['train']}',)",
              "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "2", "OUTPUT_DIR", str(out)]
    kill = write_site_hook(tmp_path / "kill", KILL_DURING_SAVE) | {"D2SEG_TEST_KILL_AT_SAVE": "2"}
    killed = train_net(*common, env=kill)
    assert killed.returncode == -9, killed.stderr[-2000:]

    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (out / "model_0000003.pth").exists()
    assert load_checkpoint_file(str(out / "model_0000001.pth"))["iteration"] == 1
    (partial,) = out.glob(".model_0000003.pth.*.tmp")  # SIGKILL leaves no chance to clean up

    continued = train_net("--resume", *common)
    assert_ok(continued)
    assert "Starting training from iteration 2" in continued.stdout
    assert (out / "last_checkpoint").read_text() == "model_0000005.pth"
    assert not partial.exists()  # --resume removes what the killed save left


# ---------------------------------------------------------------------------------------------
# DDP on CPU (gloo): two spawned processes.

DUMP_RANK_WEIGHTS = """
    # After training, every rank saves its own parameters (only rank 0 writes checkpoints).
    from d2seg.engine.trainer import DefaultTrainer
    from d2seg.utils import comm
    import os
    import torch

    _train = DefaultTrainer.train

    def train(self):
        _train(self)
        path = os.path.join(self.cfg.OUTPUT_DIR, f"rank{comm.get_rank()}_parameters.pt")
        torch.save({k: v.detach().clone() for k, v in self.unwrapped_model.named_parameters()},
                   path)

    DefaultTrainer.train = train
"""


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_same_total_batch(carvana, tmp_path):
    # GroupNorm instead of BatchNorm, plain per-pixel BCE, no flips: each image's loss is then
    # independent of the others in its batch, and all images have the same size, so the mean
    # over the two ranks' one-image batches equals the one-process two-image batch loss
    # mathematically; only float32 summation order differs (~1e-6 relative, tolerance 1e-4).
    common = ["--config-file", UNET_GRAY, "DATASETS.TRAIN", f"('{carvana['train']}',)",
              "DATASETS.TEST", "()", "MODEL.RESNETS.NORM", "GN", "MODEL.SEM_SEG_HEAD.NORM", "GN",
              "MODEL.SEM_SEG_HEAD.LOSS", "ce", "INPUT.RANDOM_FLIP", "none",
              "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
              "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "3", "SEED", "0"]
    env = write_site_hook(tmp_path / "dump", DUMP_RANK_WEIGHTS) | {"OMP_NUM_THREADS": "1"}
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    assert_ok(train_net("--num-gpus", "2", *common, "OUTPUT_DIR", str(ddp), env=env))
    assert_ok(train_net(*common, "OUTPUT_DIR", str(single), env=env))

    rank0 = torch.load(ddp / "rank0_parameters.pt", weights_only=True)
    rank1 = torch.load(ddp / "rank1_parameters.pt", weights_only=True)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    first_ddp, first_single = metrics(ddp)[0], metrics(single)[0]
    assert first_ddp["iteration"] == first_single["iteration"] == 0
    assert first_ddp["total_loss"] == pytest.approx(first_single["total_loss"], rel=1e-4)
    assert (ddp / "model_final.pth").exists() and (ddp / "log.txt.rank1").exists()


DUMP_RESUMED_RNG = """
    # After --resume has loaded the checkpoint, every rank saves its torch RNG state.
    from d2seg.engine.trainer import DefaultTrainer
    from d2seg.utils import comm
    import os
    import torch

    _resume_or_load = DefaultTrainer.resume_or_load

    def resume_or_load(self, resume=True):
        _resume_or_load(self, resume)
        torch.save(torch.get_rng_state(),
                   os.path.join(self.cfg.OUTPUT_DIR, f"rank{comm.get_rank()}_resumed_rng.pt"))

    DefaultTrainer.resume_or_load = resume_or_load
"""


@pytest.mark.slow
def test_two_process_checkpoint_keeps_and_resume_restores_each_ranks_rng_state(carvana, tmp_path):
    out = tmp_path / "run"
    common = ["--config-file", UNET_GRAY,
              "DATASETS.TRAIN", f"('{carvana['train']}',)", "DATASETS.TEST", "()",
              "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
              "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "1", "SEED", "0",
              "OUTPUT_DIR", str(out)]
    env = {"OMP_NUM_THREADS": "1"}
    assert_ok(train_net("--num-gpus", "2", *common, env=env))
    assert (out / "last_checkpoint").read_text() == "model_0000000.pth"
    rng = load_checkpoint_file(str(out / "model_0000000.pth"))["rng"]
    assert len(rng) == 2
    assert not torch.equal(rng[0]["torch"], rng[1]["torch"])

    # The run is complete, so --resume only loads the checkpoint and has nothing to train.
    dump = write_site_hook(tmp_path / "dump", DUMP_RESUMED_RNG) | env
    assert_ok(train_net("--resume", "--num-gpus", "2", *common, env=dump))
    for rank in range(2):
        resumed = torch.load(out / f"rank{rank}_resumed_rng.pt", weights_only=True)
        assert torch.equal(resumed, rng[rank]["torch"]), rank

    # Another number of processes keeps its own seeding rather than sharing one rank's stream.
    single = train_net("--resume", *common, env=env)
    assert_ok(single)
    assert "saved with 2 processes, resuming with 1" in single.stdout


@pytest.mark.slow
def test_dataset_registered_only_in_the_parent_is_a_clear_error_in_spawned_workers(
    balloons, tmp_path
):
    # A user script that registers a dataset by name and launches 2 processes: spawned workers
    # re-import the script as __mp_main__, so the registration under __main__ does not run
    # there. JSON paths in DATASETS.TRAIN avoid this: every process registers them itself.
    script = tmp_path / "my_train.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO_ROOT / "tools")!r})
        import train_net
        from d2seg.data.datasets import register_coco_instances
        from d2seg.utils.cli import run_cli

        if __name__ == "__main__":
            register_coco_instances("parent_only_balloons", {{}}, {balloons['train']!r},
                                    {str(Path(balloons['train']).parents[1] / 'images')!r})
            run_cli(train_net.cli)
    """), encoding="utf-8")
    result = train_net(
        "--config-file", MASK_RCNN, "--num-gpus", "2", *QUICK_RCNN,
        "DATASETS.TRAIN", "('parent_only_balloons',)", "OUTPUT_DIR", str(tmp_path / "run"),
        script=script, env={"OMP_NUM_THREADS": "1"},
    )
    assert_one_line_error(result, "'parent_only_balloons' is not registered", "COCO json")


# ---------------------------------------------------------------------------------------------
# Fine-tuning, failures and user mistakes.


def test_fine_tune_skips_mismatched_classes_and_freezes_stem_and_res2(balloons, tmp_path):
    cfg = get_cfg()
    cfg.merge_from_file(MASK_RCNN)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    D2SegCheckpointer(build_model(cfg), str(tmp_path)).save("three_classes")
    pretrained = model_weights(tmp_path / "three_classes.pth")

    out = tmp_path / "run"
    result = train_net(
        "--config-file", MASK_RCNN, *QUICK_RCNN, "DATASETS.TRAIN", f"('{balloons['train']}',)",
        "MODEL.WEIGHTS", str(tmp_path / "three_classes.pth"), "MODEL.BACKBONE.FREEZE_AT", "2",
        "SOLVER.MAX_ITER", "3", "SOLVER.WARMUP_ITERS", "0", "OUTPUT_DIR", str(out),
    )
    assert_ok(result)
    assert "Skip loading parameter 'roi_heads.box_predictor.cls_score.weight'" in result.stdout
    tuned = model_weights(out / "model_final.pth")
    assert tuned["roi_heads.box_predictor.cls_score.weight"].shape[0] == 2  # 1 class + background
    trunk = "backbone.bottom_up."
    stem_res2 = [k for k in tuned if k.startswith((trunk + "conv1", trunk + "bn1", trunk + "layer1"))]
    res3 = [k for k in tuned if k.startswith(trunk + "layer2") and k.endswith("conv1.weight")]
    assert stem_res2 and res3
    for key in stem_res2:
        assert torch.equal(tuned[key], pretrained[key]), key
    assert not all(torch.equal(tuned[k], pretrained[k]) for k in res3)


def test_non_finite_loss_exits_2_naming_iteration_and_terms_without_its_checkpoint(
    balloons, tmp_path
):
    out = tmp_path / "run"
    result = train_net(
        "--config-file", MASK_RCNN, *QUICK_RCNN, "DATASETS.TRAIN", f"('{balloons['train']}',)",
        "SOLVER.BASE_LR", "1e6", "SOLVER.WARMUP_ITERS", "0", "SOLVER.MAX_ITER", "10",
        "SOLVER.CHECKPOINT_PERIOD", "1", "OUTPUT_DIR", str(out),
    )
    line = assert_one_line_error(result, "non-finite at iteration", "SOLVER.BASE_LR")
    failed = int(re.search(r"iteration (\d+) \(", line).group(1))
    assert re.search(r"\((loss_\w+=(nan|inf|-inf)(, )?)+\)", line), line
    assert 2 <= failed <= 10
    saved = sorted(p.name for p in out.glob("*.pth"))
    assert saved == [f"model_{i:07d}.pth" for i in range(failed - 1)]


def test_eval_only_without_weights_is_one_line_and_writes_nothing(balloons, tmp_path):
    out = tmp_path / "eval"
    result = train_net("--config-file", MASK_RCNN, "--eval-only", *QUICK_RCNN,
                       "DATASETS.TEST", f"('{balloons['val']}',)", "OUTPUT_DIR", str(out))
    assert_one_line_error(result, "--eval-only", "MODEL.WEIGHTS")
    assert not out.exists()


@pytest.mark.slow
def test_existing_run_without_resume_is_refused(balloons, tmp_path):
    out = tmp_path / "run"
    common = ["--config-file", MASK_RCNN, *QUICK_RCNN, "DATASETS.TRAIN", f"('{balloons['train']}',)",
              "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", str(out)]
    assert_ok(train_net(*common))
    before = (out / "metrics.json").read_text()
    assert_one_line_error(train_net(*common), str(out), "--resume")
    assert (out / "metrics.json").read_text() == before


@pytest.mark.slow
def test_bfloat16_amp_trains_on_cpu_and_float16_is_a_config_error(carvana, tmp_path):
    common = ["--config-file", UNET_GRAY, "DATASETS.TRAIN", f"('{carvana['train']}',)",
              "DATASETS.TEST", "()", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
              "SOLVER.MAX_ITER", "2", "SOLVER.AMP.ENABLED", "True"]
    out = tmp_path / "bf16"
    assert_ok(train_net(*common, "SOLVER.AMP.DTYPE", "bfloat16", "OUTPUT_DIR", str(out)))
    losses = [r["total_loss"] for r in metrics(out)]
    assert losses and all(0 < v < 10 for v in losses)
    assert (out / "model_final.pth").exists()

    result = train_net(*common, "SOLVER.AMP.DTYPE", "float16", "OUTPUT_DIR", str(tmp_path / "fp16"))
    assert_one_line_error(result, "SOLVER.AMP.DTYPE float16", "bfloat16")
