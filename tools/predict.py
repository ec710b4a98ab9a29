#!/usr/bin/env python
"""Run a trained model on images, folders, videos and very large images; write what it found.

    python tools/predict.py --run runs/balloon --input 'photos/*.jpg' --output out/balloon
    python tools/predict.py --config-file F.yaml --input DIR --output OUT MODEL.WEIGHTS W.pth

``--input`` (repeatable): image files, folders (recursive), quoted globs, ``.txt`` lists of
paths, videos (.mp4 .avi .mov .mkv), multi-band rasters (.tif/.tiff, .npy) for N-channel
models, or a converted split's ``OUT/annotations/<split>.json`` (its images, with its image and
category ids, so ``tools/evaluate_coco.py --gt`` that json scores ``predictions.json``).
``--webcam N`` predicts on camera N live (there is no window: OpenCV is the headless build)
until ``--max-frames`` or Ctrl-C.

Writes under ``--output`` (refused when not empty, unless ``--exist-ok``): ``overlays/``
(``--no-overlay`` skips), ``predictions.json`` (COCO results, RLE; ``--polygons`` adds
polygons), ``sem_seg/`` label PNGs (``--save-probs``: float16 probabilities), ``panoptic/`` +
``panoptic.json``, ``labelme/`` (``--save-labelme``), overlay videos and
``predictions.jsonl`` for videos, and ``report.json``. Images more than twice the model's test
size go through tiled inference (``--tile``, ``--overlap``, ``--no-tile``; ``--tile-mode
features``, the default for R-CNN models, runs the backbone once per image and only the heads
per tile).

Under ``torchrun --nproc-per-node N tools/predict.py --run-dir RUN ...`` (torchrun's own parser
would take ``--run`` for its ``--run-path``) each process predicts its share of
the inputs (on its own GPU when there are several) and the first writes the merged
``predictions.json``, ``panoptic.json``, ``predictions.jsonl`` and ``report.json``.

Exit status: 0 when every input was processed, 1 when some were skipped (each is one line on
stderr and an entry of report.json), 2 for a usage error (no such run, no weights, nothing
matched ``--input``).
"""

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from d2seg.engine.launch import torchrun_process_group, under_torchrun
from d2seg.engine.model_source import ModelSource
from d2seg.engine.prediction_sources import (
    ExpandedInputs,
    PredictionInput,
    Skipped,
    expand_inputs,
    read_ahead,
    read_input,
)
from d2seg.engine.prediction_video import frame_summary, predict_video
from d2seg.engine.prediction_writers import (
    CocoResultsWriter,
    LabelmeWriter,
    OverlayWriter,
    PanopticWriter,
    PredictionWriter,
    SemSegWriter,
    draw_outputs,
)
from d2seg.engine.predictor import DefaultPredictor
from d2seg.engine.tile_layout import needs_tiling
from d2seg.engine.tiling import DEFAULT_BLOCK, MERGE_MODES, TILE_MODES, TiledPredictor
from d2seg.errors import ConfigError, D2SegError
from d2seg.utils import comm
from d2seg.utils.cli import run_cli, user_message
from d2seg.utils.io import atomic_open, atomic_write_json

