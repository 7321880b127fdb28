"""The dynamic batcher against a small fake model (no ONNX Runtime, no gRPC)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine
from types import SimpleNamespace
from typing import Any, TypeVar

import numpy as np
import pytest

from digitserve.serve.batcher import DEADLINE_SLACK, Batcher, ModelExecutionFailed, deadline_passed
from digitserve.serve.errors import DeadlineExceeded, Draining, QueueFull

T = TypeVar("T")


class FakeModel:
    """Returns each image's first pixel in column 0 (so rows are traceable); records batches."""

    def __init__(self, delay: float = 0.0, fail: bool = False, tag: float = 0.0):
        self.delay = delay
        self.fail = fail
        self.tag = tag
        self.batches: list[np.ndarray] = []
        self.release = threading.Event()
        self.release.set()
        self.info = SimpleNamespace(name="fake", version=1)
        self.running = self.most_running = 0
        self._lock = threading.Lock()

    def run(self, pixels: np.ndarray, instance: int = 0) -> np.ndarray:
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            return self._run(pixels)
        finally:
            with self._lock:
                self.running -= 1

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        self.release.wait(10)
        self.batches.append(pixels.copy())
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("boom")
        out = np.zeros((len(pixels), 10), dtype=np.float32)
        out[:, 0] = pixels[:, 0]
        out[:, 1] = self.tag
        return out

    @property
    def images(self) -> int:
        return sum(len(b) for b in self.batches)


class Recorder:
    def __init__(self) -> None:
        self.done: list[int] = []
        self.failed: list[int] = []
        self.drops: list[tuple[int, str]] = []

    def batch_done(self, model: Any, images: int, queue_seconds: Any, compute_seconds: float) -> None:
        self.done.append(images)

    def batch_failed(self, model: Any, images: int) -> None:
        self.failed.append(images)

    def dropped(self, images: int, reason: str) -> None:
        self.drops.append((images, reason))


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


def test_concurrent_single_images_are_batched_and_results_do_not_cross() -> None:
    async def scenario() -> None:
        model = FakeModel(delay=0.01)
        batcher, recorder = make(max_batch_size=8)
        results = await asyncio.gather(*(batcher.submit(images([i]), model) for i in range(40)))
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
        model = FakeModel()
        model.release.clear()  # the first batch blocks inside the model
        batcher, _ = make(max_batch_size=4, max_queue_images=10)
        first = asyncio.create_task(batcher.submit(images(range(4)), model))
        await asyncio.sleep(0.05)  # now running: the queue is empty again
        queued = asyncio.create_task(batcher.submit(images(range(8)), model))
        await asyncio.sleep(0)
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
        model = FakeModel()
        model.release.clear()
        batcher, recorder = make(max_batch_size=4)
        busy = asyncio.create_task(batcher.submit(images([1]), model))
        await asyncio.sleep(0.05)
        late = asyncio.create_task(batcher.submit(images([99]), model, deadline=time.monotonic() + 0.05))
        await asyncio.sleep(0.15)
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
        model = FakeModel()
        model.release.clear()
        batcher, recorder = make(max_batch_size=4)
        busy = asyncio.create_task(batcher.submit(images([1]), model))
        await asyncio.sleep(0.05)
        doomed = asyncio.create_task(batcher.submit(images(range(100, 106)), model))
        await asyncio.sleep(0.01)
        doomed.cancel()
        await asyncio.sleep(0.01)
        model.release.set()
        await busy
        with pytest.raises(asyncio.CancelledError):
            await doomed
        await asyncio.sleep(0.05)
        await batcher.close()
        assert model.images == 1
        assert sorted(recorder.drops) == [(2, "cancelled"), (4, "cancelled")]

    run(scenario())


def test_every_waiting_caller_gets_the_error_when_a_batch_fails() -> None:
    async def scenario() -> None:
        model = FakeModel(fail=True)
        model.release.clear()
        batcher, recorder = make(max_batch_size=16)
        calls = [asyncio.create_task(batcher.submit(images([i]), model)) for i in range(5)]
        await asyncio.sleep(0.02)
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
        batcher, _ = make(max_batch_size=4, max_queue_delay_us=200_000)
        first = asyncio.create_task(batcher.submit(images([0]), model))
        await asyncio.sleep(0.05)  # well inside the delay: the batch is still open
        rest = [asyncio.create_task(batcher.submit(images([i]), model)) for i in (1, 2, 3)]
        await asyncio.gather(first, *rest)
        await batcher.close()
        assert [len(b) for b in model.batches] == [4]

    run(scenario())


