"""Phase h of `digitserve bench serve`: the KServe V2 HTTP/REST binding (docs/http.md) against
an echo of its own HTTP stack, in-process ONNX Runtime and, when phase b runs too, gRPC.

A real `digitserve serve --http-port 0` process answers `POST /v2/models/NAME/infer`:
(1) single-image JSON requests (FP32 [1, 784], the values in "data") at concurrency 1 and 64;
(2) single-image binary requests (Triton's binary tensor extension: the JSON header, then the
    float32 pixels; Inference-Header-Content-Length and `binary_data_size` say where they part,
    and `binary_data_output` asks for the probabilities in binary too) at concurrency 1 and 64;
(3) 64-image requests, JSON and binary, at concurrency 8, against in-process ONNX Runtime on the
    same batches before and after the server's turn (the faster counts), as in phase a.
Then bench/http_echo.py, the same Starlette-under-uvicorn stack with the server's settings,
takes the single-image loads of (1) and (2), answering each with a reply recorded from the real
server (same size, same content type): server / echo is our per-call cost over the stack's own.
The load is bench/http_load.py's (spawned processes, one keep-alive connection per caller,
replies parsed by h11). Before measuring, the JSON and binary answers of 128 images are checked
against in-process ONNX Runtime (`h_prediction_check`).
"""

from __future__ import annotations

import http.client
import json
from typing import Any

import numpy as np

from digitserve.bench.serve_phases import Phases, in_process
from digitserve.contract import IMAGE_SIZE, INPUT_NAME
from digitserve.errors import DigitserveError
from digitserve.serve.http.tensors import BINARY_TYPE, HEADER_LENGTH, JSON_TYPE, dumps

Headers = tuple[tuple[str, str], ...]
KINDS = ("json", "binary")


def http_requests(batches: list[np.ndarray], binary: bool) -> tuple[tuple[bytes, ...], Headers]:
    """The V2 request bodies of `batches` (uint8 [N, 784]) as FP32, and the headers they all take."""
    bodies, header_lengths = [], set()
    for batch in batches:
        pixels = batch.reshape(-1, IMAGE_SIZE).astype(np.float32) / np.float32(255.0)
        tensor: dict[str, Any] = {"name": INPUT_NAME, "datatype": "FP32", "shape": [len(pixels), IMAGE_SIZE]}
        if binary:
            raw = pixels.astype("<f4").tobytes()
            header = dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
                            "parameters": {"binary_data_output": True}})
            header_lengths.add(len(header))
            bodies.append(header + raw)
        else:
            bodies.append(dumps({"inputs": [{**tensor, "data": pixels.ravel().tolist()}]}))
    if not binary:
        return tuple(bodies), (("content-type", JSON_TYPE),)
    (length,) = header_lengths  # batches of one size: the same JSON header, so one header value
    return tuple(bodies), (("content-type", BINARY_TYPE), (HEADER_LENGTH.lower(), str(length)))


def post(target: str, path: str, body: bytes, headers: Headers) -> tuple[bytes, dict[str, str]]:
    """One request through http.client; the reply's body and headers (lower-case names), or an error."""
    host, _, port = target.rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request("POST", path, body, dict(headers))
        reply = connection.getresponse()
        data = reply.read()
        if reply.status != 200:
            raise DigitserveError(f"POST {path} answered {reply.status}: {data[:300]!r}")
        return data, {name.lower(): value for name, value in reply.getheaders()}
    finally:
        connection.close()


def probabilities(body: bytes, headers: dict[str, str]) -> np.ndarray:
    """The output tensor of a V2 reply, JSON or binary."""
    length = headers.get(HEADER_LENGTH.lower())
    split = int(length) if length is not None else len(body)
    output = json.loads(body[:split])["outputs"][0]
    values = np.frombuffer(body[split:], "<f4") if length is not None else np.array(output["data"], np.float32)
    return values.reshape(output["shape"])


def check_predictions(phases: Phases, target: str, path: str, batch: np.ndarray) -> dict[str, Any]:
    from digitserve.serve.model import load_model
    from digitserve.serve.settings import ServeSettings

    model = load_model(ServeSettings(repo=phases.repo, name=phases.args.name, device="cpu", metrics_port=None))
    expected = model.run(batch.astype(np.float32) / np.float32(255.0))
    checks = {}
    for kind in KINDS:
        bodies, headers = http_requests([batch], kind == "binary")
        body, reply_headers = post(target, path, bodies[0], headers)
        got = probabilities(body, reply_headers)
        checks[kind] = {
            "images": len(batch),
            "content_type": reply_headers.get("content-type", ""),
            "max_abs_diff": float(np.abs(got - expected).max()),
            "labels_equal": bool((got.argmax(1) == expected.argmax(1)).all()),
        }
    return checks


def echo_replies(target: str, path: str, singles: dict[str, tuple[tuple[bytes, ...], Headers]]
                 ) -> tuple[bytes, bytes, int]:
    """Replies of the real server for the echo to give: JSON (the median-sized of the single-image
    requests' answers, whose sizes differ with the digits of the probabilities) and binary (all alike)."""
    bodies, headers = singles["json"]
    answers = sorted((post(target, path, body, headers)[0] for body in bodies), key=len)
    bodies, headers = singles["binary"]
    binary, reply_headers = post(target, path, bodies[0], headers)
    return answers[len(answers) // 2], binary, int(reply_headers[HEADER_LENGTH.lower()])


def measure_http(phases: Phases, batches: list[np.ndarray], singles: list[np.ndarray]) -> dict[str, Any]:
    args = phases.args
    path = f"/v2/models/{args.name}/infer"
    single = {kind: http_requests(singles, kind == "binary") for kind in KINDS}
    batch = {kind: http_requests(batches, kind == "binary") for kind in KINDS}
    out: dict[str, Any] = {}
    with phases.servers([], http=True) as servers:
        target = servers[0].http_target
        out["h_prediction_check"] = check_predictions(phases, target, path, np.concatenate(batches[:2]))
        replies = echo_replies(target, path, single)
        # As phase a: the reference before and after the server's turn, the faster of the two counts.
        before = in_process(phases.repo, args.name, batches, args.seconds / 2, args.warmup)
        for kind in KINDS:
            bodies, headers = batch[kind]
            out[f"h_server_{kind}_64"] = phases.phase(target, bodies, 64, 8, servers, http=(path, headers))
        after = in_process(phases.repo, args.name, batches, args.seconds / 2, args.warmup)
        best = max(before, after, key=lambda r: r["images_per_s"])
        out["h_in_process"] = {**best, "runs_images_per_s": [before["images_per_s"], after["images_per_s"]]}
        for kind in KINDS:
            bodies, headers = single[kind]
            for concurrency in (1, 64):
                out[f"h_server_{kind}_c{concurrency}"] = phases.phase(
                    target, bodies, 1, concurrency, servers, http=(path, headers))
    with phases.http_echo(*replies) as (target, pid):
        for kind in KINDS:
            bodies, headers = single[kind]
            for concurrency in (1, 64):
                out[f"h_echo_{kind}_c{concurrency}"] = phases.phase(
                    target, bodies, 1, concurrency, pids=[pid], http=(path, headers))
    return out
