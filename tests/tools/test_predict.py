"""``tools/predict.py`` as a user runs it: sources, outputs, bad inputs, videos, tiling.

Two tiny models are trained once for this file with ``tools/train_net.py`` on synthetic data (a
Mask R-CNN on balloons, a grayscale binary U-Net on cars); the tool runs in-process.
"""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from pycocotools import mask as mask_util

from d2seg import DefaultPredictor, build_model, get_cfg
from d2seg.data.convert.pipeline import convert_dataset
from d2seg.data.convert.source import SourceOptions
from d2seg.evaluation.coco_evaluation import (
    evaluate_coco_predictions,
    load_coco_gt,
    validate_coco_results,
)
from d2seg.data.detection_utils import segmentation_to_mask
from d2seg.data.labelme import LabelmeShape, rasterize_shape
from d2seg.engine.prediction_sources import PredictionInput
from d2seg.engine.prediction_writers import CocoResultsWriter, LabelmeWriter
from d2seg.data.synthetic import render_sample

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def predict(run_tool):
    """``predict(*argv) -> (exit status, stdout, stderr)``: tools/predict.py with ``argv``."""
    return lambda *argv: run_tool("predict", *argv)


@pytest.fixture(scope="module")
def balloons(tmp_path_factory, train_run, balloon_split) -> dict:
    """A 12-iteration Mask R-CNN on synthetic balloons, evaluated on its val split."""
    run = tmp_path_factory.mktemp("balloons") / "run"
    train_run(
        str(REPO_ROOT / "configs" / "tiny" / "mask_rcnn_R_18_tiny.yaml"), run,
        "DATASETS.TRAIN", f"('{balloon_split['train']}',)",
        "DATASETS.TEST", f"('{balloon_split['val']}',)", "MODEL.ROI_HEADS.NUM_CLASSES", "0",
        "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128", "SOLVER.MAX_ITER", "12",
        "DATALOADER.NUM_WORKERS", "0",
    )
    return {"run": run, **balloon_split}


@pytest.fixture(scope="module")
def cars(tmp_path_factory, train_run, car_split) -> dict:
    """A grayscale binary U-Net on synthetic cars, trained long enough to be confident."""
    run = tmp_path_factory.mktemp("cars") / "run"
    train_run(
        str(REPO_ROOT / "configs" / "tiny" / "unet_R_18_gray_binary_tiny.yaml"), run,
        "DATASETS.TRAIN", f"('{car_split['train']}',)",
        "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "40", "SOLVER.BASE_LR", "0.003",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
        "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96", "DATALOADER.NUM_WORKERS", "0",
    )
    return {"run": run, "images": car_split["images"]}


def _coco_results(path: Path) -> list[dict]:
    return json.loads(path.read_text())


@pytest.mark.slow
def test_predictions_json_equals_the_evaluators_results_and_scores_the_same(balloons, tmp_path, predict):
    code, out, _ = predict("--run", balloons["run"], "--input", balloons["val"], "--output",
                           tmp_path / "out", "--batch-size", "3", "--polygons")
    assert code == 0
    ours = _coco_results(tmp_path / "out" / "predictions.json")
    theirs = _coco_results(balloons["run"] / "inference" / "val" / "coco_instances_results.json")
    assert theirs, "the tiny model must predict something for this test to mean anything"
    # Batches of 3 against the evaluator's batches of 1: equal up to float rounding.
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert {k: a[k] for k in ("image_id", "category_id", "segmentation")} == \
            {k: b[k] for k in ("image_id", "category_id", "segmentation")}
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-3)
    gt = json.loads(balloons["val"].read_text())
    names = {im["id"]: im["file_name"] for im in gt["images"]}
    assert all(Path(r["file_name"]).name == names[r["image_id"]] and
               r["category_name"] == "balloon" and "polygons" in r for r in ours)
    # Outer contours, as flat x, y lists inside the image (lines 1 px thin have none).
    polygons = [p for r in ours for p in r["polygons"]]
    assert polygons and all(len(p) % 2 == 0 and len(p) >= 6 for p in polygons)
    # Scored as tools/evaluate_coco.py scores a file: the evaluator's numbers.
    coco_gt = load_coco_gt(balloons["val"])
    scores = [evaluate_coco_predictions(coco_gt, validate_coco_results(r, coco_gt, "segm", "x"),
                                        "segm", class_names=["balloon"])[0] for r in (ours, theirs)]
    assert scores[0] == pytest.approx(scores[1], abs=1e-6, nan_ok=True)
    assert "overlays:" in out and len(list((tmp_path / "out" / "overlays").glob("*.png"))) == 4


