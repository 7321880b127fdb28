"""The dynamic batcher against a small fake model (no ONNX Runtime, no gRPC).

No test sleeps to let the batcher "get there": the fake model reports each batch it enters and
leaves, and holds it until released, so a test waits for exactly the state it asserts; what
the batcher does on the event loop alone (queueing, taking chunks) needs only loop turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any, TypeVar

import numpy as np
import pytest

from digitserve.serve.batcher import DEADLINE_SLACK, Batcher, ModelExecutionFailed, deadline_passed
from digitserve.serve.errors import DeadlineExceeded, Draining, QueueFull

T = TypeVar("T")
A_MINUTE_US = 60_000_000  # a queue delay no test waits out: batches close by filling up


class Changes:
    """Wakes coroutines on the test's event loop when a fake's state changes, from any thread."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def notify(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            self._loop.call_soon_threadsafe(self._event.set)

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self._event.clear()  # notify() always sets it later, on the loop: no wake-up is lost
            await self._event.wait()


class FakeModel:
    """Returns each image's first pixel in column 0 (so rows are traceable); records batches.

    Each batch is recorded as it enters run(); with `hold` it then waits for `release`.
    """

    def __init__(self, fail: bool = False, tag: float = 0.0, hold: bool = False):
        self.fail = fail
        self.tag = tag
        self.batches: list[np.ndarray] = []
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.info = SimpleNamespace(name="fake", version=1)
        self.running = self.most_running = 0
        self._lock = threading.Lock()
        self._changes = Changes()

    def run(self, pixels: np.ndarray, instance: int = 0) -> np.ndarray:
        with self._lock:
            self.batches.append(pixels.copy())
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        self._changes.notify()
        try:
            self.release.wait(10)
            if self.fail:
                raise RuntimeError("boom")
            out = np.zeros((len(pixels), 10), dtype=np.float32)
            out[:, 0] = pixels[:, 0]
            out[:, 1] = self.tag
            return out
        finally:
            with self._lock:
                self.running -= 1
            self._changes.notify()

    async def until_running(self, batches: int) -> None:
        """Wait until `batches` batches are inside run() at once."""
        await self._changes.until(lambda: self.running == batches)

    @property
    def images(self) -> int:
        return sum(len(b) for b in self.batches)


class Recorder:
    """The batcher's observer: what it reported, and a wait for reports to come."""

    def __init__(self) -> None:
        self.done: list[int] = []
        self.failed: list[int] = []
        self.drops: list[tuple[int, str]] = []
        self.changes = Changes()

    def batch_done(self, model: Any, images: int, queue_seconds: Any, compute_seconds: float) -> None:
        self.done.append(images)
        self.changes.notify()

    def batch_failed(self, model: Any, images: int) -> None:
        self.failed.append(images)
        self.changes.notify()

    def dropped(self, images: int, reason: str) -> None:
        self.drops.append((images, reason))
        self.changes.notify()


def images(ids: list[int] | range) -> np.ndarray:
    """One image per id, whose first pixel is the id (traceable through the fake model)."""
    out = np.zeros((len(ids), 784), dtype=np.float32)
    out[:, 0] = list(ids)
    return out


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def make(**kwargs: Any) -> tuple[Batcher, Recorder]:
    recorder = Recorder()
    options = dict(max_batch_size=8, max_queue_images=64, observer=recorder)
    options.update(kwargs)
    batcher = Batcher(**options)
    batcher.start()
    return batcher, recorder


async def turns(predicate: Callable[[], bool], limit: int = 100) -> None:
    """Let the event loop take turns until `predicate()` holds; no time passes (sleep(0) only
    yields). For state the batcher changes on the loop itself, where the fakes see nothing."""
    for _ in range(limit):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"not reached in {limit} turns of the event loop")


