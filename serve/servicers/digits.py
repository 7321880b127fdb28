"""digits.v1.Classifier: our own API, a thin layer over the data plane.

Classify decodes one of the three pixel encodings (float32, float32_le, uint8), or hands image
files (`images`) to the data plane's image decoder (serve/images.py), awaits the data
plane (on the model and version the request names: `model` empty = the default model, `version`
0 = its newest), and answers one Prediction per image (or the packed bytes when asked). ClassifyStream
runs every request of a stream concurrently and answers them in order; a bad request gets an
error entry and the stream goes on; when the server starts draining, the stream stops taking
requests, answers the ones it has, and ends with UNAVAILABLE (requests sent after the last
answer were not processed: the client retries them on another replica).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import grpc
import numpy as np

from digitserve.contract import decode_uint8, validate_pixels
from digitserve.errors import InvalidInput
from digitserve.serve.dataplane import DataPlane, deadline_of
from digitserve.serve.errors import grpc_errors, log_unexpected, status_of
from digitserve.wire.codec import packed_floats, prediction_messages
from digitserve.wire.proto import digits_pb2, digits_pb2_grpc

log = logging.getLogger(__name__)

STREAM_WINDOW = 256
"""Most requests of one stream in progress at once; reading pauses beyond it (backpressure)."""
STREAM_DRAINED = (
    "the server is shutting down: requests sent after the last answer were not processed; retry them on another replica"
)


def decode_request(request: digits_pb2.ClassifyRequest, images: Any = None) -> np.ndarray | Awaitable[np.ndarray]:
    """The request's images as float32 [N, 784], validated against the input contract; for
    image files, the awaitable of them that `images` (serve/images.py ImageDecoder) returns."""
    encoding = request.WhichOneof("pixels")
    if encoding == "images":
        return images.decode(request.images.files)
    if encoding == "float32_le":
        raw = request.float32_le
        if len(raw) % 4:
            raise InvalidInput(
                f"float32_le holds {len(raw)} bytes, not a whole number of 4-byte float32 values; "
                "send array.astype('<f4').tobytes()"
            )
        return validate_pixels(np.frombuffer(raw, dtype="<f4"))
    if encoding == "uint8":
        return decode_uint8(request.uint8)
    if encoding == "float32":
        values = packed_floats(request.float32.SerializeToString(), 1)
        if values is None:
            values = np.array(request.float32.values, dtype=np.float32)
        return validate_pixels(values)
    raise InvalidInput(
        "the request carries no pixels: set one of float32, float32_le or uint8 "
        "(N*784 values, 28x28 row-major per image), or images (encoded image files)"
    )


def build_response(
    request: digits_pb2.ClassifyRequest, probabilities: np.ndarray, model: Any
) -> digits_pb2.ClassifyResponse:
    response = digits_pb2.ClassifyResponse(
        model_name=model.info.name, model_version=model.info.version, request_id=request.request_id
    )
    if request.output_format == digits_pb2.OUTPUT_FORMAT_PACKED:
        response.packed_labels = np.argmax(probabilities, axis=1).astype(np.uint8).tobytes()
        response.packed_probabilities = np.ascontiguousarray(probabilities, dtype="<f4").tobytes()
    else:
        response.MergeFromString(prediction_messages(1, probabilities))
    return response


class ClassifierServicer(digits_pb2_grpc.ClassifierServicer):
    """digits.v1.Classifier over a DataPlane."""

    def __init__(self, plane: DataPlane):
        self._plane = plane

    async def _classify(
        self, request: digits_pb2.ClassifyRequest, deadline: float | None
    ) -> digits_pb2.ClassifyResponse:
        probabilities, model = await self._plane.infer(
            request.model, request.version or None, lambda: decode_request(request, self._plane.images), deadline
        )
        return build_response(request, probabilities, model)

    @grpc_errors
    async def Classify(
        self, request: digits_pb2.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> digits_pb2.ClassifyResponse:
        return await self._classify(request, deadline_of(context))

    async def _stream_answer(
        self, request: digits_pb2.ClassifyRequest, deadline: float | None
    ) -> digits_pb2.ClassifyStreamResponse:
        try:
            return digits_pb2.ClassifyStreamResponse(response=await self._classify(request, deadline))
        except Exception as exc:
            log_unexpected(exc, "ClassifyStream")
            code, message = status_of(exc)
            error = digits_pb2.StreamError(code=code.value[0], message=message, request_id=request.request_id)
            return digits_pb2.ClassifyStreamResponse(error=error)

    async def ClassifyStream(
        self,
        request_iterator: AsyncIterator[digits_pb2.ClassifyRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[digits_pb2.ClassifyStreamResponse]:
        deadline = deadline_of(context)
        answers: asyncio.Queue[asyncio.Task[digits_pb2.ClassifyStreamResponse] | None] = asyncio.Queue()
        window = asyncio.Semaphore(STREAM_WINDOW)

        async def read() -> bool:
            """Queue an answer task per request; True when the drain, not the client, ended it."""
            requests = aiter(request_iterator)
            drain = asyncio.ensure_future(self._plane.draining.wait())
            try:
                while True:
                    following = asyncio.ensure_future(anext(requests))
                    await asyncio.wait({following, drain}, return_when=asyncio.FIRST_COMPLETED)
                    if not following.done():  # draining: take no more requests
                        following.cancel()
                        return True
                    try:
                        request = following.result()
                    except StopAsyncIteration:
                        return False
                    await window.acquire()
                    answers.put_nowait(asyncio.create_task(self._stream_answer(request, deadline)))
            finally:
                drain.cancel()
                answers.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (answer := await answers.get()) is not None:
                yield await answer
                window.release()
            drained = await reader  # re-raises a read failure (for example the client's cancellation)
            if drained:  # not OK: the client may have sent requests that were never read
                await context.abort(grpc.StatusCode.UNAVAILABLE, STREAM_DRAINED)
        finally:
            reader.cancel()
            while not answers.empty():
                pending = answers.get_nowait()
                if pending is not None:
                    pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
