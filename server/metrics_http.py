"""The /metrics HTTP endpoint: a bounded server on the event loop, with no thread per connection.

prometheus_client's `start_http_server` is a ThreadingHTTPServer: every open connection, idle or
not, holds a thread, so anyone who can reach the port can grow the serving process by thousands
of threads. This endpoint runs on the process's asyncio loop instead: GET /metrics only, at most
`max_connections` connections at once (a new one evicts the oldest that has not yet sent its
request, so idle sockets cannot lock Prometheus out), a deadline for the request to arrive, and
`Connection: close` on every answer so no keep-alive socket lingers. The exposition is rendered
on one dedicated thread: the multiprocess collector reads every worker's files, which may be slow.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"


@dataclass(frozen=True)
class MetricsEndpointLimits:
    """How much a client of the metrics port may hold."""

    # Prometheus opens one connection per scrape; 64 leaves room for several scrapers and curls.
    max_connections: int = 64
    # Prometheus sends its request right after connecting; a socket silent this long is idle.
    request_timeout_seconds: float = 5.0
    # A scrape request is a few hundred bytes of headers.
    max_request_bytes: int = 8192


@dataclass(frozen=True)
class HttpAnswer:
    status: str
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    extra_headers: tuple[tuple[str, str], ...] = ()

    def encode(self) -> bytes:
        headers = [
            f"HTTP/1.1 {self.status}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in self.extra_headers),
        ]
        return ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1") + self.body


NOT_FOUND = HttpAnswer("404 Not Found", b"only /metrics is served here\n")
METHOD_NOT_ALLOWED = HttpAnswer("405 Method Not Allowed", b"only GET is allowed\n", extra_headers=(("Allow", "GET"),))
BAD_REQUEST = HttpAnswer("400 Bad Request", b"could not read an HTTP request line\n")
TOO_LARGE = HttpAnswer("431 Request Header Fields Too Large", b"request headers too large\n")
RENDER_FAILED = HttpAnswer("500 Internal Server Error", b"could not render the metrics; see the server log\n")
BUSY = HttpAnswer("503 Service Unavailable", b"too many connections to the metrics port\n")


class MetricsEndpoint:
    """Serve `render()` (the Prometheus text exposition) at GET /metrics on host:port.

    >>> endpoint = MetricsEndpoint(lambda: generate_latest(registry), CONTENT_TYPE_LATEST)
    >>> port = await endpoint.start("127.0.0.1", 9464)   # port 0 picks a free one
    >>> await endpoint.close()
    """

    def __init__(self, render: Callable[[], bytes], content_type: str,
                 limits: MetricsEndpointLimits = MetricsEndpointLimits()) -> None:
        self._render = render
        self._content_type = content_type
        self._limits = limits
        # One thread, made on the first scrape: renders queue behind each other, never multiply.
        self._renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics-render")
        self._server: asyncio.AbstractServer | None = None
        # Connections by arrival; a connection leaves `_waiting` once its request has arrived.
        self._open: set[asyncio.Task] = set()
        self._waiting: OrderedDict[asyncio.Task, asyncio.StreamWriter] = OrderedDict()
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(
            self._accept, host, port, limit=self._limits.max_request_bytes
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._open):
            task.cancel()
        await asyncio.gather(*self._open, return_exceptions=True)
        self._renderer.shutdown(wait=False)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._open) >= self._limits.max_connections and not self._evict_oldest_waiting():
            # Every slot is busy answering a scrape: refuse at once rather than queue.
            await self._answer(writer, BUSY)
            return
        self._open.add(task)
        self._waiting[task] = writer
        try:
            answer = await self._handle(reader, task)
            if answer is not None:
                await self._answer(writer, answer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._open.discard(task)
            self._waiting.pop(task, None)

    def _evict_oldest_waiting(self) -> bool:
        if not self._waiting:
            return False
        task, writer = self._waiting.popitem(last=False)
        writer.close()
        task.cancel()
        self._open.discard(task)
        return True

    async def _handle(self, reader: asyncio.StreamReader, task: asyncio.Task) -> HttpAnswer | None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._limits.request_timeout_seconds)
        except asyncio.TimeoutError:
            return None  # idle or too slow: close without a word
        except asyncio.IncompleteReadError:
            return None  # the client went away
        except asyncio.LimitOverrunError:
            return TOO_LARGE
        self._waiting.pop(task, None)
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return BAD_REQUEST
        method, target, _ = parts
        path = target.split("?", 1)[0]
        if path != METRICS_PATH:
            return NOT_FOUND
        if method != "GET":
            return METHOD_NOT_ALLOWED
        try:
            body = await asyncio.get_running_loop().run_in_executor(self._renderer, self._render)
        except Exception:
            log.exception("could not render the metrics")
            return RENDER_FAILED
        return HttpAnswer("200 OK", body, self._content_type)

    async def _answer(self, writer: asyncio.StreamWriter, answer: HttpAnswer) -> None:
        try:
            writer.write(answer.encode())
            # A client that stops reading cannot hold the connection past the request deadline.
            await asyncio.wait_for(writer.drain(), self._limits.request_timeout_seconds)
        except (ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()


async def start_metrics_endpoint(address: tuple[str, int], render: Callable[[], bytes],
                                 content_type: str) -> MetricsEndpoint:
    """A started endpoint on (host, port); its `port` is the one bound (port 0 picks a free one)."""
    endpoint = MetricsEndpoint(render, content_type)
    await endpoint.start(*address)
    return endpoint