async def submitted(coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """The call as a task that has run to its first await: for submit(), its images are queued."""
    task = asyncio.create_task(coroutine)
    await turns(lambda: inspect.getcoroutinestate(coroutine) != inspect.CORO_CREATED)
    return task


def test_concurrent_single_images_are_batched_and_results_do_not_cross() -> None:
    async def scenario() -> None:
        model = FakeModel(hold=True)  # the first batch waits in the model while the rest queue
        batcher, recorder = make(max_batch_size=8)
        calls = [asyncio.create_task(batcher.submit(images([i]), model)) for i in range(40)]
        await model.until_running(1)
        model.release.set()
        results = await asyncio.gather(*calls)
        await batcher.close()
        for i, result in enumerate(results):
            assert result.shape == (1, 10) and result[0, 0] == i
        assert len(model.batches) < 40 and max(recorder.done) > 1
        assert max(recorder.done) <= 8 and sum(recorder.done) == 40

    run(scenario())


def test_big_request_is_split_and_reassembled_in_order() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher, _ = make(max_batch_size=8)
        result = await batcher.submit(images(range(30)), model)
        await batcher.close()
        assert result[:, 0].tolist() == list(range(30))
        assert [len(b) for b in model.batches] == [8, 8, 8, 6]

    run(scenario())


def test_queue_full_is_refused_without_queueing() -> None:
    async def scenario() -> None:
        model = FakeModel(hold=True)  # the first batch blocks inside the model
        batcher, _ = make(max_batch_size=4, max_queue_images=10)
        first = asyncio.create_task(batcher.submit(images(range(4)), model))
        await model.until_running(1)  # now running: the queue is empty again
        queued = await submitted(batcher.submit(images(range(8)), model))
        assert batcher.queued_images == 8
        with pytest.raises(QueueFull, match="queue full: 8 images are waiting"):
            await batcher.submit(images(range(3)), model)
        model.release.set()
        await asyncio.gather(first, queued)
        await batcher.close()
        assert model.images == 12

    run(scenario())


def test_expired_requests_never_reach_the_model() -> None:
    async def scenario() -> None:
        model = FakeModel(hold=True)
        batcher, recorder = make(max_batch_size=4)
        busy = asyncio.create_task(batcher.submit(images([1]), model))
        await model.until_running(1)
        # the deadline passes while the call waits behind the busy batch
        late = await submitted(batcher.submit(images([99]), model, deadline=time.monotonic()))
        model.release.set()
        with pytest.raises(DeadlineExceeded, match="before the model ran"):
            await late
        await busy
        await batcher.close()
        assert all(99 not in batch[:, 0] for batch in model.batches)
        assert recorder.drops == [(1, "expired")]

    run(scenario())


def test_cancelled_requests_never_reach_the_model() -> None:
    async def scenario() -> None:
        model = FakeModel(hold=True)
        batcher, recorder = make(max_batch_size=4)
        busy = asyncio.create_task(batcher.submit(images([1]), model))
        await model.until_running(1)
        doomed = await submitted(batcher.submit(images(range(100, 106)), model))
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed  # done: its chunks (4 + 2 images) are cancelled, still queued
        model.release.set()
        await busy
        await recorder.changes.until(lambda: len(recorder.drops) == 2)  # the worker came to them
        await batcher.close()
        assert model.images == 1
        assert sorted(recorder.drops) == [(2, "cancelled"), (4, "cancelled")]

    run(scenario())


def test_every_waiting_caller_gets_the_error_when_a_batch_fails() -> None:
    async def scenario() -> None:
        model = FakeModel(fail=True, hold=True)
        batcher, recorder = make(max_batch_size=16)
        calls = [asyncio.create_task(batcher.submit(images([i]), model)) for i in range(5)]
        await model.until_running(1)
        model.release.set()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(o, ModelExecutionFailed) for o in outcomes), outcomes
        assert "server log" in str(outcomes[0]) and "boom" not in str(outcomes[0])
        # the batcher survives a failed batch
        model.fail = False
        assert (await batcher.submit(images([7]), model))[0, 0] == 7
        await batcher.close()
        assert recorder.failed == [5]

    run(scenario())


def test_queue_delay_waits_to_fill_a_batch() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher, _ = make(max_batch_size=4, max_queue_delay_us=A_MINUTE_US)
        first = await submitted(batcher.submit(images([0]), model))
        await turns(lambda: batcher.queued_images == 0)  # taken by the worker: the batch is open
        rest = [asyncio.create_task(batcher.submit(images([i]), model)) for i in (1, 2, 3)]
        await asyncio.gather(first, *rest)
        await batcher.close()
        assert [len(b) for b in model.batches] == [4]

    run(scenario())


