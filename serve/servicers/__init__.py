"""One gRPC servicer per API: proto -> numpy -> batcher -> proto (never onnxruntime)."""
