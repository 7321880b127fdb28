"""digitserve.serve: the gRPC server (digits.v1 and KServe V2) over ONNX Runtime.

settings.py   every setting, with units (ServeSettings)
errors.py     our errors -> gRPC status codes; the servicer decorator
model.py      verify the manifest's ONNX file, open sessions on the chosen device, warm up
batcher.py    the dynamic batcher (queue, deadlines, split, instances)
dataplane.py  readiness and the one inference path both APIs share
servicers/    digits.py (digits.v1.Classifier), kserve.py (V2), codec.py (packed floats)
metrics.py    Prometheus metrics (Triton names)
server.py     grpc.aio wiring, health, reflection, TLS, hot reload, graceful drain
cli.py        `digitserve serve`
proto/        generated stubs (protos/ holds the sources; proto/generate.py rebuilds them)
"""