@pytest.mark.parametrize(("delay_us", "waits"), [(0, False), (A_MINUTE_US, True)])
def test_zero_delay_does_not_wait(delay_us: int, waits: bool) -> None:
    """A lone request in a batch of 4 reaches the model at once with no delay; with a delay it
    waits for company: three calls sent once the worker took it join its batch."""

    async def scenario() -> None:
        model = FakeModel(hold=True)  # hold the model: we only look at which batch got there first
        batcher, _ = make(max_batch_size=4, max_queue_delay_us=delay_us)
        call = await submitted(batcher.submit(images([0]), model))
        await turns(lambda: batcher.queued_images == 0)  # taken: sent to the model, or waiting
        company = [asyncio.create_task(batcher.submit(images([i]), model)) for i in (1, 2, 3)]
        await model.until_running(1)
        if len(model.batches[0]) > 1:
            assert waits, "a lone call waited although the delay is 0"
        else:
            assert not waits, "a lone call ran without waiting out its delay"
        model.release.set()
        await batcher.close()
        for each in (call, *company):
            with contextlib.suppress(Draining):
                await each

    run(scenario())


def test_closing_fails_callers_whose_batch_is_forming_or_running() -> None:
    async def scenario() -> None:
        forming_model, running_model = FakeModel(), FakeModel(hold=True)
        waiting, _ = make(max_batch_size=4, max_queue_delay_us=A_MINUTE_US)
        forming = await submitted(waiting.submit(images([0]), forming_model))
        busy, _ = make(max_batch_size=4)
        running = asyncio.create_task(busy.submit(images([1]), running_model))
        await running_model.until_running(1)
        await turns(lambda: waiting.queued_images == 0)
        await waiting.close()  # the batch waits for company: taken from the queue, not yet run
        # close waits for the model thread: release it once close() has cancelled the worker
        # (close runs up to its first await before this callback)
        asyncio.get_running_loop().call_soon(running_model.release.set)
        await busy.close()
        for call in (forming, running):
            with pytest.raises(Draining):
                await call
        assert forming_model.batches == []

    run(scenario())


def test_the_clock_slack_labels_drops_but_never_expires_a_request_early() -> None:
    assert not deadline_passed(10.0, now=9.996)
    assert deadline_passed(10.0, now=9.996, slack=DEADLINE_SLACK)
    assert deadline_passed(10.0, now=10.0) and not deadline_passed(None, now=1e9)


def test_idle_instances_do_not_split_a_filling_batch() -> None:
    async def scenario() -> None:
        model = FakeModel()
        batcher, _ = make(max_batch_size=4, max_queue_delay_us=A_MINUTE_US, instances=3)
        calls = []
        for i in range(4):  # each arrives alone, and one worker takes it into the open batch
            calls.append(await submitted(batcher.submit(images([i]), model)))
            await turns(lambda: batcher.queued_images == 0)
        results = await asyncio.gather(*calls)
        await batcher.close()
        assert [len(b) for b in model.batches] == [4]
        assert [r[0, 0] for r in results] == [0, 1, 2, 3]

    run(scenario())


def test_a_batch_never_mixes_two_models() -> None:
    async def scenario() -> None:
        old, new = FakeModel(tag=1.0, hold=True), FakeModel(tag=2.0)
        batcher, _ = make(max_batch_size=16)
        busy = asyncio.create_task(batcher.submit(images([0]), old))
        await old.until_running(1)
        calls = [await submitted(batcher.submit(images([i]), old if i < 4 else new)) for i in range(1, 8)]
        old.release.set()
        results = await asyncio.gather(busy, *calls)
        await batcher.close()
        tags = [r[0, 1] for r in results]
        assert tags == [1.0] * 4 + [2.0] * 4  # each call on the model it was submitted with
        assert [len(b) for b in old.batches] == [1, 3] and [len(b) for b in new.batches] == [4]

    run(scenario())


def test_instances_run_batches_in_parallel() -> None:
    async def scenario() -> None:
        model = FakeModel(hold=True)  # hold every run until both instances are inside the model
        batcher, _ = make(max_batch_size=1, instances=2)
        calls = [asyncio.create_task(batcher.submit(images([i]), model)) for i in range(4)]
        await model.until_running(2)
        model.release.set()
        results = await asyncio.gather(*calls)
        await batcher.close()
        assert model.most_running == 2 and [r[0, 0] for r in results] == [0, 1, 2, 3]

    run(scenario())


def test_closed_batcher_refuses_and_fails_what_is_queued() -> None:
    async def scenario() -> None:
        model = FakeModel(hold=True)
        batcher, _ = make(max_batch_size=1)
        busy = asyncio.create_task(batcher.submit(images([0]), model))
        await model.until_running(1)
        queued = await submitted(batcher.submit(images([1]), model))
        model.release.set()
        await batcher.close()
        with pytest.raises(Draining):
            await queued
        with pytest.raises(Draining):
            await batcher.submit(images([2]), model)
        busy.cancel()

    run(scenario())
