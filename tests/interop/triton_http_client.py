"""Drive a digitserve server's KServe V2 HTTP/REST port with Triton's own `tritonclient.http` (run
inside .venv-triton), against a server started with `--http-port` and `--model-control explicit`.

    .venv-triton/bin/python triton_http_client.py HOST:PORT FOLDER

Reads FOLDER/pixels.npy (float32 [N, 784]) and FOLDER/uint8.npy; saves what the server answered
to FOLDER/<case>.npy (binary in and out, JSON both ways, UINT8, a gzip body, the asyncio client,
after a reload) and prints one JSON object with what health, metadata, the repository calls and
bad requests returned. Imports nothing from digitserve: it is the outside client.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
from tritonclient.utils import InferenceServerException


def infer(
    client: httpclient.InferenceServerClient, pixels: np.ndarray, datatype: str = "FP32", binary: bool = True, **options
) -> httpclient.InferResult:
    tensor = httpclient.InferInput("pixels", list(pixels.shape), datatype)
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    outputs = None if binary else [httpclient.InferRequestedOutput("probabilities", binary_data=False)]
    return client.infer("digits", [tensor], outputs=outputs, **options)


def outcome(call) -> dict[str, object]:
    """{"value": what call returned} or {"status": ..., "message": ...} if it raised."""
    try:
        return {"value": call()}
    except InferenceServerException as exc:
        return {"status": str(exc.status()), "message": str(exc.message())}


async def infer_aio(target: str, pixels: np.ndarray) -> np.ndarray:
    async with aioclient.InferenceServerClient(url=target) as client:
        tensor = aioclient.InferInput("pixels", list(pixels.shape), "FP32")
        tensor.set_data_from_numpy(pixels)
        results = await asyncio.gather(*(client.infer("digits", [tensor]) for _ in range(4)))
        return np.stack([r.as_numpy("probabilities") for r in results])


def main(target: str, folder: Path) -> None:
    pixels, raw = np.load(folder / "pixels.npy"), np.load(folder / "uint8.npy")
    client = httpclient.InferenceServerClient(url=target)
    report: dict[str, object] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready("digits"),
        "version_7_ready": client.is_model_ready("digits", "7"),
        "server_metadata": client.get_server_metadata(),
        "model_metadata": client.get_model_metadata("digits"),
    }
    result = infer(client, pixels, request_id="req-7")
    report["response"] = result.get_response()
    np.save(folder / "binary.npy", result.as_numpy("probabilities"))
    np.save(folder / "json.npy", infer(client, pixels, binary=False).as_numpy("probabilities"))
    np.save(folder / "uint8_out.npy", infer(client, raw, "UINT8").as_numpy("probabilities"))
    gzip = infer(client, pixels, request_compression_algorithm="gzip", response_compression_algorithm="gzip")
    np.save(folder / "gzip.npy", gzip.as_numpy("probabilities"))
    np.save(folder / "aio.npy", asyncio.run(infer_aio(target, pixels)))
    report["unknown_model"] = outcome(lambda: client.get_model_metadata("letters"))
    report["out_of_range"] = outcome(lambda: infer(client, pixels * 255).get_response())
    report["wrong_shape"] = outcome(lambda: infer(client, pixels[:, :100].copy()).get_response())
    report["index"] = client.get_model_repository_index()
    report["unload"] = outcome(lambda: client.unload_model("digits"))
    report["ready_after_unload"] = client.is_model_ready("digits")
    report["infer_after_unload"] = outcome(lambda: infer(client, pixels).get_response())
    report["load"] = outcome(lambda: client.load_model("digits"))
    report["ready_after_load"] = client.is_model_ready("digits")
    np.save(folder / "after_load.npy", infer(client, pixels).as_numpy("probabilities"))
    report["load_unknown"] = outcome(lambda: client.load_model("letters"))
    client.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
