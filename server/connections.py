"""gRPC server options that keep client connections short-lived and alive.

A client keeps its connection for as long as it lives, so after a worker restarts (or a replica
joins) existing clients would never reach it: the kernel spreads connections, not calls. With a
maximum connection age the server sends each connection a graceful GOAWAY after about that long
(gRPC adds +/-10% jitter); calls in flight finish within the age grace, and the client's channel
opens a new connection for its next call, transparently, which may land on any worker.
Keepalive pings find connections whose peer vanished without a FIN.
"""

from __future__ import annotations

from .config import ServerConfig

# How long a keepalive ping may go unanswered before the connection is dropped.
KEEPALIVE_TIMEOUT_MS = 20_000


def grpc_server_options(config: ServerConfig) -> list[tuple[str, int]]:
    """`grpc.aio.server(options=...)` for the configured connection age and keepalive."""
    options: list[tuple[str, int]] = []
    if config.max_connection_age_seconds:
        options += [
            ("grpc.max_connection_age_ms", int(config.max_connection_age_seconds * 1000)),
            ("grpc.max_connection_age_grace_ms", int(config.max_connection_age_grace_seconds * 1000)),
        ]
    if config.keepalive_seconds:
        options += [
            ("grpc.keepalive_time_ms", int(config.keepalive_seconds * 1000)),
            ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ]
    return options