PARTIAL_EXIT_CODE = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    model = parser.add_argument_group("model")
    model.add_argument("--run", "--run-dir", dest="run",
                       help="a training run's OUTPUT_DIR (config.yaml + checkpoints); "
                       "--run-dir under torchrun, whose own parser takes --run for --run-path")
    model.add_argument("--weights", help="with --run: a checkpoint other than the run's best")
    model.add_argument("--config-file", help="a config file (then MODEL.WEIGHTS in opts)")
    model.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                       help="KEY VALUE config overrides, e.g. MODEL.WEIGHTS w.pth MODEL.DEVICE cpu")
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument("--input", action="append", default=[], metavar="PATH",
                    help="image, folder, glob, .txt list, video or split .json (repeatable)")
    io.add_argument("--video-input", action="append", default=[], metavar="VIDEO",
                    help="a video file (repeatable; same as --input)")
    io.add_argument("--webcam", type=int, default=None, metavar="N",
                    help="predict on camera N live (overlays/webcamN.mp4 + predictions.jsonl) "
                    "until --max-frames or Ctrl-C; there is no window: OpenCV is headless")
    io.add_argument("--max-frames", type=int, default=None,
                    help="stop each video and the webcam after this many frames")
    io.add_argument("--output", required=True, help="folder for the outputs (created)")
    io.add_argument("--exist-ok", action="store_true", help="write into a non-empty --output")
    io.add_argument("--no-overlay", action="store_true", help="skip overlays/ and overlay videos")
    io.add_argument("--polygons", action="store_true", help="add polygons to predictions.json")
    io.add_argument("--save-probs", action="store_true",
                    help="sem_seg/<name>.npy: float16 class probabilities")
    io.add_argument("--save-labelme", action="store_true",
                    help="labelme/<name>.json: Labelme pre-annotations")
    io.add_argument("--labelme-embed", action="store_true",
                    help="with --save-labelme: embed the image (imageData)")
    run = parser.add_argument_group("inference")
    run.add_argument("--score-threshold", type=float, default=None,
                     help="drop instances scoring below (default: the model's SCORE_THRESH_TEST)")
    run.add_argument("--batch-size", type=int, default=1, help="images or frames per forward")
    run.add_argument("--workers", type=int, default=2, help="threads decoding images")
    run.add_argument("--tile", type=int, default=None,
                     help="tile side in pixels: tile every image (default: 512, only for images "
                     "more than twice the test size)")
    run.add_argument("--overlap", type=float, default=0.25, help="tile overlap, fraction")
    run.add_argument("--no-tile", action="store_true", help="never tile")
    run.add_argument("--tile-merge", choices=MERGE_MODES, default="nmm",
                     help="merge instances across tiles: nmm (unite parts, SAHI GREEDYNMM) or nms")
    run.add_argument("--tile-mode", choices=TILE_MODES, default=None,
                     help="features: one backbone pass per image (blocks of --tile-block px), "
                     "the detection heads per tile (R-CNN models; their default); images: the "
                     "whole model per tile (the default for other models)")
    run.add_argument("--tile-block", type=int, default=DEFAULT_BLOCK,
                     help="with --tile-mode features: the largest side (model pixels) of one "
                     "backbone pass, bounding memory on huge images")
    run.add_argument("--tile-full-pass", action="store_true",
                     help="also predict on the whole image (large objects) when tiling")
    return parser


def check_output(path: Path, exist_ok: bool) -> None:
    """Refuse an ``--output`` that is a file, or a non-empty folder without ``--exist-ok``."""
    if path.is_file() or (path.is_dir() and any(path.iterdir()) and not exist_ok):
        raise ConfigError(
            f"--output {path} exists and is not an empty folder; fix: choose a new --output, "
            f"or pass --exist-ok to write into it"
        )


