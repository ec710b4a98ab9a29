"""Predicting on a video: frames in, an overlay video and one JSON line per frame out."""

import json
from pathlib import Path
from typing import IO, Any, Callable

import cv2
import numpy as np
from tqdm import tqdm

from d2seg.engine.prediction_writers import semantic_labels
from d2seg.errors import DatasetError


def open_video(path: Path) -> tuple[cv2.VideoCapture, float, int]:
    """An opened ``cv2.VideoCapture`` with its fps (25 when the file has none) and frame
    count (0 when unknown); :class:`DatasetError` when it will not open."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise DatasetError(
            f"video {path} cannot be opened; fix: check the file plays, or re-encode it "
            f"(e.g. ffmpeg -i in -c:v libx264 out.mp4)"
        )
    fps = capture.get(cv2.CAP_PROP_FPS)
    return capture, fps if fps and fps > 0 else 25.0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT))


def predict_video(
    path: Path,
    *,
    to_model: Callable[[np.ndarray], np.ndarray],
    predict: Callable[[list[np.ndarray]], list[dict]],
    draw: Callable[[np.ndarray, dict], np.ndarray] | None,
    frame_record: Callable[[int, float, dict], dict],
    overlay_path: Path,
    jsonl: IO[str],
    batch_size: int,
) -> int:
    """Predict on every frame of ``path``; returns the number of frames.

    Args:
        to_model: a BGR frame → the model's input image.
        predict: a list of model images → their outputs.
        draw: (RGB frame, outputs) → RGB overlay of the same size; None: no overlay video.
        frame_record: (frame index, time in s, outputs) → the JSON object of that frame.
        overlay_path: the overlay video (``mp4v``, the input's fps and size).
        jsonl: where one JSON line per frame is written.
        batch_size: frames per forward pass.
    """
    capture, fps, count = open_video(path)
    writer = None
    frames = 0
    progress = tqdm(total=count or None, desc=path.name, unit="frame", leave=False)
    try:
        done = False
        while not done:
            batch = []
            while len(batch) < batch_size:
                ok, frame = capture.read()
                if not ok:
                    done = True
                    break
                batch.append(frame)
            if not batch:
                break
            for frame, outputs in zip(batch, predict([to_model(f) for f in batch])):
                if draw is not None:
                    if writer is None:
                        overlay_path.parent.mkdir(parents=True, exist_ok=True)
                        height, width = frame.shape[:2]
                        writer = cv2.VideoWriter(str(overlay_path),
                                                 cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                                 (width, height))
                    overlay = draw(np.ascontiguousarray(frame[:, :, ::-1]), outputs)
                    writer.write(np.ascontiguousarray(overlay[:, :, ::-1]))
                jsonl.write(json.dumps(frame_record(frames, frames / fps, outputs)) + "\n")
                frames += 1
                progress.update(1)
    finally:
        progress.close()
        capture.release()
        if writer is not None:
            writer.release()
    return frames


def frame_summary(outputs: dict[str, Any], stuff_classes: list[str]) -> dict[str, int]:
    """Pixels per semantic class of one frame (``{name: count}``), for ``predictions.jsonl``
    of semantic models."""
    labels = semantic_labels(outputs["sem_seg"])
    values, counts = np.unique(labels, return_counts=True)
    return {(stuff_classes[v] if v < len(stuff_classes) else f"class {v}"): int(n)
            for v, n in zip(values.tolist(), counts.tolist())}
