"""digitserve.serve: the gRPC server (digits.v1 and KServe V2) over ONNX Runtime.

settings.py   every setting, with units (ServeSettings; the flags derive from it)
errors.py     our errors -> gRPC status codes; the servicer decorator
model.py      verify the manifest's ONNX file (float or int8), open sessions on the chosen device, warm up
batcher.py    the dynamic batcher (queue, deadlines, split, instances)
dataplane.py  readiness, the drain's states and the one inference path both APIs share
servicers/    digits.py (digits.v1.Classifier), kserve.py (V2)
health.py     grpc.health.v1 with the drain's NOT_SERVING
metrics.py    Prometheus metrics (Triton names; multiprocess mode under --workers)
server.py     grpc.aio wiring, health, reflection, TLS, hot reload, the lossless drain
workers.py    the --workers supervisor: N servers on one port, restarts, signals, summed metrics
worker.py     one worker process of that supervisor
cli.py        `digitserve serve`
The stubs and the pixel codec both sides share live in digitserve.wire.
"""
