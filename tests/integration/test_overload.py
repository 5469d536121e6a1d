"""Overload is answered RESOURCE_EXHAUSTED with RetryInfo, counted, never CANCELLED."""

from __future__ import annotations

import asyncio
import collections
import time
import urllib.request

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from tests.support import ServerProcess

ALLOWED = {"OK", "RESOURCE_EXHAUSTED"}


def _handled(url: str) -> collections.Counter:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    counts: collections.Counter = collections.Counter()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "grpc_server_handled_total" and s.labels.get("grpc_method") == "Predict":
                counts[s.labels["grpc_code"]] += int(s.value)
    return counts


def _has_retry_info(error: aio.AioRpcError) -> bool:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            return any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details)
    return False


async def _burst(target: str, calls: int, channels: int) -> tuple[collections.Counter, int, str]:
    """`calls` Predicts at once over `channels` connections; the statuses, how many refusals
    carried RetryInfo, and the health status seen in the middle of the burst."""
    options = (("grpc.use_local_subchannel_pool", 1),)  # a connection per channel
    opened = [aio.insecure_channel(target, options=options) for _ in range(channels)]
    codes: collections.Counter = collections.Counter()
    retry_info = 0

    async def one(channel: aio.Channel) -> None:
        nonlocal retry_info
        try:
            await pb_grpc.SentimentServiceStub(channel).Predict(pb.PredictRequest(texts=["good", "bad"]), timeout=60)
            codes["OK"] += 1
        except aio.AioRpcError as error:
            codes[error.code().name] += 1
            retry_info += error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and _has_retry_info(error)

    try:
        await asyncio.gather(*(c.channel_ready() for c in opened))
        tasks = [asyncio.ensure_future(one(opened[i % channels])) for i in range(calls)]
        await asyncio.sleep(0)
        health = await health_pb2_grpc.HealthStub(opened[0]).Check(health_pb2.HealthCheckRequest(), timeout=60)
        await asyncio.gather(*tasks)
    finally:
        await asyncio.gather(*(c.close() for c in opened))
    return codes, retry_info, health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)


def _counted(server: ServerProcess, before: collections.Counter, expected: collections.Counter) -> collections.Counter:
    # The server counts a call just after answering it: poll until they match (bounded).
    deadline = time.monotonic() + 10
    while True:
        after = _handled(server.metrics_url)
        delta = collections.Counter({code: after[code] - before[code] for code in after if after[code] - before[code]})
        if delta == expected or time.monotonic() > deadline:
            return delta
        time.sleep(0.1)


def test_calls_beyond_the_limit_are_refused_with_retry_info_and_counted() -> None:
    # The first call holds its slot for the batching delay, so the rest of the burst meets a full house.
    server = ServerProcess(extra_args=["--max-concurrent-rpcs", "2", "--max-batch-delay-ms", "2000"], keep_log=True)
    with server:
        before = _handled(server.metrics_url)
        codes, retry_info, health = asyncio.run(_burst(server.target, calls=24, channels=4))
        assert set(codes) <= ALLOWED, codes
        assert codes["OK"] >= 1 and codes["RESOURCE_EXHAUSTED"] >= 1, codes
        assert retry_info == codes["RESOURCE_EXHAUSTED"]
        assert health == "SERVING"  # health checks are never refused
        assert _counted(server, before, codes) == codes
        with grpc.insecure_channel(server.target) as channel:
            assert pb_grpc.SentimentServiceStub(channel).Predict(pb.PredictRequest(texts=["good"]), timeout=60).predictions
    log = server.log()
    assert server.log_path is not None
    server.log_path.unlink()
    # Refusals are summed up by a throttled warning, not written one line each.
    assert "code=RESOURCE_EXHAUSTED" not in log
    warnings = [line for line in log.splitlines() if "overloaded: refusing calls" in line]
    assert 1 <= len(warnings) <= 3, warnings


@pytest.mark.slow
def test_a_burst_larger_than_grpcs_own_backlog_gets_no_cancelled() -> None:
    # gRPC core, left to its defaults, cancels calls once more than 1,000 wait to be picked up
    # by the server; the server raises that backlog limit and answers them itself.
    with ServerProcess(extra_args=["--max-concurrent-rpcs", "2", "--max-batch-delay-ms", "2000"]) as server:
        before = _handled(server.metrics_url)
        codes, _, _ = asyncio.run(_burst(server.target, calls=3000, channels=16))
        assert set(codes) <= ALLOWED, codes
        assert _counted(server, before, codes) == codes
