"""digitserve.wire.names: the plain strings both sides use are the generated stubs' own names."""

from __future__ import annotations

from grpc_health.v1 import health_pb2

from digitserve.wire import names
from digitserve.wire.proto import digits_pb2, grpc_service_pb2


def test_service_names_are_the_descriptors_full_names() -> None:
    assert names.DIGITS_SERVICE == digits_pb2.DESCRIPTOR.services_by_name["Classifier"].full_name
    assert names.V2_SERVICE == grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
    assert names.HEALTH_SERVICE == health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    assert names.SERVICES == tuple(names.SERVICE_OF_API.values()) == (names.DIGITS_SERVICE, names.V2_SERVICE)
    assert names.APIS == ("digits", "v2")


def test_the_server_defaults_are_the_clients_defaults() -> None:
    from digitserve.serve.settings import ServeSettings

    settings = ServeSettings()
    assert (settings.host, settings.port, settings.metrics_port) == ("127.0.0.1", 50051, 8000)
    assert names.DEFAULT_TARGET == f"{settings.host}:{settings.port}"
    assert names.DEFAULT_METRICS_PORT == settings.metrics_port
