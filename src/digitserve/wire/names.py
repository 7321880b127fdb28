"""The names and numbers server and client must agree on, written once for both sides.

Plain strings rather than lookups in the generated descriptors, so the CLIs can offer them as
defaults without loading protobuf; tests/client/test_wire_names.py checks them against the stubs.
"""

from __future__ import annotations

DIGITS_SERVICE = "digits.v1.Classifier"
"""Full gRPC name of our own API (protos/digits/v1/digits.proto)."""
V2_SERVICE = "inference.GRPCInferenceService"
"""Full gRPC name of the KServe V2 inference API (protos/inference/grpc_service.proto)."""
HEALTH_SERVICE = "grpc.health.v1.Health"
"""Full gRPC name of the standard health service."""
SERVICES = (DIGITS_SERVICE, V2_SERVICE)
"""The APIs the server serves, each also reported on by the health service under this name."""
SERVICE_OF_API = {"digits": DIGITS_SERVICE, "v2": V2_SERVICE}
"""The client's `api` choice -> the service it calls (and asks the health service about)."""
APIS = tuple(SERVICE_OF_API)
ENCODINGS = ("float32", "float32_le", "uint8")
"""How pixels travel (digitserve.client.messages describes each on both APIs)."""

IMAGE_INPUT = "image"
"""The KServe V2 input that carries image files (BYTES [N], one encoded file per element),
the alternative to `pixels` (digitserve.contract.INPUT_NAME)."""

PLATFORM = "onnxruntime_onnx"
"""What Triton calls an ONNX Runtime model in the V2 ModelMetadata."""

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50051
DEFAULT_METRICS_PORT = 8000
DEFAULT_TARGET = f"{DEFAULT_HOST}:{DEFAULT_PORT}"
