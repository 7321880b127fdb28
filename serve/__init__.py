"""digitserve.serve: the server of a model repository (digits.v1 and KServe V2 over gRPC, V2 over HTTP) on ONNX Runtime.

settings.py   every setting, with units (ServeSettings; the flags derive from it)
errors.py     our errors -> gRPC status codes; the servicer decorator
model.py      verify the manifest's ONNX file (float or int8), open sessions on the chosen device, warm up
policy.py     version policies (latest:N, all, specific) and the per-model serving.json
control.py    which versions are served: the start plan, reloads, explicit load/unload, the index
registry.py   the versions in service (a batcher each) and the route from (model, version) to one
batcher.py    the dynamic batcher (queue, deadlines, split, instances)
dataplane.py  readiness, the drain's states and the one inference path every API shares
v2.py         the KServe V2 checks (tensors, versions) that gRPC and HTTP share
servicers/    digits.py (digits.v1.Classifier), kserve.py (V2 over gRPC)
http/         the KServe V2 HTTP/REST binding (Starlette, uvicorn on the same event loop)
health.py     grpc.health.v1 with the drain's NOT_SERVING
metrics.py    Prometheus metrics (Triton names; multiprocess mode under --workers)
server.py     grpc.aio wiring, health, reflection, TLS, hot reload, the lossless drain
workers.py    the --workers supervisor: N servers on one port, restarts, signals, summed metrics
worker.py     one worker process of that supervisor
cli.py        `digitserve serve`
The stubs and the pixel codec both sides share live in digitserve.wire.
"""
