"""A rolling restart behind a real nginx: two replicas, restarted one at a time (SIGTERM, drain,
start again on the same port) while an SDK client calls through the load balancer in a loop.
Zero errors may reach the client: the draining replica answers UNAVAILABLE (never CANCELLED),
and the SDK's retry policy (client/channel.py, on by default) retries it on the other replica.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from rnn_sentiment.client import SentimentClient, SentimentError
from tests.support import ServerProcess, free_port
from tests.system.stack import DEFAULT_REPLICAS, Phases, nginx_over_two_replicas, start_nginx

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

REPLICA_ARGS = ["--drain-seconds", "2"]
CALLS_BETWEEN_RESTARTS = 50  # calls that must succeed through the balancer before the next step


class LoopingClient:
    """One SDK client calling Predict through the balancer until stopped; every outcome kept."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.ok = 0
        self.errors: list[str] = []
        self._running = True
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> "LoopingClient":
        self._thread.start()
        return self

    def _loop(self) -> None:
        with SentimentClient(self.target, timeout=10) as client:  # the SDK's default retry policy
            while self._running:
                try:
                    client.predict("a warm , funny and beautifully acted film")
                    self.ok += 1
                except SentimentError as error:
                    self.errors.append(f"{error.code}: {error}")

    def wait_for_calls(self, count: int, timeout: float = 60.0) -> None:
        target = self.ok + count
        deadline = time.monotonic() + timeout
        while self.ok < target:
            assert time.monotonic() < deadline, f"only {self.ok} calls succeeded; errors {self.errors[:5]}"
            time.sleep(0.05)

    def stop(self) -> None:
        self._running = False
        self._thread.join(30)


def test_rolling_restart_behind_nginx_loses_no_call(tmp_path: Path) -> None:
    phases = Phases("rolling restart")
    client = None
    with nginx_over_two_replicas(tmp_path, REPLICA_ARGS) as stack:
        replicas = stack.replicas
        phases.done("two replicas and nginx up")
        try:
            client = LoopingClient(stack.lb_address).start()
            client.wait_for_calls(CALLS_BETWEEN_RESTARTS)
            for index, old in enumerate(replicas):
                assert old.stop() == 0, old.log()  # SIGTERM: drain, with calls arriving through nginx
                client.wait_for_calls(CALLS_BETWEEN_RESTARTS)  # served by the other replica meanwhile
                replicas[index] = ServerProcess(extra_args=REPLICA_ARGS, port=old.port, metrics_port=old.metrics_port)
                replicas[index].start(wait=False)
                replicas[index].wait_until_serving(timeout=120)
                client.wait_for_calls(CALLS_BETWEEN_RESTARTS)
                phases.done(f"replica {index + 1} restarted")
            client.stop()
            print(f"\n[system] rolling restart: {client.ok} calls OK, {len(client.errors)} errors", end="")
            assert client.errors == [], f"{len(client.errors)} errors reached the client: {client.errors[:10]}"
            assert client.ok >= 5 * CALLS_BETWEEN_RESTARTS
        finally:
            if client is not None:
                client.stop()


def test_no_replica_reachable_is_a_grpc_unavailable_not_an_http_502(tmp_path: Path) -> None:
    """nginx's own 502 reaches gRPC clients as a committed HTTP error that no retry policy
    retries; the committed config answers it as a trailers-only UNAVAILABLE, which they do."""
    import grpc

    from rnn_sentiment.v1 import sentiment_pb2 as pb
    from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc

    lb_address = f"127.0.0.1:{free_port()}"
    nowhere = [f"127.0.0.1:{free_port()}" for _ in DEFAULT_REPLICAS]  # nothing listens there
    nginx = start_nginx(tmp_path, lb_address, nowhere)
    try:
        deadline = time.monotonic() + 30
        while True:  # until nginx listens: then the answer is its own, not a refused connection
            with grpc.insecure_channel(lb_address) as channel:
                try:
                    pb_grpc.SentimentServiceStub(channel).Predict(pb.PredictRequest(texts=["a fine film"]), timeout=5)
                    raise AssertionError("a call succeeded with no replica behind the balancer")
                except grpc.RpcError as error:
                    code, details = error.code(), error.details() or ""
            if "connect" not in details.lower() or time.monotonic() > deadline:
                break  # anything but "failed to connect to all addresses" came from nginx
            time.sleep(0.1)
        assert code == grpc.StatusCode.UNAVAILABLE, details
        assert "could not reach a replica" in details and "502" not in details, details
    finally:
        nginx.stop()
