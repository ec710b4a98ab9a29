"""The model behind the HTTP routes: loading it, what it is, and one request's answers.

:class:`ModelService` owns the predictor and its :class:`~d2seg.serving.batching.BatchQueue`;
it turns the outputs for one uploaded image into the records ``tools/predict.py`` writes
(:mod:`d2seg.engine.prediction_records`), an overlay PNG (the Visualizer's, as
``overlays/``) or a Labelme file. Everything here but :meth:`ModelService.submit` is blocking
and runs in worker threads.
"""

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from d2seg.engine.prediction_records import (
    instance_records,
    labelme_document,
    labelme_shapes,
    panoptic_segments,
    semantic_record,
)
from d2seg.engine.prediction_writers import draw_outputs
from d2seg.engine.predictor import DefaultPredictor
from d2seg.errors import D2SegError
from d2seg.serving.batching import BatchQueue, BatchResult, QueueFull
from d2seg.serving.errors import ApiError
from d2seg.engine.model_source import ModelSource, file_sha256
from d2seg.serving.settings import ServeSettings
from d2seg.utils.cli import user_message
from d2seg.utils.colormap import class_color

logger = logging.getLogger(__name__)
_LOADING_RETRY_S = 5


def filter_instances(outputs: dict[str, Any], threshold: float | None) -> dict[str, Any]:
    """``outputs`` without the instances scoring below ``threshold`` (None: all kept)."""
    if threshold is None or "instances" not in outputs:
        return outputs
    instances = outputs["instances"]
    keep = instances["scores"] >= threshold
    return {**outputs, "instances": {k: v[keep] for k, v in instances.items()}}


class ModelService:
    """A predictor being loaded or ready, and its batch queue.

    Args:
        model: a loaded :class:`DefaultPredictor`, or the :class:`ModelSource` to load in
            :meth:`load`.
        settings: the batching limits.
    """

    def __init__(self, model: DefaultPredictor | ModelSource, settings: ServeSettings):
        self.settings = settings
        self.source = model if isinstance(model, ModelSource) else None
        self.predictor: DefaultPredictor | None = None if self.source else model
        self.error: str | None = None
        self.queue: BatchQueue | None = None
        self.info: dict[str, Any] = {}

    @property
    def loaded(self) -> bool:
        return self.queue is not None

    def load(self) -> None:
        """Load the model (blocking) and start its batch queue; a user error (no such run,
        unreadable weights) is kept in :attr:`error` for ``/v1/health``."""
        try:
            if self.predictor is None:
                self.predictor = self.source.load()
            self.info = self._describe()
        except D2SegError as e:
            self.error = user_message(e)
            logger.error(f"model not loaded: {self.error}")
            return
        queue = BatchQueue(self.predictor.predict_batch, max_batch=self.settings.max_batch,
                           timeout_s=self.settings.batch_timeout_ms / 1000,
                           max_queue=self.settings.max_queue)
        queue.start()
        self.queue = queue
        logger.info(f"model {self.info['name']} ready ({', '.join(self.info['tasks'])})")

    def stop(self) -> None:
        if self.queue is not None:
            self.queue.stop()

    def _describe(self) -> dict[str, Any]:
        """``/v1/model``: what the model is, its classes and colours, and its weights."""
        predictor = self.predictor
        metadata = predictor.metadata
        things = list(metadata.get("thing_classes", None) or [])
        stuff = list(metadata.get("stuff_classes", None) or [])
        tasks = list((getattr(metadata, "saved", None) or {}).get("tasks")
                     or predictor.model.tasks)
        weights = Path(predictor.cfg.MODEL.WEIGHTS)
        name = self.source.name if self.source else weights.parent.name
        colors = {key: [list(c) for c in metadata.get(f"{key}_colors", None) or
                        [class_color(i) for i in range(len(names))]]
                  for key, names in (("thing", things), ("stuff", stuff))}
        return {
            "name": name, "tasks": tasks, "meta_architecture": predictor.cfg.MODEL
            .META_ARCHITECTURE, "thing_classes": things, "stuff_classes": stuff,
            "colors": colors, "input_format": predictor.input_format,
            "num_channels": predictor.num_channels,
            "score_threshold": float(predictor.cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST),
            "weights": {"file": weights.name, "sha256": file_sha256(weights)},
            "limits": self.settings.public(),
        }

    def _ready(self) -> BatchQueue:
        if self.queue is None:
            if self.error is not None:
                raise ApiError(503, f"the model could not be loaded: {self.error}")
            raise ApiError(503, "the model is still loading; fix: retry in a few seconds",
                           {"Retry-After": str(_LOADING_RETRY_S)})
        return self.queue

    async def submit(self, image: np.ndarray) -> BatchResult:
        """The model's output for one model-format image (503 when the queue is full)."""
        try:
            return await self._ready().submit(image)
        except QueueFull as e:
            raise ApiError(503, f"the server is busy ({self.settings.max_queue} requests "
                                f"waiting); fix: retry after {e.retry_after} s",
                           {"Retry-After": str(e.retry_after)}) from e

    def decoding(self) -> tuple[str, int]:
        """(input format, channels) uploads are decoded to."""
        self._ready()
        return self.predictor.input_format, self.predictor.num_channels

    def records(self, outputs: dict[str, Any], height: int, width: int,
                polygons: bool) -> dict[str, Any]:
        """The JSON answer for one image: its size, the model, and the records
        ``tools/predict.py`` writes (COCO results without ``image_id``/``file_name``, each
        also with ``label``, its ``category_name``; the semantic classes present, panoptic
        segments with RLE masks)."""
        info = self.info
        things, stuff = info["thing_classes"], info["stuff_classes"]
        answer: dict[str, Any] = {
            "image": {"width": width, "height": height},
            "model": {"name": info["name"], "tasks": info["tasks"],
                      "classes": things if "instances" in info["tasks"] else stuff,
                      "thing_classes": things, "stuff_classes": stuff},
        }
        if "instances" in outputs:
            results = instance_records(outputs["instances"], 0, things,
                                       list(range(1, len(things) + 1)), polygons)
            answer["instances"] = [{**{k: v for k, v in r.items() if k != "image_id"},
                                    "label": r["category_name"]} for r in results]
        if "sem_seg" in outputs and "sem_seg" in info["tasks"]:
            answer["sem_seg"] = semantic_record(outputs["sem_seg"], stuff)
        if "panoptic_seg" in outputs:
            ids, segments = outputs["panoptic_seg"]
            answer["panoptic"] = {"segments_info": panoptic_segments(
                ids, segments, things, stuff, with_masks=True)}
        return answer

    def overlay_png(self, image: np.ndarray, outputs: dict[str, Any]) -> bytes:
        """The Visualizer's overlay of a model-format image's outputs, as PNG bytes."""
        rgb = np.ascontiguousarray(image[:, :, ::-1]) if self.predictor.input_format == "BGR" \
            else image
        buffer = io.BytesIO()
        Image.fromarray(draw_outputs(rgb, outputs, self.predictor.metadata)).save(
            buffer, format="PNG")
        return buffer.getvalue()

    def labelme(self, outputs: dict[str, Any], image: bytes, image_name: str, height: int,
                width: int) -> dict[str, Any]:
        """A Labelme file of the predictions with the uploaded image embedded."""
        shapes = labelme_shapes(outputs, self.info["thing_classes"], self.info["stuff_classes"])
        return labelme_document(shapes, image_name, image, height, width)
