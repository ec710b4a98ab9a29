"""``DefaultPredictor``: a trained model applied to images in memory, as in Detectron2.

It builds the model from a config, loads ``MODEL.WEIGHTS``, and for each H×W×C uint8 image
applies the test-time resize of ``INPUT.MIN_SIZE_TEST``/``MAX_SIZE_TEST`` (the evaluator's
exact path), runs the model in eval mode under ``torch.inference_mode`` and returns the
model's output dict at the image's original size. The class names come from the metadata the
trainer writes into every checkpoint, so a run folder is all a user needs
(:meth:`DefaultPredictor.from_run`).
"""

import logging
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from d2seg.checkpoint import D2SegCheckpointer
from d2seg.config import CfgNode, get_cfg
from d2seg.data.catalog import Metadata, MetadataCatalog
from d2seg.data.mapper import DatasetMapper
from d2seg.errors import CheckpointError, ConfigError
from d2seg.modeling import build_model

logger = logging.getLogger(__name__)

# In the order from_run prefers them; then the newest periodic checkpoint.
_PREFERRED_WEIGHTS = ("model_best.pth", "model_final.pth")
_PERIODIC = re.compile(r"^model_(\d+)\.pth$")


def run_weights(run_dir: str | os.PathLike) -> Path:
    """The checkpoint of a run folder to predict with: ``model_best.pth``, else
    ``model_final.pth``, else the ``model_XXXXXXX.pth`` of the highest iteration."""
    run_dir = Path(run_dir)
    for name in _PREFERRED_WEIGHTS:
        if (run_dir / name).is_file():
            return run_dir / name
    periodic = [
        (int(m.group(1)), p) for p in run_dir.glob("model_*.pth") if (m := _PERIODIC.match(p.name))
    ]
    if not periodic:
        raise CheckpointError(
            f"run folder {run_dir} holds no checkpoint (model_best.pth, model_final.pth or "
            f"model_XXXXXXX.pth); fix: point at the OUTPUT_DIR of a training run, or pass "
            f"weights=path/to/model.pth"
        )
    return max(periodic)[1]


def _metadata(cfg: CfgNode, saved: dict[str, Any] | None, weights: str) -> Metadata:
    """Class names: the checkpoint's metadata, else the config's DATASETS.*_CLASSES, else a
    registered test/train dataset's; a warning when none names them."""
    metadata = Metadata(f"predictor:{weights}")
    if saved:
        names = ("thing_classes", "stuff_classes")
        metadata.set(**{k: v for k, v in saved.items() if k in names and v})
        metadata.set(saved=dict(saved))
    names = {
        "thing_classes": list(cfg.DATASETS.THING_CLASSES),
        "stuff_classes": list(cfg.DATASETS.STUFF_CLASSES),
    }
    for key, value in names.items():
        if value and metadata.get(key) is None:
            metadata.set(**{key: value})
    for dataset in (*cfg.DATASETS.TEST, *cfg.DATASETS.TRAIN):
        if dataset in MetadataCatalog:
            registered = MetadataCatalog.get(dataset)
            for key in names:
                if metadata.get(key) is None and registered.get(key) is not None:
                    metadata.set(**{key: list(registered.get(key))})
    if metadata.get("thing_classes") is None and metadata.get("stuff_classes") is None:
        logger.warning(
            f"{weights or 'the model'} carries no class names (a checkpoint written before d2seg "
            f"saved metadata, or a plain state dict): predictions are labelled by class index; "
            f"fix: set DATASETS.THING_CLASSES / STUFF_CLASSES, or re-save it from a training run"
        )
    return metadata


