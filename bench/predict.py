#!/usr/bin/env python
"""tools/predict.py's pipeline vs bare loops over the same model, side by side in one process.

The model is the tiny Mask R-CNN (configs/tiny/mask_rcnn_R_18_tiny.yaml at a 512 px test size):
random init for the two throughput ratios, and for ``tiled_vs_sahi`` the same model trained in
this run for ``--train-iters`` iterations on synthetic 128 px balloon scenes (written to the
run's temp dir), since with random weights nothing is confident and detections are noise.
Prints:

- ``predict_overhead_ratio``: images/s of tools/predict.py (decode in threads → predictor →
  predictions.json, overlays off, ``--batch-size 4``) ÷ images/s of a loop calling
  ``predict_batch`` on pre-decoded images, 4 at a time (target ≥ 0.90; 64 images of 512²);
- ``video_fps_ratio``: frames/s of tools/predict.py on a video (overlay video +
  predictions.jsonl) ÷ frames/s of a plain ``cv2.VideoCapture`` → predictor → Visualizer →
  ``VideoWriter`` loop (target ≥ 1.0);
- ``tiled_vs_sahi``: seconds of d2seg's tiled inference ÷ seconds of SAHI's
  ``get_sliced_prediction`` (the same model wrapped as a SAHI ``DetectionModel``, the same
  slices, overlap and GREEDYNMM merging) on a 2048² image of many small balloons (target
  ≤ 0.7), and the share of SAHI's detections ours matches at box IoU ≥ 0.5 (target ≥ 0.95),
  for each ``--tile-mode`` (``features``, the R-CNN default: one backbone pass, the heads per
  tile; ``images``: the whole model per tile, as SAHI). Both tools are timed in CPU seconds of
  this process, alternating, median of ``--tiled-rounds``.
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
from d2seg.data.convert.pipeline import convert_dataset
from d2seg.data.synthetic import make_balloons, render_sample
from d2seg.engine.predictor import DefaultPredictor
from d2seg.engine.trainer import DefaultTrainer
from d2seg.modeling import build_model
from d2seg.utils.env import seed_all_rng
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


def train_small_objects(root: Path, iterations: int, cell: int) -> Path:
    """The tiny Mask R-CNN trained on 48 synthetic cell×cell balloon scenes (seed 0; the bench
    image uses seed 3) for ``iterations``: its ``model_final.pth``."""
    make_balloons(root / "train_raw", 48, size=(cell, cell), seed=0)
    convert_dataset(root / "train_raw", root / "train_coco", outputs=("instances",))
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    # One LR step at 3/4 of the run; none when that is iteration 0 (the scheduler refuses it).
    step = iterations * 3 // 4
    cfg.merge_from_list([
        "DATASETS.TRAIN", f"('{root / 'train_coco' / 'annotations' / 'all.json'}',)",
        "DATASETS.TEST", "()", "MODEL.ROI_HEADS.NUM_CLASSES", "1",
        "INPUT.MIN_SIZE_TRAIN", f"({cell},)", "INPUT.MAX_SIZE_TRAIN", str(cell),
        "SOLVER.MAX_ITER", str(iterations), "SOLVER.STEPS", f"({step},)" if step > 0 else "()",
        "SOLVER.CHECKPOINT_PERIOD", str(10**9), "TEST.EVAL_PERIOD", "0",
        "OUTPUT_DIR", str(root / "trained"),
    ])
    seed_all_rng(cfg.SEED)
    start = time.perf_counter()
    DefaultTrainer(cfg).train()
    print(f"trained the tiny Mask R-CNN for {iterations} iterations on {cell}² balloon scenes "
          f"in {time.perf_counter() - start:.0f} s")
    return root / "trained" / "model_final.pth"


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


def _mosaic(size: int, cell: int) -> tuple[np.ndarray, np.ndarray]:
    """A size×size RGB image of (size / cell)² synthetic balloon scenes (many small objects)
    and its ground-truth boxes (N×4 XYXY, the tight boxes of the objects' masks)."""
    n = size // cell
    samples = [render_sample("balloons", seed=3, size=(cell, cell), index=i) for i in range(n * n)]
    image = np.ascontiguousarray(np.concatenate(
        [np.concatenate([s["image"] for s in samples[r * n:(r + 1) * n]], axis=1)
         for r in range(n)], axis=0))
    boxes = []
    for i, sample in enumerate(samples):
        y0, x0 = (i // n) * cell, (i % n) * cell
        for mask in sample["masks"]:
            ys, xs = np.nonzero(mask)
            boxes.append([x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1])
    return image, np.array(boxes, dtype=np.float64).reshape(-1, 4)


def _matched(reference: np.ndarray, ours: np.ndarray) -> float:
    """The share of ``reference`` boxes (N×4 XYXY) that one of ``ours`` overlaps at IoU ≥ 0.5."""
    ious = _box_iou(reference, ours)
    return float((ious.max(axis=1) >= 0.5).mean()) if ious.size else float("nan")


def _accuracy(truth: np.ndarray, detected: np.ndarray) -> str:
    """Against the ground truth at box IoU ≥ 0.5: the share of objects found (recall) and of
    detections that are objects (precision), every score counted."""
    return (f"vs ground truth ({len(truth)} objects): recall {_matched(truth, detected):.3f} "
            f"precision {_matched(detected, truth):.3f}")


def bench_tiled_vs_sahi(predictor: DefaultPredictor, size: int, tile: int, overlap: float,
                        rounds: int, block: int | None) -> dict[str, float]:
    """Our TiledPredictor, in each tile mode, vs SAHI's get_sliced_prediction on one size²
    image of many small balloons: the same model, slices, overlap and GREEDYNMM/IOS 0.5
    merging (``block``: features mode's largest backbone input side). CPU seconds of this
    process, the three alternating, median of ``rounds``.
    Returns ``tiled_vs_sahi`` per mode."""
    from sahi.predict import get_sliced_prediction

    from d2seg.engine.tiling import DEFAULT_BLOCK, TILE_MODES, TiledPredictor

    image, truth = _mosaic(size, cell=128)
    ours_models = {mode: TiledPredictor(predictor, tile=tile, overlap=overlap, merge="nmm",
                                        mode=mode, block=block or DEFAULT_BLOCK)
                   for mode in TILE_MODES}
    sahi_model = _sahi_model(predictor)
    predictor(image[:tile, :tile], format="RGB")  # warm-up, for all
    seconds: dict[str, list[float]] = {name: [] for name in ("sahi", *TILE_MODES)}
    boxes: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        start = time.process_time()
        sahi = get_sliced_prediction(
            image, sahi_model, slice_height=tile, slice_width=tile, overlap_height_ratio=overlap,
            overlap_width_ratio=overlap, perform_standard_pred=False, postprocess_type="GREEDYNMM",
            postprocess_match_metric="IOS", postprocess_match_threshold=0.5,
            force_postprocess_type=True, verbose=0)
        seconds["sahi"].append(time.process_time() - start)
        boxes["sahi"] = np.array([p.bbox.to_xyxy() for p in sahi.object_prediction_list]
                                 ).reshape(-1, 4)
        for mode, model in ours_models.items():
            start = time.process_time()
            instances = model(image, format="RGB")["instances"]
            seconds[mode].append(time.process_time() - start)
            boxes[mode] = instances["boxes"].numpy().astype(np.float64)
    median = {name: float(np.median(values)) for name, values in seconds.items()}
    print(f"sahi_cpu_seconds: {median['sahi']:.2f}  detections: {len(boxes['sahi'])}  "
          f"(median of {rounds} alternating rounds)  {_accuracy(truth, boxes['sahi'])}")
    ratios = {}
    for mode in TILE_MODES:
        ratios[mode] = median[mode] / median["sahi"]
        print(f"tile-mode {mode}: cpu_seconds {median[mode]:.2f}  detections "
              f"{len(boxes[mode])}  tiled_vs_sahi: {ratios[mode]:.3f}  (target <= 0.7)  "
              f"sahi_matched_at_iou50: {_matched(boxes['sahi'], boxes[mode]):.3f}  "
              f"ours_matched_by_sahi: {_matched(boxes[mode], boxes['sahi']):.3f}  "
              f"(target >= 0.95)  {_accuracy(truth, boxes[mode])}")
    return ratios


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
    parser.add_argument("--tiled-rounds", type=int, default=3)
    parser.add_argument("--tile-block", type=int, default=None,
                        help="features mode's largest backbone input side (default: "
                        "TiledPredictor's, as tools/predict.py)")
    parser.add_argument("--train-iters", type=int, default=300,
                        help="iterations of the model trained for tiled_vs_sahi")
    parser.add_argument("--trained-weights", type=Path, default=None,
                        help="a checkpoint train_small_objects wrote in an earlier run: skip "
                        "the training")
    parser.add_argument("--only", choices=("all", "tiled"), default="all",
                        help="tiled: skip the two throughput ratios")
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
        if args.only == "all":
            print(f"--- tiny Mask R-CNN (random init), {args.size}² images, "
                  f"batch {args.batch_size}")
            bench_overhead(root, DefaultPredictor(cfg), weights, args.images, args.size,
                           args.batch_size, args.rounds)
            video_cfg = cfg.clone()
            video_cfg.merge_from_list(model_opts(args.size // 2, weights))
            bench_video(root, DefaultPredictor(video_cfg), weights, args.frames, args.size // 2,
                        args.batch_size)
        print(f"--- tiny Mask R-CNN trained on small objects, {args.tiled_size}² image, "
              f"{args.tile} px tiles")
        trained = args.trained_weights or train_small_objects(root, args.train_iters, cell=128)
        tiled_cfg = cfg.clone()
        tiled_cfg.merge_from_list(model_opts(args.tile, trained))
        # A 512 px tile of this image holds ~40 objects: the tiny config's limits (50
        # proposals, 20 detections per image) would cap the recall of both tools.
        tiled_cfg.merge_from_list(["TEST.DETECTIONS_PER_IMAGE", "100",
                                   "MODEL.RPN.PRE_NMS_TOPK_TEST", "400",
                                   "MODEL.RPN.POST_NMS_TOPK_TEST", "200"])
        bench_tiled_vs_sahi(DefaultPredictor(tiled_cfg), args.tiled_size, args.tile,
                            args.overlap, args.tiled_rounds, args.tile_block)


if __name__ == "__main__":
    main()
