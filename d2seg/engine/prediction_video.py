"""Predicting on a video: frames in, an overlay video and one JSON line per frame out."""

import json
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Callable

import cv2
import numpy as np
from tqdm import tqdm

from d2seg.engine.prediction_writers import semantic_labels
from d2seg.errors import DatasetError
from d2seg.utils import comm


def open_video(source: Path | int) -> tuple[cv2.VideoCapture, float, int]:
    """An opened ``cv2.VideoCapture`` of a file or a camera index, with its fps (25 when the
    source has none) and frame count (0 when unknown); :class:`DatasetError` when it will not
    open."""
    capture = cv2.VideoCapture(source if isinstance(source, int) else str(source))
    if not capture.isOpened():
        capture.release()
        if isinstance(source, int):
            raise DatasetError(f"webcam {source} cannot be opened; fix: check the camera is "
                               f"connected (ls /dev/video*) and not in use, or pick another "
                               f"index")
        raise DatasetError(
            f"video {source} cannot be opened; fix: check the file plays, or re-encode it "
            f"(e.g. ffmpeg -i in -c:v libx264 out.mp4)"
        )
    fps = capture.get(cv2.CAP_PROP_FPS)
    return capture, fps if fps and fps > 0 else 25.0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT))


def _read_batch(capture: cv2.VideoCapture, size: int) -> list[np.ndarray]:
    """Up to ``size`` next BGR frames (fewer at the end of the video)."""
    batch = []
    while len(batch) < size:
        ok, frame = capture.read()
        if not ok:
            break
        batch.append(frame)
    return batch


def predict_video(
    source: Path | int,
    *,
    to_model: Callable[[np.ndarray], np.ndarray],
    predict: Callable[[list[np.ndarray]], list[dict]],
    draw: Callable[[np.ndarray, dict], np.ndarray] | None,
    frame_record: Callable[[int, float, dict], dict],
    overlay_path: Path,
    jsonl: IO[str],
    batch_size: int,
    max_frames: int | None = None,
) -> int:
    """Predict on every frame of ``source`` (a video file or a camera index) or its first
    ``max_frames``; returns the number of frames. Ctrl-C on a camera stops it, keeping what
    was written (a camera has no last frame).

    Args:
        to_model: a BGR frame → the model's input image.
        predict: a list of model images → their outputs.
        draw: (RGB frame, outputs) → RGB overlay of the same size; None: no overlay video.
        frame_record: (frame index, time in s, outputs) → the JSON object of that frame.
        overlay_path: the overlay video (``mp4v``, the input's fps and size).
        jsonl: where one JSON line per frame is written.
        batch_size: frames per forward pass.
        max_frames: stop after this many frames (None: at the end of the video).
    """
    capture, fps, count = open_video(source)
    if max_frames is not None:
        count = min(count, max_frames) if count else max_frames
    writer = None
    frames = 0
    name = f"webcam {source}" if isinstance(source, int) else source.name
    progress = tqdm(total=count or None, desc=name, unit="frame", leave=False,
                    disable=not comm.is_main_process())
    # Decoding the next batch and encoding the previous overlays run in worker threads while
    # the model runs (cv2 releases the GIL for both); the FIFO encoder keeps the frame order.
    reader, encoder = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
    encoded: list[Future] = []

    def next_batch(done: int) -> Future:
        """Start reading the batch after ``done`` frames (empty once ``max_frames`` are read)."""
        size = batch_size if max_frames is None else min(batch_size, max_frames - done)
        return reader.submit(_read_batch, capture, max(size, 0))

    try:
        pending = next_batch(0)
        while batch := pending.result():
            pending = next_batch(frames + len(batch))
            outputs_list = predict([to_model(f) for f in batch])
            for future in encoded:  # at most one batch of overlays waits for the encoder
                future.result()
            encoded = []
            for frame, outputs in zip(batch, outputs_list):
                if draw is not None:
                    if writer is None:
                        overlay_path.parent.mkdir(parents=True, exist_ok=True)
                        height, width = frame.shape[:2]
                        writer = cv2.VideoWriter(str(overlay_path),
                                                 cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                                 (width, height))
                    overlay = draw(np.ascontiguousarray(frame[:, :, ::-1]), outputs)
                    encoded.append(encoder.submit(writer.write,
                                                  np.ascontiguousarray(overlay[:, :, ::-1])))
                jsonl.write(json.dumps(frame_record(frames, frames / fps, outputs)) + "\n")
                frames += 1
                progress.update(1)
        for future in encoded:
            future.result()
    except KeyboardInterrupt:
        if not isinstance(source, int):
            raise
    finally:
        progress.close()
        reader.shutdown(wait=True)
        encoder.shutdown(wait=True)
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
