"""Training metrics: a per-iteration store and the writers that publish it.

The trainer puts scalars (losses, LR, timings, evaluation results) into an :class:`EventStorage`;
writers read it every few iterations:

* :class:`JSONWriter` appends one JSON object per line to ``OUTPUT_DIR/metrics.json``
  (Detectron2's format: ``{"iteration": i, "total_loss": ..., ...}``, losses as the median of
  the last 20 iterations); after ``--resume`` it first drops the rows of the iterations the run
  redoes;
* :class:`TensorboardWriter` writes ``events.out.tfevents.*`` with ``torch.utils.tensorboard``
  (purging the redone iterations after ``--resume`` too);
* :class:`ProgressWriter` shows a tqdm bar with ETA and losses on a terminal, and plain log lines
  when stdout is not a TTY (CI logs, ``nohup``).
"""

import json
import logging
import os
import sys
from collections import defaultdict

import numpy as np
from fvcore.common.history_buffer import HistoryBuffer

from d2seg.utils.io import atomic_open

logger = logging.getLogger(__name__)


class EventStorage:
    """Scalars per iteration: ``put_scalar(name, value)``; ``latest()`` for the newest values."""

    def __init__(self, start_iter: int = 0):
        self.start_iter = start_iter
        self.iter = start_iter
        self._history: dict[str, HistoryBuffer] = defaultdict(HistoryBuffer)
        self._latest: dict[str, tuple[float, int]] = {}

    def put_scalar(self, name: str, value: float) -> None:
        value = float(value)
        self._history[name].update(value, self.iter)
        self._latest[name] = (value, self.iter)

    def put_scalars(self, **kwargs: float) -> None:
        for name, value in kwargs.items():
            self.put_scalar(name, value)

    def history(self, name: str) -> HistoryBuffer:
        return self._history[name]

    def latest(self) -> dict[str, tuple[float, int]]:
        """``name -> (value, iteration it was put at)``."""
        return dict(self._latest)

    def median(self, name: str, window: int = 20) -> float:
        return self._history[name].median(window)


class _NewScalars:
    """Which of the storage's latest scalars a writer has not written yet (values put after
    a write at the same iteration, such as the final evaluation, still count as new)."""

    def __init__(self) -> None:
        self._written: dict[str, int] = {}

    def take(self, storage: EventStorage) -> dict[int, dict[str, float]]:
        by_iter: dict[int, dict[str, float]] = defaultdict(dict)
        for name, (value, it) in storage.latest().items():
            if it > self._written.get(name, -1):
                by_iter[it][name] = value
                self._written[name] = it
        return by_iter


def is_training_loss(name: str) -> bool:
    """Losses the progress line and metrics.json smooth (``total_loss``, ``loss_*``)."""
    return "loss" in name and "/" not in name


class JSONWriter:
    """Appends the scalars put since the last write to ``path`` as JSON lines.

    Losses (:func:`is_training_loss`) are written as their median over the last ``window``
    iterations, as Detectron2 does: the value the progress line shows, so metrics.json, the log
    and ``tools/summarize_run.py`` agree. TensorBoard gets the raw values.

    A run resumed at iteration ``k`` (``storage.start_iter``) first removes the rows of
    iterations >= ``k`` (written by the stopped run after its last checkpoint, and redone now),
    rewriting the file atomically, so that iterations stay increasing.
    """

    def __init__(self, path: str, window: int = 20):
        self.path = path
        self.window = window
        self._new = _NewScalars()
        self._purged = False

    def _purge_redone_rows(self, start_iter: int) -> None:
        self._purged = True
        if not os.path.exists(self.path):
            return
        with open(self.path, encoding="utf-8") as f:
            lines = f.readlines()
        kept = [line for line in lines if json.loads(line)["iteration"] < start_iter]
        if len(kept) < len(lines):
            with atomic_open(self.path, "w", encoding="utf-8") as f:
                f.writelines(kept)
            logger.info(
                f"Removed {len(lines) - len(kept)} rows of iterations >= {start_iter} from "
                f"{self.path}: this run redoes them"
            )

    def _smoothed(self, storage: EventStorage, name: str, it: int, value: float) -> float:
        if not is_training_loss(name):
            return value
        recent = storage.history(name).values()[-self.window:]
        return float(np.median([v for v, i in recent if it - self.window < i <= it]))

    def write(self, storage: EventStorage) -> None:
        if not self._purged:
            self._purge_redone_rows(storage.start_iter)
        by_iter = self._new.take(storage)
        if not by_iter:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            for it in sorted(by_iter):
                row = {k: self._smoothed(storage, k, it, v) for k, v in by_iter[it].items()}
                f.write(json.dumps({"iteration": it, **row}, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def close(self) -> None:
        return None


class TensorboardWriter:
    """Writes the scalars put since the last write to TensorBoard event files in ``log_dir``.

    The event file is opened at the first write with ``purge_step = storage.start_iter``, so
    that after a resume TensorBoard hides the stopped run's events of the iterations redone.
    """

    def __init__(self, log_dir: str):
        self.log_dir = log_dir
        self._writer = None
        self._new = _NewScalars()

    def write(self, storage: EventStorage) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(self.log_dir, purge_step=storage.start_iter)
        for it, scalars in self._new.take(storage).items():
            for name, value in scalars.items():
                self._writer.add_scalar(name, value, it)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class ProgressWriter:
    """A tqdm bar (ETA, total loss, LR) on a TTY; an INFO log line per write otherwise."""

    def __init__(self, max_iter: int, use_bar: bool | None = None):
        self.max_iter = max_iter
        self.use_bar = sys.stderr.isatty() if use_bar is None else use_bar
        self._bar = None
        self._shown: int | None = None

    def write(self, storage: EventStorage) -> None:
        done = storage.iter + 1
        if done == self._shown:
            return
        if self._shown is None:
            self._shown = storage.start_iter
            if self.use_bar:
                from tqdm import tqdm

                self._bar = tqdm(
                    total=self.max_iter, initial=self._shown, desc="train", dynamic_ncols=True
                )
        latest = storage.latest()
        losses = {k: v for k, (v, _) in latest.items() if is_training_loss(k)}
        shown = {k: storage.median(k) for k in losses}
        lr = latest.get("lr", (float("nan"), 0))[0]
        if self._bar is not None:  # tqdm shows its own ETA
            self._bar.update(done - self._shown)
            self._bar.set_postfix(
                {k: f"{v:.3f}" for k, v in shown.items() if k == "total_loss"} | {"lr": f"{lr:.2g}"}
            )
        else:
            eta = ""
            if "time" in latest:
                seconds = int(storage.median("time") * (self.max_iter - done))
                eta = f"  eta: {seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
            text = "  ".join(f"{k}: {v:.4g}" for k, v in sorted(shown.items()))
            logger.info(f"iter: {done}/{self.max_iter}{eta}  {text}  lr: {lr:.4g}")
        self._shown = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
