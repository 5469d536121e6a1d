"""Reading a live server's /metrics in tests: one scrape, and one sample's value from it.

A scrape is current: /metrics flushes the metric buffer before it renders (server/metrics.py),
so a scrape made after a call returned counts it. Under `--workers N` the supervisor renders the
workers' files, which they write at their buffer's next flush: scrape there until counted.
"""

from __future__ import annotations

import time
import urllib.request
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

from tests.support import ServerProcess


def scrape(server: ServerProcess) -> str:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        return response.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample `name` whose labels include `labels`; 0 when there is none."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def idle_scrape(server: ServerProcess, timeout: float = 10.0) -> str:
    """A scrape taken while no call is in flight (every started call has ended), so that deltas
    from it count only what follows: a call an earlier test gave up on (cancelled, past its
    deadline, its channel closed) ends on the server a moment later. Bounded by `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        text = scrape(server)
        if not calls_in_flight(text):
            return text
        assert time.monotonic() < deadline, f"calls still in flight: {calls_in_flight(text)}\n{text}"
        time.sleep(0.05)


def calls_in_flight(text: str) -> dict[tuple[str, str, str], float]:
    """Per (type, service, method): grpc_server_started_total minus grpc_server_handled_total
    over every code, where it is not 0."""
    balance: dict[tuple[str, str, str], float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in ("grpc_server_started_total", "grpc_server_handled_total"):
                key = (s.labels["grpc_type"], s.labels["grpc_service"], s.labels["grpc_method"])
                balance[key] += s.value if s.name == "grpc_server_started_total" else -s.value
    return {key: value for key, value in balance.items() if value}