class Predict:
    """The predictor with the tool's choices: tiling per image, the score threshold."""

    def __init__(self, predictor: DefaultPredictor, args: argparse.Namespace):
        self.predictor = predictor
        self.threshold = args.score_threshold
        self.tile_always = args.tile is not None and not args.no_tile
        self.tile_auto = args.tile is None and not args.no_tile
        self.tiled = TiledPredictor(
            predictor, tile=args.tile or 512, overlap=args.overlap, merge=args.tile_merge,
            full_pass=args.tile_full_pass, batch_size=args.batch_size, mode=args.tile_mode,
            block=args.tile_block,
        )
        self.tiled_images = 0

    def _tile(self, image: np.ndarray) -> bool:
        if self.tile_always:
            return True
        cfg = self.predictor.cfg.INPUT
        return self.tile_auto and needs_tiling(*image.shape[:2], cfg.MIN_SIZE_TEST,
                                               cfg.MAX_SIZE_TEST)

    def _filter(self, outputs: dict[str, Any]) -> dict[str, Any]:
        if self.threshold is None or "instances" not in outputs:
            return outputs
        instances = outputs["instances"]
        keep = instances["scores"] >= self.threshold
        return {**outputs, "instances": {k: v[keep] for k, v in instances.items()}}

    def __call__(self, images: list[np.ndarray]) -> list[dict[str, Any]]:
        """Outputs per image (model-format arrays); large ones tiled, small ones batched."""
        tiled = [self._tile(image) for image in images]
        plain = [im for im, t in zip(images, tiled) if not t]
        plain_outputs = iter(self.predictor.predict_batch(plain) if plain else [])
        self.tiled_images += sum(tiled)
        return [self._filter(self.tiled(im) if t else next(plain_outputs))
                for im, t in zip(images, tiled)]


def display_rgb(image: np.ndarray, input_format: str) -> np.ndarray:
    """A model-format image as the Visualizer takes it: RGB; gray and uint8 bands as they
    are; a float raster's shown bands (the first 3, or band 0) stretched from their 2nd to
    98th percentile onto 0..255, since its values are in the file's units."""
    if input_format == "BGR":
        return np.ascontiguousarray(image[:, :, ::-1])
    if image.dtype == np.uint8:
        return image
    shown = image[:, :, :3] if image.shape[2] >= 3 else image[:, :, :1]
    low, high = np.percentile(shown, [2, 98], axis=(0, 1))
    stretched = (shown - low) / np.maximum(high - low, 1e-6) * 255
    return np.clip(stretched, 0, 255).astype(np.uint8)


def main() -> int:
    args = build_parser().parse_args()
    if args.opts[:1] == ["--"]:
        args.opts = args.opts[1:]
    if under_torchrun():
        with torchrun_process_group():
            return predict_inputs(args)
    return predict_inputs(args)


def predict_inputs(args: argparse.Namespace) -> int:
    """The tool in one process; under torchrun each process takes its share of the inputs
    (:func:`~d2seg.utils.comm.shard`) and the main one writes the merged files."""
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size}; fix: at least 1")
    if not args.input and not args.video_input and args.webcam is None:
        raise ConfigError("nothing to predict on; fix: pass --input PATH (or --video-input, "
                          "--webcam N)")
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames {args.max_frames}; fix: at least 1")
    if args.input or args.video_input:
        inputs: ExpandedInputs = expand_inputs(args.input + args.video_input)
    else:
        inputs = ExpandedInputs()
    if args.webcam is not None:
        inputs.items.append(PredictionInput.webcam(args.webcam))
    output = Path(args.output)
    check_output(output, args.exist_ok)
    comm.synchronize()  # every rank has checked before the main one creates the folder
    predictor = ModelSource(run=args.run, weights=args.weights, config_file=args.config_file,
                            opts=tuple(args.opts)).load()
    output.mkdir(parents=True, exist_ok=True)
    metadata = predictor.metadata
    things = list(metadata.get("thing_classes", None) or [])
    stuff = list(metadata.get("stuff_classes", None) or [])
    tasks = tuple((getattr(metadata, "saved", None) or {}).get("tasks")
                  or getattr(predictor.model, "tasks", ()))
    category_ids = _category_ids(inputs, things)
    coco = CocoResultsWriter(output, things, category_ids, args.polygons)
    writers: list[PredictionWriter] = [coco] if "instances" in tasks else []
    if "sem_seg" in tasks:  # PanopticUNet's own semantic labels are not worth a file
        writers.append(SemSegWriter(output, args.save_probs))
    if "panoptic_seg" in tasks:
        writers.append(PanopticWriter(output, things, stuff))
    if not args.no_overlay:
        writers.append(OverlayWriter(output, metadata))
    if args.save_labelme:
        writers.append(LabelmeWriter(output, things, stuff, args.labelme_embed))
    predict = Predict(predictor, args)
    skipped: list[Skipped] = list(inputs.skipped) if comm.is_main_process() else []
    for entry in skipped:
        print(f"skipped: {entry.path}: {entry.reason}", file=sys.stderr)

    images = comm.shard([i for i in inputs.items if i.kind == "image"])
    videos = comm.shard([i for i in inputs.items if i.kind == "video"])
    started = time.perf_counter()
    done = _predict_images(images, predict, predictor, writers, args, skipped)
    image_seconds = time.perf_counter() - started
    videos_done, frames = 0, 0
    started = time.perf_counter()
    jsonl = output / ("predictions.jsonl" if comm.get_world_size() == 1
                      else f"predictions.rank{comm.get_rank()}.jsonl")
    if videos:
        videos_done, frames = _predict_videos(videos, jsonl, output, predict, predictor, coco,
                                              stuff, tasks, args, skipped)
    video_seconds = time.perf_counter() - started
    shards = comm.all_gather({
        "writers": [writer.shard_state() for writer in writers],
        "done": done, "videos_done": videos_done, "frames": frames,
        "tiled": predict.tiled_images, "image_seconds": image_seconds,
        "video_seconds": video_seconds, "skipped": skipped,
    })
    skipped = [s for shard in shards for s in shard["skipped"]]
    if comm.is_main_process():
        _write_merged(output, writers, shards, len(inputs.items) + len(inputs.skipped),
                      str(predictor.cfg.MODEL.WEIGHTS), tasks, args)
    comm.synchronize()
    return PARTIAL_EXIT_CODE if skipped else 0


