"""BatchQueue: concurrent submissions grouped into model calls, a bounded queue, errors to
every caller, and an event loop that stays free while the model works."""

import asyncio
import threading

import pytest

from d2seg.serving.batching import BatchQueue, QueueFull


class _Model:
    """Doubles numbers; each call is recorded and can be held until ``release`` is set."""

    def __init__(self, hold: bool = False, fail: bool = False):
        self.calls: list[list[int]] = []
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.fail = fail

    def __call__(self, images):
        self.calls.append(list(images))
        self.release.wait(10)
        if self.fail:
            raise ValueError("model broke")
        return [{"double": 2 * i} for i in images]


def _run(coroutine):
    return asyncio.run(coroutine)


def test_requests_that_arrive_together_share_a_call_and_get_their_own_output():
    model = _Model()

    async def main():
        queue = BatchQueue(model, max_batch=4, timeout_s=0.2, max_queue=16)
        queue.start()
        results = await asyncio.gather(*(queue.submit(i) for i in range(6)))
        queue.stop()
        return results

    results = _run(main())
    assert [r.outputs["double"] for r in results] == [0, 2, 4, 6, 8, 10]
    assert sorted(len(c) for c in model.calls) == [2, 4]
    assert [r.batch_size for r in results] == [4, 4, 4, 4, 2, 2]


def test_a_full_queue_refuses_with_retry_after_and_the_loop_stays_free():
    model = _Model(hold=True)

    async def main():
        queue = BatchQueue(model, max_batch=1, timeout_s=0, max_queue=2)
        queue.start()
        first = asyncio.ensure_future(queue.submit(1))
        while not model.calls:  # the model holds image 1; the loop still runs this
            await asyncio.sleep(0.01)
        waiting = [asyncio.ensure_future(queue.submit(i)) for i in (2, 3)]
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull) as refused:
            await queue.submit(4)
        assert queue.depth == 2
        model.release.set()
        results = await asyncio.gather(first, *waiting)
        queue.stop()
        return refused.value, results

    refused, results = _run(main())
    assert refused.retry_after >= 1
    assert [r.outputs["double"] for r in results] == [2, 4, 6]


def test_a_model_error_reaches_every_caller_of_the_batch_and_the_queue_goes_on():
    model = _Model(fail=True)

    async def main():
        queue = BatchQueue(model, max_batch=2, timeout_s=0.2, max_queue=8)
        queue.start()
        outcomes = await asyncio.gather(queue.submit(1), queue.submit(2),
                                        return_exceptions=True)
        model.fail = False
        after = await queue.submit(3)
        queue.stop()
        return outcomes, after

    outcomes, after = _run(main())
    assert all(isinstance(o, ValueError) for o in outcomes)
    assert after.outputs == {"double": 6}
