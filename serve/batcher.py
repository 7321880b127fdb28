"""The dynamic batcher: merges images from concurrent calls into one model execution.

Callers `await submit(pixels, model, deadline)`. Each request is cut into chunks of at most
`max_batch_size` images and queued (bounded by `max_queue_images`: beyond it QueueFull). One
worker per model instance takes chunks from the head of the queue, in order, until the batch is
full, waiting up to `max_queue_delay_us` for more (0: take only what queued while the model was
busy); one worker forms a batch at a time, so idle instances never split a batch that is
filling (as Triton's scheduler dispatches whole batches to free instances). It runs the model
in a thread (the event loop keeps serving meanwhile) and hands each chunk its rows. Chunks whose
caller was cancelled, or whose deadline passed, are dropped before the model runs. A batch only
mixes chunks pinned to the same model object, so a call that started before a hot reload
finishes on the model it started with.

The batcher knows nothing of ONNX Runtime or gRPC: a model is anything with
`run(pixels [N, 784] float32, instance) -> [N, 10]`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from digitserve.serve.errors import DeadlineExceeded, Draining, QueueFull, ServeError

log = logging.getLogger(__name__)


class ModelExecutionFailed(ServeError):
    """The model raised while running a batch; every caller in that batch gets this."""


class BatchObserver(Protocol):
    """Receives what the batcher did (metrics.py implements it)."""

    def batch_done(self, model: Any, images: int, queue_seconds: Sequence[float], compute_seconds: float) -> None: ...

    def batch_failed(self, model: Any, images: int) -> None: ...

    def dropped(self, images: int, reason: str) -> None: ...


DEADLINE_SLACK = 0.005
"""Seconds of clock difference tolerated when telling a deadline cancellation from a client's
(gRPC's clock and ours differ slightly); never used to expire a request early."""


def deadline_passed(deadline: float | None, now: float | None = None, slack: float = 0.0) -> bool:
    """True when `deadline` (a time.monotonic() instant, None = none) is less than `slack` away."""
    if deadline is None:
        return False
    return (time.monotonic() if now is None else now) >= deadline - slack


@dataclass(eq=False)
class _Chunk:
    pixels: np.ndarray
    model: Any
    future: asyncio.Future[np.ndarray]
    deadline: float | None  # time.monotonic() seconds
    enqueued: float = field(default_factory=time.monotonic)


class Batcher:
    """A bounded queue of image chunks feeding `instances` model workers (see module doc)."""

    def __init__(
        self,
        *,
        max_batch_size: int,
        max_queue_images: int,
        max_queue_delay_us: int = 0,
        instances: int = 1,
        observer: BatchObserver | None = None,
    ):
        self.max_batch_size = max_batch_size
        self.max_queue_images = max_queue_images
        self.max_queue_delay = max_queue_delay_us / 1e6
        self.instances = instances
        self._observer = observer
        self._queue: deque[_Chunk] = deque()
        self._queued_images = 0
        self._wakeup = asyncio.Event()
        self._forming = asyncio.Lock()
        self._workers: list[asyncio.Task[None]] = []
        self._pool = ThreadPoolExecutor(instances, thread_name_prefix="digitserve-model")
        self._closed = False

    @property
    def queued_images(self) -> int:
        return self._queued_images

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(instance), name=f"batcher-worker-{instance}")
            for instance in range(self.instances)
        ]

    async def close(self) -> None:
        """Stop the workers; anything still queued, forming or running fails with Draining."""
        self._closed = True
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        # A cancelled worker's traceback holds its frame, which holds this batcher (and the model of
        # its last batch): dropping the tasks breaks that cycle, so an unloaded version's ONNX
        # Runtime sessions are freed at once rather than at some later garbage collection.
        self._workers = []
        _fail([self._pop() for _ in range(len(self._queue))], Draining, "the server is shutting down")
        self._pool.shutdown(wait=True)

    async def submit(self, pixels: np.ndarray, model: Any, deadline: float | None = None) -> np.ndarray:
        """Probabilities [N, 10] for pixels [N, 784], computed by `model` in one or more batches.

        `deadline` is a time.monotonic() instant; past it, chunks still queued fail with
        DeadlineExceeded instead of running.
        """
        if self._closed:
            raise Draining("the server is shutting down; retry on another replica")
        count = len(pixels)
        if self._queued_images + count > self.max_queue_images:
            raise QueueFull(
                f"queue full: {self._queued_images} images are waiting and this request adds "
                f"{count} (limit {self.max_queue_images}); retry with backoff"
            )
        loop = asyncio.get_running_loop()
        chunks = [
            _Chunk(pixels[start : start + self.max_batch_size], model, loop.create_future(), deadline)
            for start in range(0, count, self.max_batch_size)
        ]
        self._queue.extend(chunks)
        self._queued_images += count
        self._wakeup.set()
        try:
            parts = [await chunk.future for chunk in chunks]
        except BaseException:
            for chunk in chunks:  # a cancelled caller or a failed part: drop the rest unrun
                chunk.future.cancel()
            raise
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _pop(self) -> _Chunk:
        chunk = self._queue.popleft()
        self._queued_images -= len(chunk.pixels)
        return chunk

    async def _collect(self) -> list[_Chunk]:
        """The next batch: live chunks from the head of the queue, one model, <= max_batch_size."""
        while not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()
        batch: list[_Chunk] = []
        size = 0
        while True:
            blocked = False
            while self._queue and size < self.max_batch_size:
                head = self._queue[0]
                if self._drop_if_dead(head):
                    self._pop()
                    continue
                if batch and (head.model is not batch[0].model or size + len(head.pixels) > self.max_batch_size):
                    blocked = True
                    break
                batch.append(self._pop())
                size += len(head.pixels)
            if blocked or not batch or size >= self.max_batch_size or self.max_queue_delay <= 0:
                return batch
            remaining = batch[0].enqueued + self.max_queue_delay - time.monotonic()
            timed_out = remaining <= 0
            if not timed_out:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    timed_out = True
                except asyncio.CancelledError:  # closing: the chunks taken are on no queue now
                    _fail(batch, Draining, "the server is shutting down")
                    raise
            # While the batch waited, some of its callers may have gone away or run out of time.
            batch = [chunk for chunk in batch if not self._drop_if_dead(chunk)]
            size = sum(len(chunk.pixels) for chunk in batch)
            if timed_out:
                return batch

    def _drop_if_dead(self, chunk: _Chunk) -> bool:
        """True (and the drop counted) when the chunk's caller went away or its deadline passed.

        gRPC cancels a call when its deadline passes, so a cancelled chunk past its deadline
        counts as expired, not cancelled.
        """
        now = time.monotonic()
        if chunk.future.done():  # cancelled by its caller, or by gRPC at the deadline
            expired = deadline_passed(chunk.deadline, now, DEADLINE_SLACK)
        else:
            expired = deadline_passed(chunk.deadline, now)
            if not expired:
                return False
            waited_ms = (now - chunk.enqueued) * 1e3
            chunk.future.set_exception(
                DeadlineExceeded(
                    f"the deadline passed after {waited_ms:.0f} ms in the queue, before "
                    "the model ran; allow a longer deadline or send fewer requests"
                )
            )
        if self._observer is not None:
            self._observer.dropped(len(chunk.pixels), "expired" if expired else "cancelled")
        return True

    async def _work(self, instance: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            async with self._forming:
                batch = await self._collect()
            if not batch:
                continue
            model = batch[0].model
            pixels = batch[0].pixels if len(batch) == 1 else np.concatenate([c.pixels for c in batch])
            size = len(pixels)
            started = time.monotonic()
            try:
                probabilities = await loop.run_in_executor(self._pool, model.run, pixels, instance)
            except asyncio.CancelledError:  # closing while the model ran: its answer has no taker
                _fail(batch, Draining, "the server is shutting down")
                raise
            except Exception:
                log.exception("the model failed on a batch of %d images", size)
                if self._observer is not None:
                    self._observer.batch_failed(model, size)
                _fail(batch, ModelExecutionFailed, "model execution failed; the server log has the details")
                continue
            computed = time.monotonic()
            offset = 0
            for chunk in batch:
                rows = len(chunk.pixels)
                if not chunk.future.done():
                    chunk.future.set_result(probabilities[offset : offset + rows])
                offset += rows
            if self._observer is not None:
                self._observer.batch_done(model, size, [started - c.enqueued for c in batch], computed - started)


def _fail(chunks: Sequence[_Chunk], error: type[ServeError], message: str) -> None:
    """Each chunk's caller that still waits gets its own `error(message)`."""
    for chunk in chunks:
        if not chunk.future.done():
            chunk.future.set_exception(error(message))