@pytest.mark.slow
def test_every_source_kind_is_found_and_named(balloons, tmp_path, predict):
    photos = sorted(balloons["images"].glob("*.jpg"))[:5]
    (tmp_path / "folder" / "sub").mkdir(parents=True)
    (tmp_path / "globbed").mkdir()
    for src, dst in ((photos[0], "folder/a.jpg"), (photos[1], "folder/sub/b.jpg"),
                     (photos[2], "globbed/c.jpg"), (photos[3], "listed.jpg"),
                     (photos[4], "single.jpg")):
        (tmp_path / dst).write_bytes(src.read_bytes())
    (tmp_path / "folder" / "notes.md").write_text("not an image")  # ignored inside a folder
    (tmp_path / "list.txt").write_text("# a comment\nlisted.jpg\n")
    code, _, err = predict("--run", balloons["run"], "--output", tmp_path / "out",
                           "--input", tmp_path / "folder", "--input", tmp_path / "globbed/*.jpg",
                           "--input", tmp_path / "list.txt", "--input", tmp_path / "single.jpg",
                           "--input", tmp_path / "single.jpg")  # given twice: predicted once
    assert code == 0, err
    overlays = sorted(p.relative_to(tmp_path / "out" / "overlays").as_posix()
                      for p in (tmp_path / "out" / "overlays").rglob("*.png"))
    assert overlays == ["a.png", "c.png", "listed.png", "single.png", "sub/b.png"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["processed_images"] == 5 and report["skipped"] == []
    overlay = np.asarray(Image.open(tmp_path / "out" / "overlays" / "a.png"))
    assert overlay.shape == (96, 128, 3)
    assert (overlay != cv2.imread(str(photos[0]))[:, :, ::-1]).any()  # something drawn


@pytest.mark.slow
def test_usage_errors_exit_2_with_one_line(balloons, tmp_path, predict):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    photo = next(balloons["images"].glob("*.jpg"))
    cases = [
        (["--run", tmp_path / "nope", "--input", photo, "--output", tmp_path / "o1"],
         "config.yaml not found"),
        (["--run", balloons["run"], "--input", tmp_path / "*.png", "--output", tmp_path / "o2"],
         "matched no image or video"),
        (["--run", balloons["run"], "--input", photo, "--output", tmp_path / "full"],
         "--exist-ok"),
        (["--config-file", balloons["run"] / "config.yaml", "--input", photo, "--output",
          tmp_path / "o3", "MODEL.WEIGHTS", ""], "no MODEL.WEIGHTS"),
    ]
    for argv, message in cases:
        code, _, err = predict(*argv)
        assert code == 2, (argv, err)
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    code, _, err = predict("--config-file", balloons["run"] / "config.yaml", "--input", photo,
                           "--output", tmp_path / "o4", "MODEL.WEIGHTS",
                           balloons["run"] / "model_final.pth", "MODEL.DEVICE", "cpu")
    assert code == 0, err
    code, _, err = predict("--run", balloons["run"], "--input", photo, "--output",
                           tmp_path / "full", "--exist-ok")
    assert code == 0 and (tmp_path / "full" / "x").exists(), err


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.slow
def test_labelme_predictions_convert_back_to_the_same_masks(balloons, tmp_path, predict):
    code, _, err = predict("--run", balloons["run"], "--input", balloons["val"], "--output",
                           tmp_path / "out", "--save-labelme", "--no-overlay",
                           "--score-threshold", "0.1")
    assert code == 0, err
    assert not (tmp_path / "out" / "overlays").exists()
    predictions = _coco_results(tmp_path / "out" / "predictions.json")
    assert predictions and min(p["score"] for p in predictions) >= 0.1
    labelme = tmp_path / "out" / "labelme"
    one = json.loads(next(labelme.glob("*.json")).read_text())
    assert one["version"].startswith("5.") and one["imageData"] is None
    assert (labelme / one["imagePath"]).resolve().is_file()  # relative to the JSON file
    _assert_converter_reproduces(labelme, tmp_path / "back", predictions)


def _converted_masks(labelme: Path, out: Path) -> dict[str, list[np.ndarray]]:
    """Masks per image stem of tools/convert_labelme.py's output for a Labelme folder: polygons
    rasterised as Labelme (and the converter, for areas and label maps) does, RLE decoded."""
    convert_dataset(labelme, out, outputs=("instances",),
                    options=SourceOptions(allow_outside_root=True))
    coco = json.loads((out / "annotations" / "all.json").read_text())
    images = {im["id"]: im for im in coco["images"]}
    masks: dict[str, list[np.ndarray]] = {}
    for ann in coco["annotations"]:
        image = images[ann["image_id"]]
        height, width, segm = image["height"], image["width"], ann["segmentation"]
        if isinstance(segm, list):
            mask = np.zeros((height, width), bool)
            for polygon in segm:
                mask |= rasterize_shape(LabelmeShape(0, "", "polygon",
                                                     np.reshape(polygon, (-1, 2)), None),
                                        height, width)
        else:
            mask = segmentation_to_mask(segm, height, width, "converted")
        masks.setdefault(Path(image["file_name"]).stem, []).append(mask)
    return masks


def _assert_converter_reproduces(labelme: Path, out: Path, predictions: list[dict]) -> None:
    converted = _converted_masks(labelme, out)
    for p in predictions:
        mask = mask_util.decode(p["segmentation"]).astype(bool)
        if mask.any():
            candidates = converted[Path(p["file_name"]).stem]
            assert max(_iou(mask, m) for m in candidates) >= 0.95, p


def test_labelme_writer_polygons_for_plain_objects_and_lines_masks_for_holes(tmp_path):
    height, width = 80, 120
    masks = np.zeros((3, height, width), np.uint8)
    cv2.ellipse(masks[0], (40, 40), (25, 15), 30, 0, 360, 1, -1)  # plain: a polygon
    cv2.circle(masks[1], (90, 40), 20, 1, -1)
    cv2.circle(masks[1], (90, 40), 8, 0, -1)  # a ring: holes need a mask shape
    masks[2, 70, 10:60] = 1  # a 1-pixel line: a thin polygon still fills it exactly
    masks = masks.astype(bool)
    image = np.full((height, width, 3), 120, np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    boxes = [[x.min(), y.min(), x.max() + 1, y.max() + 1]
             for y, x in (np.nonzero(m) for m in masks)]
    instances = {"boxes": torch.tensor(boxes, dtype=torch.float32),
                 "scores": torch.tensor([0.9, 0.8, 0.7]), "classes": torch.tensor([0, 1, 0]),
                 "masks": torch.from_numpy(masks)}
    item = PredictionInput(tmp_path / "photo.png", "photo", "image", 1)
    out = tmp_path / "out"
    LabelmeWriter(out, ["balloon", "ring"], [], embed=True).write(item, image,
                                                                 {"instances": instances})
    written = json.loads((out / "labelme" / "photo.json").read_text())
    assert [(s["label"], s["shape_type"]) for s in written["shapes"]] == [
        ("balloon", "polygon"), ("ring", "mask"), ("balloon", "polygon")]
    assert written["imagePath"] == "../../photo.png" and written["imageData"]
    assert written["shapes"][0]["description"] == "score 0.900"
    results = CocoResultsWriter(out, ["balloon", "ring"], [1, 2], True).image_results(
        item, instances)
    _assert_converter_reproduces(out / "labelme", tmp_path / "back", results)


def _write_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()


@pytest.mark.slow
def test_video_gives_an_overlay_video_and_one_line_per_frame(balloons, tmp_path, predict):
    frames = [cv2.imread(str(p)) for p in sorted(balloons["images"].glob("*.jpg"))[:6]]
    _write_video(tmp_path / "clip.mp4", frames, 5.0)
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    code, _, err = predict("--run", balloons["run"], "--video-input", tmp_path / "clip.mp4",
                           "--input", tmp_path / "broken.mp4", "--output", tmp_path / "out",
                           "--batch-size", "4")
    assert code == 1
    assert "broken.mp4 cannot be opened" in err
    capture = cv2.VideoCapture(str(tmp_path / "out" / "overlays" / "clip.mp4"))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(5.0)
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    capture.release()
    lines = (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["frame"] for r in records] == list(range(6))
    assert records[2]["time_s"] == pytest.approx(0.4)
    assert all("instances" in r for r in records)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["processed_videos"] == 1 and report["frames"] == 6
    assert [s["path"] for s in report["skipped"]] == [str(tmp_path / "broken.mp4")]


def _assert_same_records(ours: list[dict], theirs: list[dict]) -> None:
    """The same COCO results in the same order: exact ids, names and masks; scores and boxes
    within float rounding."""
    exact = ("image_id", "file_name", "category_id", "category_name", "segmentation")
    assert [{k: r.get(k) for k in exact} for r in ours] == \
        [{k: r.get(k) for k in exact} for r in theirs]
    for a, b in zip(ours, theirs):
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-3)


@pytest.mark.slow
def test_max_frames_stops_a_video_and_a_missing_webcam_is_one_skip(balloons, tmp_path, predict):
    frames = [cv2.imread(str(p)) for p in sorted(balloons["images"].glob("*.jpg"))[:5]]
    _write_video(tmp_path / "clip.mp4", frames, 5.0)
    code, _, err = predict("--run", balloons["run"], "--video-input", tmp_path / "clip.mp4",
                           "--max-frames", "2", "--webcam", "97", "--output", tmp_path / "out")
    assert code == 1
    assert "webcam 97 cannot be opened; fix:" in err
    lines = (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == [0, 1]
    capture = cv2.VideoCapture(str(tmp_path / "out" / "overlays" / "clip.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 2
    capture.release()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [s["path"] for s in report["skipped"]] == ["webcam97"]


@pytest.mark.slow
def test_torchrun_shards_the_inputs_and_merges_the_same_outputs(balloons, tmp_path, predict):
    """Two CPU processes under torchrun (gloo) write what one process writes: the same
    predictions.json in input order, one predictions.jsonl, one report with every skip."""
    import subprocess
    import sys

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for path in sorted(balloons["images"].glob("*.jpg"))[:5]:
        (inputs / path.name).write_bytes(path.read_bytes())
    (inputs / "truncated.jpg").write_bytes((inputs / path.name).read_bytes()[:300])
    frames = [cv2.imread(str(p)) for p in sorted(balloons["images"].glob("*.jpg"))[:3]]
    _write_video(tmp_path / "a.mp4", frames, 5.0)
    _write_video(tmp_path / "b.mp4", frames[::-1], 5.0)
    argv = ["--run-dir", balloons["run"], "--input", inputs, "--video-input", tmp_path / "a.mp4",
            "--video-input", tmp_path / "b.mp4", "--no-overlay"]  # batch 1: padding alike
    code, _, _ = predict(*argv, "--output", tmp_path / "one")
    assert code == 1
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--standalone", str(REPO_ROOT / "tools" / "predict.py"), *map(str, argv),
         "--output", str(tmp_path / "two")],
        capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode != 0, "a skipped input makes every process exit 1"
    one, two = tmp_path / "one", tmp_path / "two"
    # Other processes, other thread counts: scores and boxes agree to float rounding.
    _assert_same_records(_coco_results(two / "predictions.json"),
                         _coco_results(one / "predictions.json"))
    lines = [(two / "predictions.jsonl").read_text().splitlines(),
             (one / "predictions.jsonl").read_text().splitlines()]
    assert len(lines[0]) == len(lines[1]) == 6
    for a, b in zip(*lines):
        a, b = json.loads(a), json.loads(b)
        assert (a["file_name"], a["frame"]) == (b["file_name"], b["frame"])
        _assert_same_records(a["instances"], b["instances"])
    assert not list(two.glob("predictions.rank*.jsonl"))
    report_one = json.loads((one / "report.json").read_text())
    report_two = json.loads((two / "report.json").read_text())
    assert report_two["processes"] == 2 and report_one["processes"] == 1
    for key in ("processed_images", "processed_videos", "frames", "skipped"):
        assert report_two[key] == report_one[key], key
    assert report_two["processed_images"] == 5 and report_two["frames"] == 6


@pytest.mark.slow
def test_semantic_outputs_rasters_and_bad_inputs(cars, tmp_path, predict):
    photo = sorted(cars["images"].glob("*.jpg"))[0]  # an RGB jpg into a grayscale model
    rgb = np.asarray(Image.open(photo).convert("RGB"))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "photo.jpg").write_bytes(photo.read_bytes())
    np.save(inputs / "band.npy", gray)
    tifffile.imwrite(inputs / "band.tif", gray[None])  # planar, 1 band
    tifffile.imwrite(inputs / "four.tif", np.dstack([gray] * 4))
    (inputs / "cut.jpg").write_bytes(photo.read_bytes()[:300])  # truncated
    (tmp_path / "notes.docx").write_text("x")
    code, _, err = predict("--run", cars["run"], "--input", inputs, "--input",
                           tmp_path / "notes.docx", "--output", tmp_path / "out", "--save-probs",
                           "--save-labelme")
    assert code == 1
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"four.tif", "cut.jpg", "notes.docx"}
    assert "4 band(s) but the model takes 1 channel(s)" in reasons["four.tif"]
    assert "cannot read" in reasons["cut.jpg"] and "unsupported" in reasons["notes.docx"]
    assert all(line.startswith("skipped: ") for line in err.strip().splitlines()
               if "skipped" in line) and err.count("skipped: ") == 3
    assert report["processed_images"] == 3
    sem = tmp_path / "out" / "sem_seg"
    labels = {n: np.asarray(Image.open(sem / f"{n}.png")) for n in ("photo", "band", "band_2")}
    expected = DefaultPredictor.from_run(cars["run"])(gray)["sem_seg"]
    np.testing.assert_array_equal(labels["photo"], (expected[0] > 0).numpy().astype(np.uint8))
    np.testing.assert_array_equal(labels["band"], labels["photo"])
    np.testing.assert_array_equal(labels["band_2"], labels["photo"])  # the .tif, renamed
    assert labels["photo"].any(), "the model must find the car for this test to mean anything"
    probs = np.load(sem / "photo.npy")
    assert probs.dtype == np.float16 and probs.shape == (1, *gray.shape)
    # float16 keeps ~3 decimal digits: compare with the float32 sigmoid, not by thresholding
    # (a pixel at p = 0.50003 reads 0.5 in float16).
    np.testing.assert_allclose(probs[0].astype(np.float32), torch.sigmoid(expected[0]).numpy(),
                               atol=1e-3)
    shapes = json.loads((tmp_path / "out" / "labelme" / "photo.json").read_text())["shapes"]
    assert shapes and {s["label"] for s in shapes} == {"object"}


@pytest.mark.slow
def test_tiled_and_whole_image_label_maps_agree(cars, tmp_path, predict):
    big = render_sample("carvana", seed=5, size=(192, 288))["image"]
    Image.fromarray(big).save(tmp_path / "big.png")
    common = ("--run", cars["run"], "--input", tmp_path / "big.png", "--no-overlay")
    code, _, err = predict(*common, "--output", tmp_path / "auto")
    assert code == 0, err
    assert json.loads((tmp_path / "auto" / "report.json").read_text())["tiled_images"] == 1
    # With the test-time resize off the whole image fits the model: tiles must agree with it.
    code, _, err = predict(*common, "--output", tmp_path / "whole", "--no-tile",
                           "INPUT.MIN_SIZE_TEST", "0")
    assert code == 0, err
    code, _, err = predict(*common, "--output", tmp_path / "tiled", "--tile", "96",
                           "--overlap", "0.5", "--batch-size", "4", "INPUT.MIN_SIZE_TEST", "0")
    assert code == 0, err
    whole = np.asarray(Image.open(tmp_path / "whole" / "sem_seg" / "big.png"))
    tiled = np.asarray(Image.open(tmp_path / "tiled" / "sem_seg" / "big.png"))
    assert whole.any() and (whole == tiled).mean() >= 0.995


def test_panoptic_model_writes_coco_panoptic_png_and_json(tmp_path, predict):
    config = REPO_ROOT / "configs" / "tiny" / "panoptic_unet_R_18_tiny.yaml"
    cfg = get_cfg()
    cfg.merge_from_file(str(config))
    torch.manual_seed(0)
    torch.save(build_model(cfg).state_dict(), tmp_path / "random.pth")  # a bare state dict
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "noise.png")
    code, _, err = predict("--config-file", config, "--input", tmp_path / "noise.png",
                           "--output", tmp_path / "out", "MODEL.WEIGHTS", tmp_path / "random.pth",
                           "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                           "DATASETS.THING_CLASSES", "('a', 'b')")
    assert code == 0, err
    out = tmp_path / "out"
    assert not (out / "sem_seg").exists() and (out / "overlays" / "noise.png").is_file()
    rgb = np.asarray(Image.open(out / "panoptic" / "noise.png")).astype(np.int64)
    ids = rgb[:, :, 0] + 256 * rgb[:, :, 1] + 256 ** 2 * rgb[:, :, 2]
    panoptic = json.loads((out / "panoptic.json").read_text())
    (annotation,) = panoptic["annotations"]
    segments = annotation["segments_info"]
    assert segments and annotation["file_name"] == "noise.png"
    assert sorted(s["id"] for s in segments) == sorted(set(np.unique(ids).tolist()) - {0})
    for segment in segments:
        assert segment["area"] == int((ids == segment["id"]).sum())
    names = {c["id"]: c["name"] for c in panoptic["categories"]}
    assert {names[s["category_id"]] for s in segments if s["isthing"]} <= {"a", "b"}


def test_tile_modes_of_an_rcnn_model_and_features_refused_for_a_semantic_one(tmp_path, predict):
    """``--tile-mode features`` (the R-CNN default) and ``images`` both tile and write
    detections; a semantic model has no detection heads to run per tile: a usage error."""
    image = render_sample("balloons", seed=4, size=(192, 256))["image"]
    Image.fromarray(image).save(tmp_path / "big.png")
    weights = {}
    for name in ("mask_rcnn_R_18_tiny", "unet_R_18_tiny"):
        cfg = get_cfg()
        cfg.merge_from_file(str(REPO_ROOT / "configs" / "tiny" / f"{name}.yaml"))
        torch.manual_seed(0)
        weights[name] = tmp_path / f"{name}.pth"
        torch.save(build_model(cfg).state_dict(), weights[name])

    def run(name: str, out: str, *opts):
        return predict("--config-file", REPO_ROOT / "configs" / "tiny" / f"{name}.yaml",
                       "--input", tmp_path / "big.png", "--output", tmp_path / out,
                       "--no-overlay", "--tile", "128", *opts, "MODEL.WEIGHTS", weights[name],
                       "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")

    for mode in ("features", "images"):
        code, _, err = run("mask_rcnn_R_18_tiny", mode, "--tile-mode", mode,
                           "DATASETS.THING_CLASSES", "('a', 'b')")
        assert code == 0, err
        assert json.loads((tmp_path / mode / "report.json").read_text())["tiled_images"] == 1
        assert _coco_results(tmp_path / mode / "predictions.json")
    code, _, err = run("unet_R_18_tiny", "semantic", "--tile-mode", "features")
    assert code == 2 and "--tile-mode images" in err
