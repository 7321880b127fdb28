"""The KServe V2 HTTP/REST binding: Starlette routes over the same data plane as gRPC (docs/http.md)."""