class DefaultPredictor:
    """A model ready for inference on single images or small batches.

    Call it on one H×W×C uint8 numpy array in the config's ``INPUT.FORMAT`` channel order
    (BGR for ``"BGR"``; H×W or H×W×1 for ``"L"``; N bands for ``"N"``; or say
    ``format="BGR"``/``"RGB"`` and it is converted) to get the model's
    output dict for that image: ``{"instances": {"boxes", "scores", "classes", "masks"}}``,
    ``{"sem_seg": K×H×W logits}`` and/or ``{"panoptic_seg": (H×W ids, segments_info)}``, every
    tensor at the original H×W. :meth:`predict_batch` takes a list. ``metadata`` has the class
    names (``thing_classes``: instance classes; ``stuff_classes``: semantic labels) and
    ``metadata.saved``, everything the checkpoint recorded (tasks, input format, ...).

    Example::

        import cv2
        from d2seg import DefaultPredictor, Visualizer

        predictor = DefaultPredictor.from_run("output/demo/balloons_run")
        image = cv2.imread("annotations/balloons/balloon_0000.jpg")      # BGR
        outputs = predictor(image, format="BGR")      # the model itself takes INPUT.FORMAT RGB
        names = predictor.metadata.thing_classes
        Visualizer(image[:, :, ::-1], predictor.metadata).draw_instance_predictions(
            outputs["instances"]).save("overlay.png")
    """

    def __init__(self, cfg: CfgNode):
        """
        Args:
            cfg: a full config (``get_cfg()`` + a config file, or a run's ``config.yaml``);
                ``MODEL.WEIGHTS`` is the local checkpoint to load (empty: random weights,
                with a warning).
        """
        self.cfg = cfg.clone()
        self.cfg.freeze()
        self.model = build_model(self.cfg).eval()
        saved = None
        if cfg.MODEL.WEIGHTS:
            extra = D2SegCheckpointer(self.model).load(cfg.MODEL.WEIGHTS, checkpointables=[])
            saved = extra.get("metadata")
        else:
            logger.warning("MODEL.WEIGHTS is empty: the predictor's model has random weights")
        self.metadata = _metadata(self.cfg, saved, cfg.MODEL.WEIGHTS)
        self.input_format = cfg.INPUT.FORMAT
        self.num_channels = len(cfg.MODEL.PIXEL_MEAN)
        # The test loader's mapper: the same resize, so predictions equal the evaluation's.
        self.mapper = DatasetMapper(self.cfg, is_train=False)

    @classmethod
    def from_run(
        cls,
        run_dir: str | os.PathLike,
        *,
        weights: str | os.PathLike | None = None,
        opts: Sequence[str] = (),
    ) -> "DefaultPredictor":
        """A predictor from a training run's folder alone: its ``config.yaml`` and
        :func:`run_weights` (or ``weights``, a file name inside ``run_dir`` or any path).
        ``opts`` are ``KEY VALUE`` overrides, e.g. ``("MODEL.DEVICE", "cpu")``."""
        run_dir = Path(run_dir)
        config = run_dir / "config.yaml"
        if not config.is_file():
            raise ConfigError(
                f"{config} not found; fix: pass the OUTPUT_DIR of a training run (it holds "
                f"config.yaml and the checkpoints)"
            )
        cfg = get_cfg()
        cfg.merge_from_file(str(config))
        cfg.merge_from_list(list(opts))
        if weights is None:
            path = run_weights(run_dir)
        else:
            path = Path(weights)
            if not path.is_file() and (run_dir / path).is_file():
                path = run_dir / path
        cfg.MODEL.WEIGHTS = str(path)
        logger.info(f"Predicting with {path}")
        return cls(cfg)

    def to_model_format(self, image: np.ndarray, format: str | None = None) -> np.ndarray:
        """One image → H×W×C contiguous in the model's ``INPUT.FORMAT`` (checked: dtype and
        channel count; BGR/RGB converted), at its own size."""
        raster = self.input_format == "N" and getattr(image, "dtype", None) == np.float32
        if not isinstance(image, np.ndarray) or not (image.dtype == np.uint8 or raster):
            raise ConfigError(
                f"the predictor takes uint8 numpy images (float32 rasters for INPUT.FORMAT "
                f"'N'), got {getattr(image, 'dtype', type(image).__name__)}; fix: pass e.g. "
                f"cv2.imread(...) or np.asarray(PIL.Image.open(...))"
            )
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] != self.num_channels:
            raise ConfigError(
                f"an image of shape {image.shape} but the model takes {self.num_channels} "
                f"channel(s) (INPUT.FORMAT {self.input_format!r}); fix: convert it, e.g. "
                f"cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) for a grayscale model"
            )
        if {format, self.input_format} == {"BGR", "RGB"}:
            image = image[:, :, ::-1]
        return np.ascontiguousarray(image)

    def _model_input(self, image: np.ndarray, format: str | None) -> dict[str, Any]:
        """One H×W×C image → the model input the test loader would give for it."""
        return self.mapper.map_image(self.to_model_format(image, format))

    def predict_batch(
        self, images: Sequence[np.ndarray], format: str | None = None
    ) -> list[dict[str, Any]]:
        """The model's outputs for each image of ``images`` (one forward pass for all).
        ``format``: the images' channel order when it is not the model's ``INPUT.FORMAT``
        ("BGR" for ``cv2.imread``, "RGB" for PIL); BGR and RGB are converted."""
        with torch.inference_mode():
            return self.model([self._model_input(image, format) for image in images])

    def __call__(self, image: np.ndarray, format: str | None = None) -> dict[str, Any]:
        """The model's output dict for one image (``format`` as in :meth:`predict_batch`)."""
        return self.predict_batch([image], format)[0]
