"""A closed-loop load over several models, in its own process: `python -m tests.serve.repository_load`.

    python -m tests.serve.repository_load --target HOST:PORT --models softmax,cnn \
        --ready-file READY --stop-file STOP --out CALLS.json [--concurrency 8]

Each of --concurrency callers addresses one model (round robin over --models), alternating the
two APIs: V2 ModelInfer (UINT8, raw contents, model_version "") and digits.v1 Classify (uint8,
`model` set, `version` 0), so every call asks for the newest served version of a model that
stays. One image per call (IMAGE, below). Once every (api, model) pair has had an OK answer it
writes READY; it stops when STOP exists (or after --max-seconds), then writes to CALLS.json every
call: its send and receive times (time.monotonic(): CLOCK_MONOTONIC, the same clock as the test
process's), api, model, status code, and for an answer the model_version and the 10
probabilities, for a failure the message. The test decides which versions were allowed when.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import grpc
import numpy as np

from digitserve.wire.proto import digits_pb2, digits_pb2_grpc, grpc_service_pb2_grpc
from digitserve.wire.proto import grpc_service_pb2 as pb

IMAGE = np.random.default_rng(77).integers(0, 256, 784, dtype=np.uint8)
"""The one image every call sends (uint8 bytes)."""
APIS = ("v2", "digits")


async def one_call(api: str, model: str, v2: grpc_service_pb2_grpc.GRPCInferenceServiceStub,
                   digits: digits_pb2_grpc.ClassifierStub, timeout: float) -> dict[str, object]:
    sent = time.monotonic()
    try:
        if api == "v2":
            request = pb.ModelInferRequest(model_name=model, model_version="")
            request.inputs.add(name="pixels", datatype="UINT8", shape=[1, 784])
            request.raw_input_contents.append(IMAGE.tobytes())
            response = await v2.ModelInfer(request, timeout=timeout)
            probabilities = np.frombuffer(response.raw_output_contents[0], dtype="<f4").tolist()
            version = int(response.model_version)
            answered = response.model_name
        else:
            answer = await digits.Classify(
                digits_pb2.ClassifyRequest(uint8=IMAGE.tobytes(), model=model, version=0), timeout=timeout
            )
            probabilities = list(answer.predictions[0].probabilities)
            version = int(answer.model_version)
            answered = answer.model_name
        return {"sent": sent, "received": time.monotonic(), "api": api, "model": model, "code": "OK",
                "answered_by": answered, "version": version, "probabilities": probabilities}
    except grpc.aio.AioRpcError as error:
        return {"sent": sent, "received": time.monotonic(), "api": api, "model": model,
                "code": error.code().name, "message": error.details()}


async def main(args: argparse.Namespace) -> int:
    models = args.models.split(",")
    calls: list[dict[str, object]] = []
    ok_pairs: set[tuple[str, str]] = set()
    wanted = {(api, model) for api in APIS for model in models}
    stop = asyncio.Event()
    give_up = time.monotonic() + args.max_seconds

    async def watch_stop() -> None:
        while not os.path.exists(args.stop_file) and time.monotonic() < give_up:
            await asyncio.sleep(0.02)
        stop.set()

    async with grpc.aio.insecure_channel(args.target) as channel:
        await asyncio.wait_for(channel.channel_ready(), 60)
        v2 = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        digits = digits_pb2_grpc.ClassifierStub(channel)

        async def caller(index: int) -> None:
            model = models[index % len(models)]
            turn = index // len(models)
            while not stop.is_set():
                record = await one_call(APIS[turn % 2], model, v2, digits, args.timeout)
                turn += 1
                calls.append(record)
                if record["code"] == "OK" and (record["api"], model) not in ok_pairs:
                    ok_pairs.add((str(record["api"]), model))
                    if ok_pairs == wanted:
                        Path(args.ready_file).write_text("ready\n")

        watcher = asyncio.ensure_future(watch_stop())
        await asyncio.gather(*(caller(i) for i in range(args.concurrency)))
        watcher.cancel()
    Path(args.out).write_text(json.dumps(calls))
    codes: dict[str, int] = {}
    for record in calls:
        codes[str(record["code"])] = codes.get(str(record["code"]), 0) + 1
    print(json.dumps({"calls": len(calls), "codes": codes}))
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--models", required=True, help="comma-separated model names")
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop callers")
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline of each call, seconds")
    parser.add_argument("--ready-file", required=True, help="written once every (api, model) had an answer")
    parser.add_argument("--stop-file", required=True, help="the callers stop once it exists")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop after this long anyway")
    parser.add_argument("--out", required=True, help="where the JSON list of calls goes")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