def _predict_images(images: list[PredictionInput], predict: "Predict",
                    predictor: DefaultPredictor, writers: list[PredictionWriter],
                    args: argparse.Namespace, skipped: list[Skipped]) -> int:
    """Decode (in threads, ahead of the model), predict in batches, write; returns the number
    of images processed. Unreadable ones are added to ``skipped``."""
    fmt, channels = predictor.input_format, predictor.num_channels
    done = 0
    bar = tqdm(total=len(images), unit="img", desc="predicting",
               disable=not images or not comm.is_main_process())
    decoded = read_ahead(images, lambda item: read_input(item.path, fmt, channels),
                         args.workers, 2 * args.batch_size + args.workers)
    batch: list[tuple[PredictionInput, np.ndarray]] = []

    def flush() -> None:
        nonlocal done
        for (item, image), outputs in zip(batch, predict([im for _, im in batch])):
            rgb = display_rgb(image, fmt)
            for writer in writers:
                writer.write(item, rgb, outputs)
            done += 1
        bar.update(len(batch))
        batch.clear()

    for item, image, problem in decoded:
        if problem is not None:
            skipped.append(Skipped(str(item.path), problem))
            tqdm.write(f"skipped: {problem}", file=sys.stderr)
            continue
        batch.append((item, image))
        if len(batch) == args.batch_size:
            flush()
    flush()
    bar.close()
    return done


