"""The evaluator protocol and the loop that feeds a model's outputs to it.

An evaluator sees the dataset one batch at a time (``process``) and computes its metrics once at
the end (``evaluate``), as in Detectron2. Under DDP every process sees its shard; ``evaluate``
gathers what the processes collected to rank 0 (:func:`gather_to_main`) and returns ``{}`` on
the other ranks.
"""

import abc
import contextlib
import datetime
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from tqdm import tqdm

from d2seg.utils import comm

logger = logging.getLogger(__name__)


class DatasetEvaluator(abc.ABC):
    """Base class: accumulate (input, output) pairs, then compute metrics.

    Subclasses implement :meth:`process` and :meth:`evaluate`, override :meth:`reset` when they
    keep state, and may override :meth:`report_inputs` to hand plot data (confusion matrices,
    precision arrays) to :func:`d2seg.evaluation.report.write_report`.
    """

    def reset(self) -> None:
        """Forget everything processed so far (called before an inference run)."""

    @abc.abstractmethod
    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        """Take one batch: ``inputs`` are dataset dicts, ``outputs`` the model's per-image dicts."""

    @abc.abstractmethod
    def evaluate(self) -> dict[str, Any]:
        """Metrics of everything processed, e.g. ``{"bbox": {"AP": 41.2, ...}}``; ``{}`` if not
        the main process."""

    def report_inputs(self) -> dict[str, Any]:
        """Keyword arguments for ``write_report`` (call after :meth:`evaluate`)."""
        return {}


class DatasetEvaluators(DatasetEvaluator):
    """Several evaluators run as one; their result dicts are merged (keys must not clash)."""

    def __init__(self, evaluators: Iterable[DatasetEvaluator]):
        self._evaluators = list(evaluators)

    def reset(self) -> None:
        for evaluator in self._evaluators:
            evaluator.reset()

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for evaluator in self._evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self) -> dict[str, Any]:
        results: dict[str, Any] = {}
        for evaluator in self._evaluators:
            for key, value in evaluator.evaluate().items():
                if key in results:
                    raise ValueError(f"two evaluators both returned results for '{key}'")
                results[key] = value
        return results

    def report_inputs(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for evaluator in self._evaluators:
            merged.update(evaluator.report_inputs())
        return merged


def gather_to_main(items: list) -> list | None:
    """Concatenate every process's ``items`` on rank 0; ``None`` on the other ranks.

    Uses ``torch.distributed.all_gather_object`` when a process group is initialised.
    """
    gathered = comm.all_gather(items)
    if not comm.is_main_process():
        return None
    return [item for part in gathered for item in part]


@contextlib.contextmanager
def inference_context(model: torch.nn.Module) -> Iterator[None]:
    """``model.eval()`` for the block, then the previous training mode is restored."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def inference_on_dataset(
    model: torch.nn.Module,
    data_loader: Iterable[list[dict]],
    evaluator: DatasetEvaluator | None,
    *,
    num_warmup: int = 5,
) -> dict[str, Any]:
    """Run ``model`` over ``data_loader`` under ``torch.no_grad()`` and evaluate its outputs.

    Args:
        model: called as ``model(inputs)`` with a list of dataset dicts; returns one dict per
            image (see DESIGN §3.5).
        data_loader: yields lists of dataset dicts (batches).
        evaluator: ``None`` runs inference only (for timing).
        num_warmup: the first batches excluded from the logged per-image time (lazy init,
            allocator warm-up).

    Returns:
        ``evaluator.evaluate()`` on the main process, ``{}`` elsewhere or without an evaluator.
    """
    if evaluator is not None:
        evaluator.reset()
    try:
        total = len(data_loader)  # type: ignore[arg-type]
    except TypeError:
        total = None
    num_warmup = min(num_warmup, total - 1) if total else num_warmup
    timed_images, timed_seconds = 0, 0.0
    start = time.perf_counter()
    with inference_context(model), torch.no_grad():
        progress = tqdm(
            data_loader, total=total, desc="inference", disable=not comm.is_main_process()
        )
        for batch_index, inputs in enumerate(progress):
            batch_start = time.perf_counter()
            outputs = model(inputs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if batch_index >= num_warmup:
                timed_seconds += time.perf_counter() - batch_start
                timed_images += len(inputs)
            if evaluator is not None:
                evaluator.process(inputs, outputs)
    total_seconds = time.perf_counter() - start
    logger.info(
        "Inference done in %s; %.4f s / image on %d images after %d warm-up batches "
        "(per device, %d devices)",
        datetime.timedelta(seconds=int(total_seconds)),
        timed_seconds / max(timed_images, 1),
        timed_images,
        num_warmup,
        comm.get_world_size(),
    )
    if evaluator is None:
        return {}
    results = evaluator.evaluate()
    return results if results is not None else {}
