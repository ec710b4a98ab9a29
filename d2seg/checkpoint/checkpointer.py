"""Checkpoints: fvcore's Checkpointer, loading data only and writing atomically.

Files hold ``{"model": state_dict, "optimizer": ..., "scheduler": ..., "iteration": int, ...}``
as Detectron2's do, plus ``"metadata"``: what inference needs (class names, tasks, input
format, ... — :func:`d2seg.engine.run_metadata.inference_metadata`), so a checkpoint alone names
its predictions. A lean save (``model_only=True``: ``model_best.pth``, ``model_final.pth``)
holds only the model, its metadata and what the caller adds (the iteration, the best metric). What d2seg changes in fvcore's behaviour:

* every file is read with ``torch.load(weights_only=True)``: a checkpoint is data, not code, and
  a pickle that holds Python objects is refused with :class:`CheckpointError`;
* a plain state dict (e.g. torchvision's ``resnet50-*.pth``) is accepted as the model's weights;
  Detectron2 model-zoo files (``.pkl`` of numpy arrays, read by a restricted unpickler, or
  ``.pth``) with Caffe2 or Detectron2 names are mapped onto d2seg's modules
  (:mod:`d2seg.checkpoint.detectron2`), with a logged report of what loaded;
  a model may define ``map_external_state_dict(state_dict) -> state_dict`` to rename foreign keys;
* saves go to a temp file that is renamed into place, so a process killed mid-write leaves the
  previous checkpoint (and ``last_checkpoint``) intact;
* a missing, truncated or corrupt file is a :class:`CheckpointError` naming it.

Parameters whose shapes differ from the model's (a new number of classes when fine-tuning) are
skipped with fvcore's (Detectron2's) warning.
"""

import os
import pickle
import shutil
from typing import Any

import torch
from fvcore.common.checkpoint import Checkpointer

from d2seg.checkpoint.detectron2 import (
    is_caffe2_state_dict,
    is_detectron2_state_dict,
    load_pkl,
    map_detectron2_state_dict,
)
from d2seg.errors import CheckpointError
from d2seg.utils.io import atomic_open, interrupted_writes


class D2SegCheckpointer(Checkpointer):
    """A :class:`fvcore.common.checkpoint.Checkpointer` with safe loading and atomic saving.

    Example::

        checkpointer = D2SegCheckpointer(model, "runs/x", metadata={"thing_classes": ["cat"]},
                                         optimizer=optimizer)
        checkpointer.save("model_0000999", iteration=999)         # full state, for --resume
        checkpointer.save("model_final", model_only=True, tag_last=False, iteration=999)
        extra = checkpointer.resume_or_load("runs/x/model_final.pth", resume=False)
    """

    def __init__(
        self,
        model: torch.nn.Module,
        save_dir: str = "",
        *,
        metadata: dict[str, Any] | None = None,
        save_to_disk: bool = True,
        **checkpointables: Any,
    ):
        """
        Args:
            model: the model whose ``state_dict`` is saved and loaded.
            save_dir: the folder of the checkpoints and ``last_checkpoint``.
            metadata: plain data written into every checkpoint under ``"metadata"``.
            save_to_disk: False on the processes that must not write (DDP ranks > 0).
            checkpointables: objects with ``state_dict``/``load_state_dict`` (optimizer,
                scheduler, ...) saved in full checkpoints and restored by ``--resume``.
        """
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.metadata = metadata

    def save(
        self, name: str, *, tag_last: bool = True, model_only: bool = False, **kwargs: Any
    ) -> None:
        """Write ``{save_dir}/{name}.pth`` atomically, then point ``last_checkpoint`` at it
        unless ``tag_last`` is False (a best-model copy must not become what ``--resume``
        continues from). ``model_only`` leaves out the checkpointables (optimizer, scheduler,
        ...): a file to ship, not to resume from. ``kwargs`` are stored as they are."""
        if not self.save_dir or not self.save_to_disk:
            return
        data: dict[str, Any] = {"model": self.model.state_dict()}
        if self.metadata is not None:
            data["metadata"] = self.metadata
        if not model_only:
            for key, obj in self.checkpointables.items():
                data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        with atomic_open(path, "wb") as f:
            torch.save(data, f)
        if tag_last:
            self.tag_last_checkpoint(basename)

    def remove_interrupted_saves(self) -> list[str]:
        """Delete the temp files of saves that a killed process left in ``save_dir`` (the
        finished checkpoints are untouched); returns their paths. Call it only while no other
        process is saving there."""
        if not self.save_dir or not self.save_to_disk or not os.path.isdir(self.save_dir):
            return []
        removed = [
            str(path)
            for path, target in interrupted_writes(self.save_dir).items()
            if target.endswith(".pth") or target == "last_checkpoint"
        ]
        for path in removed:
            os.remove(path)
        return removed

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        with atomic_open(os.path.join(self.save_dir, "last_checkpoint"), "w") as f:
            f.write(last_filename_basename)

    def load(self, path: str, checkpointables: list[str] | None = None) -> dict[str, Any]:
        if path and not os.path.isfile(path):
            raise CheckpointError(
                f"checkpoint {path} does not exist; fix: set MODEL.WEIGHTS to a local .pth file "
                f"(d2seg never downloads weights)"
            )
        return super().load(path, checkpointables)

    def _load_file(self, filename: str) -> dict[str, Any]:
        if filename.endswith(".pkl"):
            checkpoint = load_pkl(filename)
        else:
            checkpoint = load_checkpoint_file(filename)
        if "model" not in checkpoint:
            checkpoint = {"model": checkpoint}
        weights = checkpoint["model"]
        if is_caffe2_state_dict(weights) or is_detectron2_state_dict(weights):
            checkpoint["model"], report = map_detectron2_state_dict(weights, self.model)
            self.logger.info(f"Detectron2 weights {filename}: {report.summary()}")
            checkpoint["detectron2_report"] = report
        mapper = getattr(self.model, "map_external_state_dict", None)
        if mapper is not None:
            checkpoint["model"] = mapper(checkpoint["model"])
        return checkpoint


