#!/usr/bin/env python
"""tools/predict.py's pipeline vs bare loops over the same model, side by side in one process.

The model is the tiny Mask R-CNN (random init, eval; configs/tiny/mask_rcnn_R_18_tiny.yaml at
a 512 px test size). Prints:

- ``predict_overhead_ratio``: images/s of tools/predict.py (decode in threads → predictor →
  predictions.json, overlays off, ``--batch-size 4``) ÷ images/s of a loop calling
  ``predict_batch`` on pre-decoded images, 4 at a time (target ≥ 0.90; 64 images of 512²);
- ``video_fps_ratio``: frames/s of tools/predict.py on a video (overlay video +
  predictions.jsonl) ÷ frames/s of a plain ``cv2.VideoCapture`` → predictor → Visualizer →
  ``VideoWriter`` loop (target ≥ 1.0);
- ``tiled_vs_sahi``: seconds of d2seg's tiled inference ÷ seconds of SAHI's
  ``get_sliced_prediction`` (the same model wrapped as a SAHI ``DetectionModel``, the same
  slices, overlap and GREEDYNMM merging) on a 2048² image of many small balloons (target
  ≤ 0.7), and the share of SAHI's detections ours matches at box IoU ≥ 0.5 (target ≥ 0.95).
"""

import argparse
import contextlib
import importlib.util
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from d2seg.config import get_cfg
from d2seg.data.synthetic import render_sample
from d2seg.engine.predictor import DefaultPredictor
from d2seg.modeling import build_model
from d2seg.utils.visualizer import Visualizer

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "configs" / "tiny" / "mask_rcnn_R_18_tiny.yaml"


def _tool():
    spec = importlib.util.spec_from_file_location("predict_tool",
                                                  REPO_ROOT / "tools" / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(*argv) -> dict:
    """tools/predict.py in this process; its report.json."""
    tool = _tool()
    old_argv, sys.argv = sys.argv, ["predict.py", *map(str, argv)]
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            code = tool.main()
    finally:
        sys.argv = old_argv
    assert code == 0, f"tools/predict.py exited {code}"
    output = Path(argv[list(argv).index("--output") + 1])
    return json.loads((output / "report.json").read_text())


def model_opts(size: int, weights: Path) -> list[str]:
    return ["MODEL.WEIGHTS", str(weights), "MODEL.ROI_HEADS.NUM_CLASSES", "1",
            "INPUT.MIN_SIZE_TEST", str(size), "INPUT.MAX_SIZE_TEST", str(size),
            "DATASETS.THING_CLASSES", "('balloon',)"]


def bench_overhead(root: Path, predictor: DefaultPredictor, weights: Path, count: int,
                   size: int, batch: int, rounds: int) -> float:
    folder = root / "images"
    folder.mkdir()
    for i in range(count):
        image = render_sample("balloons", seed=1, size=(size, size), index=i)["image"]
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), image[:, :, ::-1])
    decoded = [cv2.imread(str(p))[:, :, ::-1].copy() for p in sorted(folder.glob("*.jpg"))]
    # Rounds alternate bare loop and tool so that a change in machine load between the two
    # does not land on one side; each side's median round is compared. Both are timed from
    # their first batch, as the tool's images/s is.
    bare_rates, tool_rates = [], []
    for r in range(rounds):
        start = time.perf_counter()
        for i in range(0, len(decoded), batch):
            predictor.predict_batch(decoded[i:i + batch])
        bare_rates.append(len(decoded) / (time.perf_counter() - start))
        report = run_tool("--config-file", CONFIG, "--input", folder, "--output",
                          root / f"out{r}", "--no-overlay", "--batch-size", batch,
                          *model_opts(size, weights))
        tool_rates.append(report["images_per_s"])
    bare, ours = float(np.median(bare_rates)), float(np.median(tool_rates))
    print(f"predict_images_per_s: {ours:.2f}  bare_loop_images_per_s: {bare:.2f}  "
          f"(median of {rounds} alternating rounds)")
    print(f"predict_overhead_ratio: {ours / bare:.3f}  (target >= 0.90)")
    return ours / bare


