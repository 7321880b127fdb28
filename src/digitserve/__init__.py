"""digitserve: MNIST digit classification, from Keras training to gRPC serving."""

__version__ = "0.1.0"
