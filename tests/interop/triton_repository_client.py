"""Drive a digitserve server's model repository with Triton's own Python gRPC client (run inside
.venv-triton), against a server started with `--model-control explicit`.

    .venv-triton/bin/python triton_repository_client.py HOST:PORT FOLDER

Reads FOLDER/pixels.npy (float32 [N, 784]); calls get_model_repository_index, is_model_ready,
unload_model, load_model and infer as a Triton user would, saves what `softmax` answered after
the reload to FOLDER/after_load.npy, and prints one JSON object with what each call returned
(or the status and message it failed with). Imports nothing from digitserve: it is the outside client.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def outcome(call) -> dict[str, object]:
    """{"value": what call returned} or {"status": ..., "message": ...} if it raised."""
    try:
        return {"value": call()}
    except InferenceServerException as exc:
        return {"status": str(exc.status()), "message": str(exc.message())}


def index(client: grpcclient.InferenceServerClient, ready: bool = False) -> list[dict[str, str]]:
    if ready:  # the client has no `ready` argument on gRPC; ask the stub as the client would
        from tritonclient.grpc import service_pb2

        response = client._client_stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(ready=True))
        return [{"name": m.name, "version": m.version, "state": m.state, "reason": m.reason} for m in response.models]
    return client.get_model_repository_index(as_json=True).get("models", [])


def infer(client: grpcclient.InferenceServerClient, name: str, pixels: np.ndarray) -> np.ndarray:
    tensor = grpcclient.InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    return client.infer(name, [tensor]).as_numpy("probabilities")


def main(target: str, folder: Path) -> None:
    pixels = np.load(folder / "pixels.npy")
    client = grpcclient.InferenceServerClient(url=target)
    report: dict[str, object] = {
        "index_before": index(client),
        "ready_before": index(client, ready=True),
        "softmax_2_ready": client.is_model_ready("softmax", "2"),
        "softmax_1_ready": client.is_model_ready("softmax", "1"),
        "cnn_ready": client.is_model_ready("cnn"),
    }
    report["unload"] = outcome(lambda: client.unload_model("softmax"))
    report["softmax_ready_after_unload"] = outcome(lambda: client.is_model_ready("softmax"))
    report["infer_after_unload"] = outcome(lambda: infer(client, "softmax", pixels).tolist())
    report["cnn_ready_after_unload"] = client.is_model_ready("cnn")
    report["index_after_unload"] = index(client)
    report["load"] = outcome(lambda: client.load_model("softmax"))
    report["softmax_2_ready_after_load"] = client.is_model_ready("softmax", "2")
    report["softmax_ready_after_load"] = client.is_model_ready("softmax")
    np.save(folder / "after_load.npy", infer(client, "softmax", pixels))
    report["index_after_load"] = index(client)
    report["load_unknown"] = outcome(lambda: client.load_model("letters"))
    client.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
