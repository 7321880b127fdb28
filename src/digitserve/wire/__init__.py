"""digitserve.wire: what crosses the process line between server and client.

proto/     generated gRPC stubs of protos/ (digits.v1 and KServe V2; proto/generate.py rebuilds them)
codec.py   numpy <-> packed protobuf float fields, both directions
names.py   service names, APIs and encodings, the V2 platform, default host, ports and target
tls.py     TLS material, PEM reading and HOST:PORT targets, for both sides
"""
