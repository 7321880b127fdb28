"""grpc.health.v1 for the server: Check and Watch per service name, and a drain that ends Watch streams.

grpcio-health-checking's asyncio servicer keeps every Watch open until the server's grace period
runs out, so one load balancer watching health would hold each shutdown for the whole
`--grace-seconds`. Here a Watch stream sends NOT_SERVING when the drain starts and then ends
with OK: unlike a ClassifyStream (which ends UNAVAILABLE), it has nothing left to retry.
"""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

Status = health_pb2.HealthCheckResponse.ServingStatus
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthService(health_pb2_grpc.HealthServicer):
    def __init__(self) -> None:
        self._status: dict[str, Status] = {}
        self._changed = asyncio.Condition()
        self._draining = False

    async def set(self, service: str, status: Status) -> None:
        """Set one service's status; ignored once draining (the drain is final)."""
        if not self._draining:
            await self._update({service: status})

    async def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING, for good; watchers hear it, then their streams end."""
        self._draining = True
        await self._update(dict.fromkeys(self._status, NOT_SERVING))

    async def _update(self, statuses: dict[str, Status]) -> None:
        async with self._changed:
            self._status.update(statuses)
            self._changed.notify_all()

    async def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext):
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        sent = None
        async with self._changed:
            while True:
                status = self._status.get(request.service, SERVICE_UNKNOWN)
                if status != sent:
                    await context.write(health_pb2.HealthCheckResponse(status=status))
                    sent = status
                if self._draining:
                    return
                await self._changed.wait()
