"""``DefaultPredictor``: what a user gets from a run folder, checked against the evaluator.

A tiny Mask R-CNN and a tiny U-Net are trained with ``tools/train_net.py`` on synthetic data;
the predictor must give the evaluator's predictions exactly, name the classes from the
checkpoint alone, and refuse images of the wrong kind with the fix.
"""

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from d2seg import DefaultPredictor
from d2seg.checkpoint import load_checkpoint_file
from d2seg.config import get_cfg
from d2seg.engine.predictor import run_weights
from d2seg.errors import CheckpointError, ConfigError
from d2seg.evaluation.coco_evaluation import instances_to_coco_results

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def balloon_run(tmp_path_factory, train_run, balloon_split) -> dict:
    """A 12-iteration Mask R-CNN on synthetic balloons, evaluated on val at the end."""
    run = tmp_path_factory.mktemp("balloon_run") / "run"
    train_run(
        str(REPO_ROOT / "configs" / "tiny" / "mask_rcnn_R_18_tiny.yaml"), run,
        "DATASETS.TRAIN", f"('{balloon_split['train']}',)",
        "DATASETS.TEST", f"('{balloon_split['val']}',)",
        "MODEL.ROI_HEADS.NUM_CLASSES", "0", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
        "INPUT.MIN_SIZE_TEST", "80", "INPUT.MAX_SIZE_TEST", "120",
        "SOLVER.MAX_ITER", "12", "DATALOADER.NUM_WORKERS", "0",
    )
    return {"run": run, "val": balloon_split["val"], "images": balloon_split["images"]}


@pytest.mark.slow
def test_predictor_reproduces_the_evaluators_predictions_exactly(balloon_run):
    evaluated = json.loads(
        (balloon_run["run"] / "inference" / "val" / "coco_instances_results.json").read_text()
    )
    assert evaluated, "the tiny model must predict something for this test to mean anything"
    gt = json.loads(balloon_run["val"].read_text())
    images_dir = balloon_run["images"]
    predictor = DefaultPredictor.from_run(balloon_run["run"], weights="model_final.pth")
    dataset_ids = [c["id"] for c in gt["categories"]]
    for image in gt["images"]:
        bgr = cv2.imread(str(images_dir / image["file_name"]), cv2.IMREAD_COLOR)
        instances = predictor(bgr, format="BGR")["instances"]
        assert instances["masks"].shape[-2:] == bgr.shape[:2]
        ours = instances_to_coco_results(instances, image["id"], dataset_ids, with_masks=True)
        theirs = [r for r in evaluated if r["image_id"] == image["id"]]
        assert json.loads(json.dumps(ours)) == theirs


