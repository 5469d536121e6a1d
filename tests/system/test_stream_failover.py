"""StreamSentiment failover behind a real nginx: the replica serving a stream drains mid-stream,
and the SDK reopens the stream on the other replica and replays the text; the caller sees no
error and the final prediction equals Predict on the whole text."""

from __future__ import annotations

import signal
import urllib.request
from pathlib import Path

import pytest

from rnn_sentiment.client import SentimentClient
from tests.support import ServerProcess
from tests.system.stack import nginx_over_two_replicas

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPLICA_ARGS = ["--drain-seconds", "1", "--grace-seconds", "1"]
TEXT = "the plot is dull but the acting is wonderful"
CHUNKS = ["the plot is du", "ll but the ", "acting is wonder", "ful"]


def open_streams(replica: ServerProcess) -> float:
    """rnn_sentiment_streams_active summed over models, from the replica's /metrics."""
    with urllib.request.urlopen(replica.metrics_url, timeout=10) as response:
        return sum(float(line.rsplit(" ", 1)[1]) for line in response.read().decode().splitlines()
                   if line.startswith("rnn_sentiment_streams_active{"))


def test_draining_the_replica_of_an_open_stream_is_invisible_to_the_caller(tmp_path: Path) -> None:
    with nginx_over_two_replicas(tmp_path, REPLICA_ARGS) as stack:
        replicas = stack.replicas
        with SentimentClient(stack.lb_address, timeout=10) as client:
            client.wait_until_serving(timeout=30)
            expected = client.predict(TEXT).predictions[0]
            with client.stream() as stream:
                first = [stream.send(chunk) for chunk in CHUNKS[:2]]
                (serving,) = [r for r in replicas if open_streams(r) > 0]
                serving.signal(signal.SIGTERM)
                # Drained and gone: its grace over, the replica ended the stream UNAVAILABLE.
                assert serving.process is not None and serving.process.wait(60) == 0, serving.log()
                rest = [stream.send(chunk) for chunk in CHUNKS[2:]]
                final = stream.close()
            assert stream.reopened >= 1
        (survivor,) = [r for r in replicas if r is not serving]
        assert [u.prediction.token_count for u in first + rest] == [3, 6, 8, 8]
        assert final.final
        assert final.prediction.label == expected.label
        assert final.prediction.probabilities == pytest.approx(expected.probabilities, abs=1e-5)
        assert final.prediction.token_count == expected.token_count
        assert survivor.process is not None and survivor.process.poll() is None
