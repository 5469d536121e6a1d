"""grpc.health.v1.Health whose Watch streams end when the server drains.

grpc_health's own asyncio servicer keeps every Watch open until the server stops, so one
watcher (a load balancer, a Kubernetes probe) would hold `server.stop(grace)` for the whole
grace period. Here a drain first sends each watcher NOT_SERVING, then ends its stream with
UNAVAILABLE, as a server going away does; health-checking clients treat the subchannel as
unhealthy and watch again elsewhere.
"""

from __future__ import annotations

import asyncio

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .errors import quoted_name

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class DrainingHealthServicer(health_pb2_grpc.HealthServicer):
    def __init__(self) -> None:
        self._status: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._draining = False

    async def set(self, service: str, status: int) -> None:
        """Set a service's status ("" is the whole server) and wake its watchers."""
        async with self._changed:
            self._status[service] = status
            self._changed.notify_all()

    async def drain(self) -> None:
        """NOT_SERVING for every service, sent to every watcher before its stream ends."""
        async with self._changed:
            self._draining = True
            for service in self._status:
                self._status[service] = NOT_SERVING
            self._changed.notify_all()

    async def Check(self, request: health_pb2.HealthCheckRequest, context: aio.ServicerContext
                    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {quoted_name(request.service)}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: aio.ServicerContext) -> None:
        sent = None
        while True:
            async with self._changed:
                status = self._status.get(request.service, SERVICE_UNKNOWN)
                draining = self._draining
                if status == sent and not draining:
                    await self._changed.wait()
                    continue
            if status != sent:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                sent = status
            if draining:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is draining; watch another replica")