@pytest.mark.slow
def test_from_run_names_classes_with_no_dataset_registered(balloon_run, car_run, tmp_path):
    # Only the run folder survives: the data it was trained on is gone.
    copies = {}
    for name, run in (("balloons", balloon_run["run"]), ("cars", car_run["run"])):
        copies[name] = tmp_path / name
        copies[name].mkdir()
        for file in ("config.yaml", run_weights(run).name):
            shutil.copy(run / file, copies[name] / file)
    code = (
        "import json, sys; from d2seg import DefaultPredictor; "
        "p = [DefaultPredictor.from_run(d) for d in sys.argv[1:]]; "
        "print(json.dumps([[q.metadata.get('thing_classes'), q.metadata.get('stuff_classes'), "
        "q.metadata.saved['tasks'], q.metadata.saved['input_format']] for q in p]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(copies["balloons"]), str(copies["cars"])],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    balloons, cars = json.loads(result.stdout.strip().splitlines()[-1])
    assert balloons == [["balloon"], ["background", "balloon"], ["instances"], "RGB"]
    assert cars == [["object"], ["background", "object"], ["sem_seg"], "L"]


@pytest.mark.slow
def test_predictor_takes_grayscale_images_and_batches(car_run):
    predictor = DefaultPredictor.from_run(car_run["run"])
    gray = np.random.default_rng(0).integers(0, 255, (50, 70), dtype=np.uint8)
    single = predictor(gray)["sem_seg"]
    assert single.shape == (1, 50, 70)  # one sigmoid logit, at the original size
    batch = predictor.predict_batch([gray, gray[:40]])
    assert batch[1]["sem_seg"].shape == (1, 40, 70)
    torch.testing.assert_close(batch[0]["sem_seg"], single)
    with pytest.raises(ConfigError, match="1 channel.*cvtColor"):
        predictor(np.zeros((50, 70, 3), np.uint8))
    with pytest.raises(ConfigError, match="uint8"):
        predictor(gray.astype(np.float32))


@pytest.mark.slow
def test_bgr_images_are_converted_for_an_rgb_model(balloon_run):
    predictor = DefaultPredictor.from_run(balloon_run["run"])
    assert predictor.input_format == "RGB"
    bgr = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    as_bgr = predictor(bgr, format="BGR")["instances"]
    as_rgb = predictor(np.ascontiguousarray(bgr[:, :, ::-1]))["instances"]
    torch.testing.assert_close(as_bgr["scores"], as_rgb["scores"])


@pytest.mark.slow
def test_checkpoints_carry_metadata_and_best_final_are_lean(car_run):
    for name in ("model_final.pth",):
        checkpoint = load_checkpoint_file(str(car_run["run"] / name))
        assert "optimizer" not in checkpoint and "scheduler" not in checkpoint, name
        assert checkpoint["metadata"]["stuff_classes"] == ["background", "object"]
        assert checkpoint["metadata"]["headline_metric"] == "sem_seg/IoU"  # binary: foreground


@pytest.mark.slow
def test_checkpoint_without_metadata_warns_that_names_are_missing(car_run, tmp_path, caplog):
    checkpoint = load_checkpoint_file(str(run_weights(car_run["run"])))
    torch.save(checkpoint["model"], tmp_path / "plain.pth")  # a bare state dict
    # No names anywhere: not in the config, and no training set whose catalog entry (registered
    # by whichever test of this process trained on it first) could lend its names.
    config = get_cfg()
    config.merge_from_file(str(car_run["run"] / "config.yaml"))
    config.DATASETS.THING_CLASSES, config.DATASETS.STUFF_CLASSES = [], []
    config.DATASETS.TRAIN, config.DATASETS.TEST = (), ()
    (tmp_path / "config.yaml").write_text(config.dump())
    with caplog.at_level(logging.WARNING, logger="d2seg.engine.predictor"):
        predictor = DefaultPredictor.from_run(tmp_path, weights="plain.pth")
    assert predictor.metadata.get("stuff_classes") is None
    assert "carries no class names" in caplog.text


def test_run_weights_prefers_best_then_final_then_newest(tmp_path):
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        run_weights(tmp_path)
    for name in ("model_0000009.pth", "model_0000019.pth", "model_0000004.pth"):
        (tmp_path / name).touch()
    assert run_weights(tmp_path).name == "model_0000019.pth"
    (tmp_path / "model_final.pth").touch()
    assert run_weights(tmp_path).name == "model_final.pth"
    (tmp_path / "model_best.pth").touch()
    assert run_weights(tmp_path).name == "model_best.pth"


def test_from_run_without_config_says_what_a_run_folder_is(tmp_path):
    with pytest.raises(ConfigError, match="config.yaml not found.*OUTPUT_DIR of a training run"):
        DefaultPredictor.from_run(tmp_path)


@pytest.mark.slow
def test_the_readme_example_runs_on_a_run_folder(balloon_run, tmp_path):
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- README-EXAMPLE:", 1)[1].split("```python\n", 1)[1].split("```")[0]
    assert len(block.strip().splitlines()) <= 8  # "five lines of Python", plus imports
    code = block.replace("output/demo/balloons_run", str(balloon_run["run"])).replace(
        "annotations/balloons/", str(REPO_ROOT / "annotations" / "balloons") + "/"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    names = eval(result.stdout.strip().splitlines()[-1])  # the printed class names
    assert names and set(names) == {"balloon"}
    overlay = cv2.imread(str(tmp_path / "overlay.png"))
    original = cv2.imread(str(REPO_ROOT / "annotations" / "balloons" / "balloon_0000.jpg"))
    assert overlay.shape == original.shape and (overlay != original).any()
