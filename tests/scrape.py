"""Reading a live server's /metrics in tests: one scrape, and one sample's value from it."""

from __future__ import annotations

import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from rnn_sentiment.server.metric_buffer import FLUSH_SECONDS
from tests.support import ServerProcess

# Calls are counted at the metric buffer's next flush: two scrapes this far apart that agree saw
# every earlier call.
SETTLE_SECONDS = FLUSH_SECONDS + 0.1


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


def settled_scrape(server: ServerProcess, timeout: float = 10.0) -> str:
    """A scrape once the calls made so far are all counted (two scrapes SETTLE_SECONDS apart
    agree), so that deltas from it count only what follows. Bounded by `timeout`."""
    deadline = time.monotonic() + timeout
    previous = _samples(scrape(server))
    while True:
        time.sleep(SETTLE_SECONDS)
        text = scrape(server)
        current = _samples(text)
        if current == previous:
            return text
        assert time.monotonic() < deadline, text
        previous = current


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples if not s.name.endswith("_created")]
