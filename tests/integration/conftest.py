from __future__ import annotations

from typing import Iterator

import pytest

from rnn_sentiment.client import SentimentClient
from tests.support import ServerProcess


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    """One real server on a loopback port serving the shipped models, for the whole session."""
    process = ServerProcess(extra_args=["--max-texts-per-request", "8", "--max-text-chars", "1000"])
    process.start()
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[SentimentClient]:
    with SentimentClient(server.target, timeout=30) as c:
        yield c
