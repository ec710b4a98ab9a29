"""Which model to load: a run folder (``--run``, ``--weights``) or a config file with
``MODEL.WEIGHTS`` (``--config-file``), plus ``KEY VALUE`` overrides; and the weights' hash
(tools/predict.py and tools/serve.py)."""

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from d2seg.config import get_cfg
from d2seg.engine.predictor import DefaultPredictor
from d2seg.errors import CheckpointError, ConfigError

_HASH_CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class ModelSource:
    """A model to load, as the command line names it (plain data: it travels to ``--workers``
    processes as JSON).

    Example::

        from d2seg.engine.model_source import ModelSource

        predictor = ModelSource(run="output/demo/balloons_run").load()
    """

    run: str | None = None
    weights: str | None = None
    config_file: str | None = None
    opts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.run and self.config_file:
            raise ConfigError("--run and --config-file both given; fix: pass one of them")
        if not self.run and not self.config_file:
            raise ConfigError("no model; fix: pass --run RUN_DIR, or --config-file F "
                              "MODEL.WEIGHTS W")

    def load(self) -> DefaultPredictor:
        """The predictor (``MODEL.DEVICE auto`` unless the opts set it)."""
        opts = ["MODEL.DEVICE", "auto", *self.opts]
        if self.run:
            return DefaultPredictor.from_run(self.run, weights=self.weights, opts=opts)
        cfg = get_cfg()
        cfg.merge_from_file(self.config_file)
        cfg.merge_from_list(opts)
        if not cfg.MODEL.WEIGHTS:
            raise ConfigError(
                f"--config-file {self.config_file} gives no MODEL.WEIGHTS; fix: add "
                f"MODEL.WEIGHTS path/to/model_final.pth (or use --run RUN_DIR)"
            )
        return DefaultPredictor(cfg)

    @property
    def name(self) -> str:
        """What the model is called in responses: the run folder's or config file's name."""
        return Path(self.run).resolve().name if self.run else Path(self.config_file).stem

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSource":
        return cls(**{**data, "opts": tuple(data.get("opts", ()))})


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
    except OSError as e:
        raise CheckpointError(f"cannot read the weights {path} ({e}); fix: check the path") from e
    return digest.hexdigest()