def _write_merged(output: Path, writers: list[PredictionWriter], shards: list[dict],
                  inputs: int, weights: str, tasks: tuple[str, ...],
                  args: argparse.Namespace) -> None:
    """The main process: every rank's shared outputs merged in rank order (= input order),
    ``predictions.jsonl`` joined from the ranks' files, ``report.json``, the summary lines."""
    for k, writer in enumerate(writers):
        writer.merge_shards([shard["writers"][k] for shard in shards])
        writer.close()
    if len(shards) > 1:
        parts = [p for r in range(len(shards))
                 if (p := output / f"predictions.rank{r}.jsonl").is_file()]
        if parts:
            with atomic_open(output / "predictions.jsonl", "w", encoding="utf-8") as joined:
                for part in parts:
                    with open(part, encoding="utf-8") as lines:
                        shutil.copyfileobj(lines, joined)
        for part in parts:
            part.unlink()
    total = {key: sum(shard[key] for shard in shards)
             for key in ("done", "videos_done", "frames", "tiled")}
    image_seconds = max(shard["image_seconds"] for shard in shards)
    video_seconds = max(shard["video_seconds"] for shard in shards)
    skipped = [s for shard in shards for s in shard["skipped"]]
    done, frames = total["done"], total["frames"]
    report = {
        "model": weights,
        "tasks": list(tasks),
        "processes": len(shards),
        "inputs": inputs,
        "processed_images": done,
        "processed_videos": total["videos_done"],
        "frames": frames,
        "tiled_images": total["tiled"],
        "images_per_s": done / image_seconds if done and image_seconds > 0 else None,
        "frames_per_s": frames / video_seconds if frames and video_seconds > 0 else None,
        "skipped": [{"path": s.path, "reason": s.reason} for s in skipped],
    }
    atomic_write_json(output / "report.json", report, indent=2)
    print(f"{done} image(s), {total['videos_done']} video(s) ({frames} frames) -> {output}"
          + (f"; {len(skipped)} skipped (see {output / 'report.json'})" if skipped else ""))
    if not args.no_overlay and (done or frames):
        print(f"overlays: {output / 'overlays'}")


def _category_ids(inputs: ExpandedInputs, things: list[str]) -> list[int]:
    """COCO category id of each contiguous class: the input split's ids by name (sorted-id
    order otherwise), else ``c + 1`` as tools/convert_labelme.py numbers them."""
    if not inputs.categories:
        return list(range(1, len(things) + 1))
    by_name = {c["name"]: c["id"] for c in inputs.categories}
    if all(name in by_name for name in things):
        return [by_name[name] for name in things]
    return sorted(c["id"] for c in inputs.categories)


def _predict_videos(videos, jsonl_path, output, predict, predictor, coco, stuff, tasks, args,
                    skipped) -> tuple[int, int]:
    """Each video → ``overlays/<name>.mp4`` and its lines of ``jsonl_path``; returns
    (videos processed, frames). A video that will not open is added to ``skipped``."""
    fmt, channels = predictor.input_format, predictor.num_channels
    metadata = predictor.metadata

    def to_model(frame: np.ndarray) -> np.ndarray:
        """A decoded BGR frame in the model's channels."""
        if channels == 1:
            return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)[:, :, None]
        return frame if fmt == "BGR" else np.ascontiguousarray(frame[:, :, ::-1])

    frames, done = 0, 0
    with open(jsonl_path, "a", encoding="utf-8") as jsonl:
        for item in videos:
            def record(index: int, seconds: float, outputs: dict) -> dict:
                line: dict[str, Any] = {"file_name": str(item.path), "frame": index,
                                        "time_s": round(seconds, 4)}
                if "instances" in outputs:
                    line["instances"] = [
                        {k: v for k, v in r.items() if k not in ("image_id", "file_name")}
                        for r in coco.image_results(item, outputs["instances"])]
                if "sem_seg" in outputs and "instances" not in tasks:
                    line["sem_seg_pixels"] = frame_summary(outputs, stuff)
                return line

            try:
                frames += predict_video(
                    item.path if item.camera is None else item.camera,
                    to_model=to_model, predict=predict,
                    draw=None if args.no_overlay else
                    (lambda rgb, outputs: draw_outputs(rgb, outputs, metadata)),
                    frame_record=record, overlay_path=output / "overlays" / f"{item.name}.mp4",
                    jsonl=jsonl, batch_size=args.batch_size, max_frames=args.max_frames,
                )
                done += 1
            except D2SegError as e:
                skipped.append(Skipped(str(item.path), user_message(e)))
                print(f"skipped: {user_message(e)}", file=sys.stderr)
    return done, frames


if __name__ == "__main__":
    run_cli(main)