def bench_video(root: Path, predictor: DefaultPredictor, weights: Path, frames: int,
                size: int, batch: int) -> float:
    video = root / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (size, size))
    for i in range(frames):
        writer.write(render_sample("balloons", seed=2, size=(size, size), index=i)["image"][
            :, :, ::-1])
    writer.release()
    start = time.perf_counter()
    capture = cv2.VideoCapture(str(video))
    out = cv2.VideoWriter(str(root / "plain.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0,
                          (size, size))
    count = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        outputs = predictor(frame, format="BGR")
        vis = Visualizer(frame[:, :, ::-1], predictor.metadata)
        out.write(vis.draw_instance_predictions(outputs["instances"]).get_image()[:, :, ::-1])
        count += 1
    capture.release()
    out.release()
    plain = count / (time.perf_counter() - start)
    report = run_tool("--config-file", CONFIG, "--video-input", video, "--output", root / "vid",
                      "--batch-size", batch, *model_opts(size, weights))
    ours = report["frames_per_s"]
    print(f"predict_frames_per_s: {ours:.2f}  plain_loop_frames_per_s: {plain:.2f}")
    print(f"video_fps_ratio: {ours / plain:.3f}  (target >= 1.0)")
    return ours / plain


def _sahi_model(predictor: DefaultPredictor):
    """The predictor as a SAHI ``DetectionModel`` (RGB slices in, ObjectPredictions out)."""
    from sahi.models.base import DetectionModel
    from sahi.prediction import ObjectPrediction
    from sahi.utils.cv import get_coco_segmentation_from_bool_mask

    class D2SegDetectionModel(DetectionModel):
        def check_dependencies(self, packages=None) -> None:
            pass

        def set_model(self, model, **kwargs) -> None:
            self.model = model

        def perform_inference(self, image: np.ndarray) -> None:
            self._original_predictions = self.model(image, format="RGB")["instances"]

        def _create_object_prediction_list_from_original_predictions(
            self, shift_amount_list=[[0, 0]], full_shape_list=None
        ) -> None:
            instances = self._original_predictions
            shift = shift_amount_list[0] if shift_amount_list else [0, 0]
            full = None if full_shape_list is None else full_shape_list[0]
            predictions = []
            for box, score, c, mask in zip(instances["boxes"].tolist(),
                                           instances["scores"].tolist(),
                                           instances["classes"].tolist(),
                                           instances["masks"].numpy()):
                segmentation = get_coco_segmentation_from_bool_mask(mask)
                if segmentation:
                    predictions.append(ObjectPrediction(
                        bbox=box, segmentation=segmentation, category_id=int(c),
                        category_name="balloon", score=score, shift_amount=shift,
                        full_shape=full))
            self._object_prediction_list_per_image = [predictions]

    return D2SegDetectionModel(model=predictor, confidence_threshold=0.0,
                               category_mapping={"0": "balloon"}, device="cpu")


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of N×4 and M×4 XYXY boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def _mosaic(size: int, cell: int) -> np.ndarray:
    """A size×size RGB image of (size / cell)² synthetic balloon scenes: many small objects."""
    n = size // cell
    cells = [render_sample("balloons", seed=3, size=(cell, cell), index=i)["image"]
             for i in range(n * n)]
    return np.ascontiguousarray(np.concatenate(
        [np.concatenate(cells[r * n:(r + 1) * n], axis=1) for r in range(n)], axis=0))


def bench_tiled_vs_sahi(predictor: DefaultPredictor, size: int, tile: int,
                        overlap: float) -> float:
    """Our TiledPredictor vs SAHI's get_sliced_prediction on one size² image of many small
    balloons: the same model, slices, overlap and GREEDYNMM/IOS 0.5 merging."""
    from sahi.predict import get_sliced_prediction

    from d2seg.engine.tiling import TiledPredictor

    image = _mosaic(size, cell=128)
    ours_model = TiledPredictor(predictor, tile=tile, overlap=overlap, merge="nmm")
    predictor(image[:tile, :tile], format="RGB")  # warm-up, for both
    start = time.perf_counter()
    ours = ours_model(image, format="RGB")["instances"]
    ours_seconds = time.perf_counter() - start
    sahi_model = _sahi_model(predictor)
    start = time.perf_counter()
    sahi = get_sliced_prediction(image, sahi_model, slice_height=tile, slice_width=tile,
                                 overlap_height_ratio=overlap, overlap_width_ratio=overlap,
                                 perform_standard_pred=False, postprocess_type="GREEDYNMM",
                                 postprocess_match_metric="IOS", postprocess_match_threshold=0.5,
                                 force_postprocess_type=True, verbose=0)
    sahi_seconds = time.perf_counter() - start
    sahi_boxes = np.array([p.bbox.to_xyxy() for p in sahi.object_prediction_list]).reshape(-1, 4)
    ious = _box_iou(sahi_boxes, ours["boxes"].numpy().astype(np.float64))
    matched = float((ious.max(axis=1) >= 0.5).mean()) if ious.size else float("nan")
    ratio = ours_seconds / sahi_seconds
    print(f"tiled_seconds: {ours_seconds:.2f}  sahi_seconds: {sahi_seconds:.2f}  "
          f"detections ours/sahi: {len(ours['boxes'])}/{len(sahi_boxes)}")
    print(f"tiled_vs_sahi: {ratio:.3f}  (target <= 0.7)  sahi_matched_at_iou50: {matched:.3f}"
          f"  (target >= 0.95)")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="alternating overhead rounds")
    parser.add_argument("--tiled-size", type=int, default=2048)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=0.25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = get_cfg()
        cfg.merge_from_file(str(CONFIG))
        cfg.merge_from_list(model_opts(args.size, Path(""))[2:])
        torch.manual_seed(0)
        weights = root / "random.pth"
        torch.save(build_model(cfg).state_dict(), weights)
        cfg.MODEL.WEIGHTS = str(weights)
        cfg.MODEL.DEVICE = "auto"  # as tools/predict.py
        print(f"--- tiny Mask R-CNN (random init), {args.size}² images, batch {args.batch_size}")
        bench_overhead(root, DefaultPredictor(cfg), weights, args.images, args.size,
                       args.batch_size, args.rounds)
        video_cfg = cfg.clone()
        video_cfg.merge_from_list(model_opts(args.size // 2, weights))
        bench_video(root, DefaultPredictor(video_cfg), weights, args.frames, args.size // 2,
                    args.batch_size)
        tiled_cfg = cfg.clone()
        tiled_cfg.merge_from_list(model_opts(args.tile, weights))
        bench_tiled_vs_sahi(DefaultPredictor(tiled_cfg), args.tiled_size, args.tile,
                            args.overlap)


if __name__ == "__main__":
    main()
