"""Requests that arrive together become one model call, in a thread of its own.

:class:`BatchQueue` is the server's only path to the model: ``await queue.submit(image)``
from the event loop enqueues the image (or raises :class:`QueueFull` when ``max_queue``
requests wait already); one worker thread takes the first waiting image, waits up to
``timeout_s`` for up to ``max_batch - 1`` more, runs them in one ``predict_batch`` call and
hands each caller its output. The event loop never runs the model, so it keeps answering
(``/v1/health``) while the model is busy.
"""

import asyncio
import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np


class QueueFull(Exception):
    """``max_queue`` requests wait already; ``retry_after`` (s) is when one slot should be
    free."""

    def __init__(self, retry_after: int):
        super().__init__(f"queue full, retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass
class BatchResult:
    """One image's output and how it was computed: seconds waiting in the queue, seconds of
    the model call, and the number of images in that call."""

    outputs: dict[str, Any]
    queued_s: float
    inference_s: float
    batch_size: int


@dataclass
class _Job:
    image: np.ndarray
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float


def _resolve(future: asyncio.Future, result: Any = None, error: BaseException | None = None):
    if future.done():  # the client went away and the request was cancelled
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class BatchQueue:
    """Batches ``predict_batch(images) -> outputs`` calls over concurrent requests.

    Args:
        predict_batch: list of images → list of outputs, one forward pass
            (:meth:`~d2seg.engine.predictor.DefaultPredictor.predict_batch`).
        max_batch: images per call, at most.
        timeout_s: how long the first image of a batch waits for more (seconds).
        max_queue: images waiting, at most (:class:`QueueFull` beyond).

    Example::

        import asyncio
        from d2seg.serving.batching import BatchQueue

        async def main():
            batches = BatchQueue(lambda images: [{"n": len(images)}] * len(images),
                                 max_batch=4, timeout_s=0.01, max_queue=16)
            batches.start()
            results = await asyncio.gather(*(batches.submit(i) for i in range(3)))
            batches.stop()
            print([r.batch_size for r in results])      # [3, 3, 3]

        asyncio.run(main())
    """

    def __init__(self, predict_batch: Callable[[Sequence[Any]], list], *, max_batch: int,
                 timeout_s: float, max_queue: int):
        self.predict_batch = predict_batch
        self.max_batch, self.timeout_s, self.max_queue = max_batch, timeout_s, max_queue
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._waiting = 0
        self._lock = threading.Lock()
        self._batch_seconds = 0.0  # moving average, for Retry-After
        self._thread: threading.Thread | None = None

    @property
    def depth(self) -> int:
        """Images waiting for the model now."""
        return self._waiting

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="d2seg-batches", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the batch in progress, then end the thread (waiting jobs are dropped)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None

    def retry_after(self) -> int:
        """Seconds until the queue has room again, at least 1."""
        batches = math.ceil(self._waiting / self.max_batch)
        return max(1, math.ceil(batches * self._batch_seconds))

    async def submit(self, image: Any) -> BatchResult:
        """The model's output for ``image``, computed with whatever else waits."""
        with self._lock:
            if self._waiting >= self.max_queue:
                raise QueueFull(self.retry_after())
            self._waiting += 1
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._jobs.put(_Job(image, future, loop, time.perf_counter()))
        return await future

    def _take_batch(self, first: _Job) -> list[_Job]:
        batch = [first]
        deadline = time.perf_counter() + self.timeout_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                job = self._jobs.get(timeout=remaining) if remaining > 0 \
                    else self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._jobs.put(None)  # stop after this batch
                break
            batch.append(job)
        with self._lock:
            self._waiting -= len(batch)
        return batch

    def _run(self) -> None:
        while (first := self._jobs.get()) is not None:
            batch = self._take_batch(first)
            started = time.perf_counter()
            try:
                outputs = self.predict_batch([job.image for job in batch])
            except Exception as e:  # every caller hears of it; the thread carries on
                for job in batch:
                    job.loop.call_soon_threadsafe(_resolve, job.future, None, e)
                continue
            seconds = time.perf_counter() - started
            self._batch_seconds = seconds if not self._batch_seconds \
                else 0.8 * self._batch_seconds + 0.2 * seconds
            for job, output in zip(batch, outputs):
                result = BatchResult(output, started - job.enqueued, seconds, len(batch))
                job.loop.call_soon_threadsafe(_resolve, job.future, result)
