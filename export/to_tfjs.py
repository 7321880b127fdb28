"""SavedModel -> TensorFlow.js graph model for web pages: `tfjs/model.json` plus weight shards.

Keras 3 models saved as TF.js *layers* models do not load in @tensorflow/tfjs 4.22, so the road is
SavedModel -> `convert_tf_saved_model` -> *graph* model (docs/toolchain.md). The converter keeps the
input node's name (`pixels`) but calls the output node `Identity`; the signature keys are the
contract's names. We rename that one node to `probabilities` so that `model.outputs[0].name`,
`model.execute(x, "probabilities")` and the signature all say the same thing.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

from digitserve.contract import IMAGE_SIZE, INPUT_NAME, NUM_CLASSES, OUTPUT_NAME

SHARD_BYTES = 4 * 1024 * 1024


def convert(saved_model: Path, folder: Path, quantization: str | None = None) -> dict[str, Any]:
    """Convert `saved_model` into `folder`; return the manifest's facts about the graph model."""
    converters, version = _import_converter()
    quantization = None if quantization in (None, "none") else quantization
    dtype_map = {quantization: True} if quantization else None  # True: every weight
    folder.mkdir(parents=True, exist_ok=True)
    converters.convert_tf_saved_model(
        str(saved_model),
        str(folder),
        signature_def="serving_default",
        quantization_dtype_map=dtype_map,
        weight_shard_size_bytes=SHARD_BYTES,
        metadata={"digitserve": contract_metadata()},
    )
    model_json = folder / "model.json"
    topology = json.loads(model_json.read_text())
    rename_signature_nodes(topology)
    model_json.write_text(json.dumps(topology, separators=(",", ":")))
    shards = [path for group in topology["weightsManifest"] for path in group["paths"]]
    return {
        "files": ["model.json", *shards],
        "weight_quantization": quantization,
        "input": {"name": INPUT_NAME, "shape": [-1, IMAGE_SIZE]},
        "output": {"name": OUTPUT_NAME, "shape": [-1, NUM_CLASSES]},
        "converter": f"tensorflowjs {version}",
    }


def contract_metadata() -> dict[str, Any]:
    """Stored in model.json's userDefinedMetadata, for pages that want to check what they load."""
    return {
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "shape": [-1, IMAGE_SIZE],
        "range": [0.0, 1.0],
        "layout": "28x28 row-major, 0.0 background, 1.0 full ink",
    }


def rename_signature_nodes(topology: dict[str, Any]) -> None:
    """Make the graph's input and output node names equal their signature keys."""
    signature = topology.get("signature") or {}
    nodes = topology["modelTopology"]["node"]
    for side, key in (("inputs", INPUT_NAME), ("outputs", OUTPUT_NAME)):
        entries = signature.get(side) or {}
        if key not in entries or len(entries) != 1:
            raise ValueError(f"TF.js signature {side}: {sorted(entries)}; expected [{key!r}]")
        old = entries[key]["name"].split(":")[0]
        if old != key:
            _rename_node(nodes, old, key)
            entries[key]["name"] = f"{key}:0"


def _rename_node(nodes: list[dict[str, Any]], old: str, new: str) -> None:
    names = {node["name"] for node in nodes}
    if old not in names or new in names:
        raise ValueError(f"cannot rename TF.js graph node {old!r} to {new!r}")
    for node in nodes:
        if node["name"] == old:
            node["name"] = new
        node["input"] = [_renamed_input(ref, old, new) for ref in node.get("input", [])]


def _renamed_input(ref: str, old: str, new: str) -> str:
    """Graph inputs read `name`, `name:1` or `^name` (a control dependency)."""
    control = ref.startswith("^")
    name, _, port = ref.lstrip("^").partition(":")
    if name != old:
        return ref
    return ("^" if control else "") + new + (f":{port}" if port else "")


def _import_converter() -> tuple[Any, str]:
    """Import tensorflowjs quietly and safely.

    tensorflow_decision_forests (imported by tensorflowjs) shows a welcome banner through IPython
    whenever stdout is not the terminal's own file, which crashes where IPython is missing (under
    pytest, in a pipe); the variable turns the banner off. tensorflow_hub warns about
    pkg_resources at import.
    """
    os.environ.setdefault("TFDF_DISABLE_WELCOME_MESSAGE", "1")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        import tensorflowjs
        from tensorflowjs import converters
    return converters, tensorflowjs.__version__