def load_checkpoint_file(filename: str) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; any failure is a :class:`CheckpointError`."""
    try:
        checkpoint = torch.load(filename, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = next(
            (line.strip() for line in str(e).splitlines() if "Unsupported global" in line),
            "the file is not a valid checkpoint",
        )
        raise CheckpointError(
            f"checkpoint {filename} cannot be loaded as data ({reason}); fix: load it only if "
            f"you trust it and re-save its state_dict with torch.save(model.state_dict(), path)"
        ) from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError) as e:
        first = (str(e).splitlines() or [""])[0] if not isinstance(e, KeyError) else ""
        first = first or type(e).__name__
        raise CheckpointError(
            f"{filename} is not a checkpoint, or is truncated or corrupt ({first}); fix: point "
            f"MODEL.WEIGHTS at a .pth written by torch.save (a d2seg checkpoint or a state "
            f"dict), or use an earlier checkpoint"
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"checkpoint {filename} holds a {type(checkpoint).__name__}, not a dict of tensors; "
            f"fix: save model.state_dict() rather than the model object"
        )
    return checkpoint


def estimated_checkpoint_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Size of a full checkpoint of ``model`` + ``optimizer``, before the optimizer has any
    state: the model's tensors plus one (SGD with momentum) or two (Adam, AdamW) tensors of
    optimizer state per trainable parameter."""
    model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        slots = 2
    else:
        slots = int(any(g.get("momentum", 0) for g in optimizer.param_groups))
    return model_bytes + slots * trainable


def check_free_space(folder: str, checkpoint_bytes: int, copies: int = 2) -> None:
    """Raise :class:`CheckpointError` when ``folder``'s disk cannot hold ``copies`` checkpoints
    of ``checkpoint_bytes`` (a run that dies at its first save loses the whole run)."""
    os.makedirs(folder, exist_ok=True)
    free = shutil.disk_usage(folder).free
    needed = copies * checkpoint_bytes
    if free < needed:
        raise CheckpointError(
            f"OUTPUT_DIR {folder} has {free / 2**20:.0f} MiB free but {copies} checkpoints of this "
            f"model need {needed / 2**20:.0f} MiB; fix: free disk space, set OUTPUT_DIR on a "
            f"larger disk, or lower SOLVER.CHECKPOINT_KEEP"
        )