@pytest.mark.parametrize(("delay_us", "waits"), [(0, False), (60_000_000, True)])
def test_zero_delay_does_not_wait(delay_us: int, waits: bool) -> None:
    """A lone request in a batch of 4 reaches the model at once with no delay; with a delay it
    waits for company (here a minute: far beyond the 5 s this test allows)."""

    async def scenario() -> None:
        model = FakeModel()
        model.release.clear()  # hold the model: we only look at whether the request got there
        batcher, _ = make(max_batch_size=4, max_queue_delay_us=delay_us)
        call = asyncio.create_task(batcher.submit(images([0]), model))

        async def reached_the_model() -> None:
            while not model.running:
                await asyncio.sleep(0.01)

        try:
            await asyncio.wait_for(reached_the_model(), 5)
        except TimeoutError:
            assert waits, "a lone call waited although the delay is 0"
        else:
            assert not waits, "a lone call ran without waiting out its delay"
        model.release.set()
        await batcher.close()
        with contextlib.suppress(Draining):
            await call

    run(scenario())


def test_closing_fails_callers_whose_batch_is_forming_or_running() -> None:
    async def scenario() -> None:
        forming_model, running_model = FakeModel(), FakeModel()
        running_model.release.clear()
        waiting, _ = make(max_batch_size=4, max_queue_delay_us=60_000_000)
        forming = asyncio.create_task(waiting.submit(images([0]), forming_model))
        busy, _ = make(max_batch_size=4)
        running = asyncio.create_task(busy.submit(images([1]), running_model))
        while not running_model.running:
            await asyncio.sleep(0.01)
        await waiting.close()  # the batch waits for company: taken from the queue, not yet run
        threading.Timer(0.2, running_model.release.set).start()  # close waits for the model thread
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
        batcher, _ = make(max_batch_size=4, max_queue_delay_us=300_000, instances=3)
        calls = []
        for i in range(4):
            calls.append(asyncio.create_task(batcher.submit(images([i]), model)))
            await asyncio.sleep(0.02)  # each arrives alone, well inside the delay
        results = await asyncio.gather(*calls)
        await batcher.close()
        assert [len(b) for b in model.batches] == [4]
        assert [r[0, 0] for r in results] == [0, 1, 2, 3]

    run(scenario())


def test_a_batch_never_mixes_two_models() -> None:
    async def scenario() -> None:
        old, new = FakeModel(tag=1.0), FakeModel(tag=2.0)
        old.release.clear()
        batcher, _ = make(max_batch_size=16)
        busy = asyncio.create_task(batcher.submit(images([0]), old))
        await asyncio.sleep(0.05)
        calls = [asyncio.create_task(batcher.submit(images([i]), old if i < 4 else new)) for i in range(1, 8)]
        await asyncio.sleep(0.01)
        old.release.set()
        results = await asyncio.gather(busy, *calls)
        await batcher.close()
        tags = [r[0, 1] for r in results]
        assert tags == [1.0] * 4 + [2.0] * 4  # each call on the model it was submitted with
        assert [len(b) for b in old.batches] == [1, 3] and [len(b) for b in new.batches] == [4]

    run(scenario())


def test_instances_run_batches_in_parallel() -> None:
    async def scenario() -> None:
        model = FakeModel()
        model.release.clear()  # hold every run until both instances are inside the model
        batcher, _ = make(max_batch_size=1, instances=2)
        calls = [asyncio.create_task(batcher.submit(images([i]), model)) for i in range(4)]
        while model.running < 2:
            await asyncio.sleep(0.01)
        model.release.set()
        results = await asyncio.gather(*calls)
        await batcher.close()
        assert model.most_running == 2 and [r[0, 0] for r in results] == [0, 1, 2, 3]

    run(scenario())


def test_closed_batcher_refuses_and_fails_what_is_queued() -> None:
    async def scenario() -> None:
        model = FakeModel()
        model.release.clear()
        batcher, _ = make(max_batch_size=1)
        busy = asyncio.create_task(batcher.submit(images([0]), model))
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(batcher.submit(images([1]), model))
        await asyncio.sleep(0.01)
        model.release.set()
        await batcher.close()
        with pytest.raises(Draining):
            await queued
        with pytest.raises(Draining):
            await batcher.submit(images([2]), model)
        busy.cancel()

    run(scenario())
