"""Drive a digitserve server with Triton's own Python gRPC client (run inside .venv-triton).

    .venv-triton/bin/python triton_client.py HOST:PORT FOLDER

Reads FOLDER/pixels.npy (float32 [N, 784]) and FOLDER/uint8.npy, writes the probabilities the
server returned to FOLDER/fp32.npy, FOLDER/uint8_out.npy and FOLDER/aio.npy, and prints one JSON
object with what the metadata and health calls answered and how bad requests failed. This file
imports nothing from digitserve: it is the outside client.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException


def infer(client: grpcclient.InferenceServerClient, pixels: np.ndarray, datatype: str) -> np.ndarray:
    tensor = grpcclient.InferInput("pixels", list(pixels.shape), datatype)
    tensor.set_data_from_numpy(pixels)
    result = client.infer("digits", [tensor], outputs=[grpcclient.InferRequestedOutput("probabilities")])
    return result.as_numpy("probabilities")


def failure(call) -> dict[str, str]:
    try:
        call()
    except InferenceServerException as exc:
        return {"status": str(exc.status()), "message": str(exc.message())}
    return {"status": "no error", "message": ""}


async def infer_aio(target: str, pixels: np.ndarray) -> np.ndarray:
    async with aioclient.InferenceServerClient(url=target) as client:
        tensor = aioclient.InferInput("pixels", list(pixels.shape), "FP32")
        tensor.set_data_from_numpy(pixels)
        results = await asyncio.gather(*(client.infer("digits", [tensor]) for _ in range(4)))
        return np.stack([r.as_numpy("probabilities") for r in results])


def main(target: str, folder: Path) -> None:
    pixels, raw = np.load(folder / "pixels.npy"), np.load(folder / "uint8.npy")
    client = grpcclient.InferenceServerClient(url=target)
    report = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready("digits"),
        "server_metadata": client.get_server_metadata(as_json=True),
        "model_metadata": client.get_model_metadata("digits", as_json=True),
    }
    np.save(folder / "fp32.npy", infer(client, pixels, "FP32"))
    np.save(folder / "uint8_out.npy", infer(client, raw, "UINT8"))
    np.save(folder / "aio.npy", asyncio.run(infer_aio(target, pixels)))
    report["unknown_model"] = failure(lambda: client.get_model_metadata("letters"))
    report["out_of_range"] = failure(lambda: infer(client, pixels * 255, "FP32"))
    report["wrong_shape"] = failure(lambda: infer(client, pixels[:, :100].copy(), "FP32"))
    report["still_ready"] = client.is_server_ready()
    client.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
