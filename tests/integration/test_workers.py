"""`--workers 2`: two processes share one port, both answer, metrics add up, drain exits 0, and a
worker that crashes is restarted, forever, while the other serves."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from rnn_sentiment.client import SentimentClient
from rnn_sentiment.server.affinity import worker_cpus
from tests.support import ServerProcess

CALLS = 40


def metric_sum(metrics_url: str, name: str, **labels: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def wait_for_ready_workers(server: ServerProcess, count: int, timeout: float = 120.0) -> None:
    # Health answers SERVING as soon as one worker has bound the shared port; the others may
    # still be loading. Each worker adds 1 to rnn_sentiment_ready once it serves.
    deadline = time.monotonic() + timeout
    while metric_sum(server.metrics_url, "rnn_sentiment_ready") < count:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)


def cpus_of(pid: int) -> tuple[int, ...]:
    """Every CPU some thread of process `pid` may run on."""
    cpus: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        cpus |= os.sched_getaffinity(int(task.name))
    return tuple(sorted(cpus))


def test_two_workers_share_the_port_and_one_metrics_endpoint() -> None:
    server = ServerProcess(extra_args=["--workers", "2", "--pin-workers", "--log-format", "json",
                                       "--log-level", "DEBUG"]).start()
    try:
        wait_for_ready_workers(server, 2)
        # A fresh connection per call, so the kernel spreads them. gRPC shares connections between
        # channels to one target through a process-wide pool, and a closed channel's connection can
        # outlive it on a busy machine (the next channel then reuses it: all 40 calls reached one
        # worker in one run); a channel of its own pool always connects anew.
        for _ in range(CALLS):
            with SentimentClient(server.target, timeout=30, options=[("grpc.use_local_subchannel_pool", 1)]) as client:
                assert client.predict("a warm , funny film").predictions[0].label == "positive"
        records = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        serving_pids = {r["pid"] for r in records if r["message"] == "serving"}
        answering_pids = {r["pid"] for r in records if r["message"] == "rpc" and r.get("method") == "Predict"}
        assert len(serving_pids) == 2
        assert answering_pids == serving_pids, "both workers should have answered"
        assert all(r.get("torch_threads") == 1 for r in records if r["message"] == "serving")
        # Each worker, every thread of it, on a CPU of its own (when the machine has two).
        expected = worker_cpus(2)
        if expected is None:
            assert all(r.get("cpu") == "any" for r in records if r["message"] == "serving")
        else:
            assert sorted(cpus_of(pid) for pid in serving_pids) == [(cpu,) for cpu in expected]
            assert sorted(r.get("cpu") for r in records if r["message"] == "serving") == expected
        predict_ok = {"grpc_method": "Predict", "grpc_code": "OK"}
        deadline = time.monotonic() + 10  # a call is counted just after its status is sent
        while metric_sum(server.metrics_url, "grpc_server_handled_total", **predict_ok) < CALLS:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert metric_sum(server.metrics_url, "grpc_server_handled_total", **predict_ok) == CALLS  # both workers
    except BaseException:
        server.stop()
        raise
    assert server.stop() == 0, server.log()


def test_workers_are_unpinned_by_default() -> None:
    server = ServerProcess(extra_args=["--workers", "2", "--log-format", "json"]).start()
    try:
        wait_for_ready_workers(server, 2)
        records = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        serving_pids = {r["pid"] for r in records if r["message"] == "serving"}
        assert len(serving_pids) == 2
        everywhere = tuple(sorted(os.sched_getaffinity(0)))
        assert [cpus_of(pid) for pid in serving_pids] == [everywhere, everywhere]
        assert all(r.get("cpu") == "any" for r in records if r["message"] == "serving")
    finally:
        server.stop()


KILLS = 6  # more than the 5 restarts the supervisor used to allow in a process's whole life


def test_a_worker_killed_again_and_again_is_restarted_while_the_other_serves() -> None:
    server = ServerProcess(extra_args=[
        "--workers", "2", "--log-format", "json", "--log-level", "DEBUG",
        "--restart-backoff-seconds", "0.1", "--restart-backoff-max-seconds", "0.5",
        # No connection ageing: the client's connection stays on the surviving worker throughout.
        "--max-connection-age-seconds", "0",
    ]).start()
    try:
        wait_for_ready_workers(server, 2)
        with SentimentClient(server.target, timeout=30, retry=False,
                             options=[("grpc.use_local_subchannel_pool", 1)]) as client:
            assert client.predict("a warm , funny film").predictions[0].label == "positive"
            records = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
            serving = {r["pid"] for r in records if r["message"] == "serving"}
            survivor = [r["pid"] for r in records if r["message"] == "rpc" and r.get("method") == "Predict"][-1]
            (victim,) = serving - {survivor}
            for kill in range(1, KILLS + 1):
                os.kill(victim, signal.SIGKILL)  # killed at once again: a crash loop
                deadline = time.monotonic() + 60
                while True:
                    records = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
                    restarted = [r for r in records if r["message"] == "worker restarted"]
                    if len(restarted) == kill:
                        victim = restarted[-1]["worker_pid"]
                        break
                    assert time.monotonic() < deadline, server.log()
                    time.sleep(0.05)
                # and the service answers all along, through the other worker
                assert client.predict("a dull , lifeless film").predictions[0].label == "negative"
        assert metric_sum(server.metrics_url, "rnn_sentiment_worker_restarts_total") == KILLS
        # Each crash is logged with its count in a row; past CRASH_LOOP_RESTARTS (3) without a
        # healthy run it is a crash loop, at ERROR (docs/reliability.md).
        exits = [(r["crashes_in_a_row"], r["level"]) for r in records
                 if r["message"] in ("worker exited; restarting",
                                     "worker is crash-looping; restarting it with backoff, the others keep serving")]
        assert exits == [(1, "WARNING"), (2, "WARNING"), (3, "WARNING"),
                         (4, "ERROR"), (5, "ERROR"), (6, "ERROR")], server.log()
        wait_for_ready_workers(server, 2)  # the last restart comes up and serves
    except BaseException:
        server.stop()
        raise
    assert server.stop() == 0, server.log()
