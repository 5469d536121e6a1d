"""`make up` / `make down`, as docs/deployment.md tells a user to run them, offline.

The port check is fast and needs no Docker: a port held here must stop `make up` with the
address and the process named. The whole cycle (slow) runs `make up` with every address moved
to a free loopback port, calls Predict through the balancer it started, then `make down`, which
must leave no container behind and stop the Docker engine if `make up` started it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from rnn_sentiment.client import SentimentClient
from tests.support import REPO_ROOT, free_port
from tests.system.stack import Phases, http_get, require_commands

STACK_UP = REPO_ROOT / "scripts" / "stack-up.sh"
PROJECT = "rnn-sentiment-make-up-test"
# The same tag as tests/system/test_docker_stack.py: one set of test images, never `latest`.
TAG = "system-test"
CALLS = 10


def _clean_env(**overrides: str) -> dict[str, str]:
    # Nothing from the caller's shell may redirect the stack; only the test's own settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RNNS_", "COMPOSE_", "STACK_"))}
    env.update(overrides)
    return env


@contextmanager
def _listening(address: str) -> Iterator[socket.socket | None]:
    """A socket listening on ADDRESS; None when another process holds it already (as good: taken)."""
    host, port = address.rsplit(":", 1)
    sock = socket.socket()
    try:
        sock.bind((host, int(port)))
    except OSError:
        sock.close()
        yield None
        return
    try:
        sock.listen()
        yield sock
    finally:
        sock.close()


def _check_ports(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(STACK_UP), "--check-ports"], capture_output=True, text=True, timeout=60,
                          env=env, cwd=REPO_ROOT)


def test_make_up_refuses_when_50051_is_taken_and_names_the_holder() -> None:
    require_commands("ss")
    with _listening("127.0.0.1:50051") as sock:
        result = _check_ports(_clean_env())
    assert result.returncode == 1, result.stderr
    assert "127.0.0.1:50051 (load-balancer) is taken by PID" in result.stderr, result.stderr
    if sock is not None:  # held by this very process: it is the one named
        assert f"taken by PID {os.getpid()} " in result.stderr, result.stderr
    assert "make serve" in result.stderr and "RNNS_LB_ADDRESS" in result.stderr


@pytest.mark.parametrize("variable", ["RNNS_REPLICA1_METRICS", "RNNS_PROMETHEUS_ADDRESS"])
def test_make_up_refuses_when_any_address_it_binds_is_taken(variable: str) -> None:
    require_commands("ss")
    address = f"127.0.0.1:{free_port()}"
    free = {name: f"127.0.0.1:{free_port()}" for name in (
        "RNNS_LB_ADDRESS", "RNNS_REPLICA1_ADDRESS", "RNNS_REPLICA2_ADDRESS", "RNNS_REPLICA2_METRICS",
        "RNNS_REPLICA1_METRICS", "RNNS_PROMETHEUS_ADDRESS")}
    env = _clean_env(**{**free, variable: address})
    assert _check_ports(env).returncode == 0
    with _listening(address) as sock:
        assert sock is not None
        result = _check_ports(env)
    assert result.returncode == 1
    assert re.search(rf"{re.escape(address)} \(\S+\) is taken by PID {os.getpid()} ", result.stderr), result.stderr


def _stack_containers(docker: str) -> list[str]:
    return subprocess.run(
        [docker, "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"],
        capture_output=True, text=True, timeout=30,
    ).stdout.split()


def _make(target: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", target], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO_ROOT)


# A first run on a fresh clone debootstraps the base and builds the images (minutes on 2 cores);
# with tests/system/test_docker_stack.py's images cached, the cycle takes well under a minute.
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_make_up_serves_through_the_balancer_and_make_down_removes_it() -> None:
    tools = require_commands("make", "docker", "ss")
    if shutil.which("docker-compose") is None and subprocess.run(
            [tools["docker"], "compose", "version"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("needs Compose: `docker compose` or `docker-compose`")
    engine_was_running = subprocess.run([tools["docker"], "info"], capture_output=True, timeout=30).returncode == 0
    if not engine_was_running:
        if os.geteuid() != 0:
            pytest.skip("no Docker engine is running and `make up` needs root to start one")
        require_commands("dockerd", "debootstrap")
    phases = Phases("make up")
    lb = f"127.0.0.1:{free_port()}"
    prometheus = f"127.0.0.1:{free_port()}"
    env = _clean_env(
        COMPOSE_PROJECT_NAME=PROJECT, RNNS_TAG=TAG, RNNS_HEALTHCHECK_INTERVAL="2s",
        RNNS_LB_ADDRESS=lb, RNNS_PROMETHEUS_ADDRESS=prometheus,
        RNNS_REPLICA1_ADDRESS=f"127.0.0.1:{free_port()}", RNNS_REPLICA1_METRICS=f"127.0.0.1:{free_port()}",
        RNNS_REPLICA2_ADDRESS=f"127.0.0.1:{free_port()}", RNNS_REPLICA2_METRICS=f"127.0.0.1:{free_port()}",
        RNNS_GRAFANA_PORT=str(free_port()),
    )
    try:
        # ---- the balancer's port taken: make up stops before it builds or starts anything ----
        with _listening(lb) as sock:
            assert sock is not None
            refused = _make("up", env, timeout=180)
        assert refused.returncode != 0, refused.stdout + refused.stderr
        assert f"{lb} (load-balancer) is taken by PID {os.getpid()}" in refused.stderr, refused.stderr
        assert not _stack_containers(tools["docker"])
        phases.done("refused while the balancer's port was taken")

        up = _make("up", env, timeout=840)
        assert up.returncode == 0, (up.stdout + up.stderr)[-6000:]
        phases.done("make up")
        print(f"\n{up.stdout}", end="")
        assert f"gRPC, load balancer  {lb}" in up.stdout, up.stdout
        assert "RNNS_TORCH_INDEX_URL emptied" in up.stderr or "PyTorch CPU index" in up.stderr, up.stderr
        # Grafana's image comes from a registry: up without it says so, and the rest still runs.
        grafana = re.search(r"^  Grafana +(.*)$", up.stdout, re.M)
        assert grafana is not None, up.stdout
        grafana_present = not grafana.group(1).startswith("skipped")
        assert grafana_present or "is not on this machine" in grafana.group(1)

        # ---- Predict through the balancer it started, on both replicas' behalf ----
        with SentimentClient(lb, timeout=10) as client:
            client.wait_until_serving(timeout=30)
            results = [client.predict(["a warm, funny and beautifully acted film"]) for _ in range(CALLS)]
        assert {r.predictions[0].label for r in results} <= {"negative", "positive"}
        # ---- the Prometheus links it printed are real pages of the Prometheus it built ----
        links = re.findall(r"(?:alerts|targets) (http://\S+)", up.stdout)
        assert len(links) == 2, up.stdout
        for link in links:
            assert "<html" in http_get(link).lower(), link
        containers = _stack_containers(tools["docker"])
        states = [json.loads(subprocess.run([tools["docker"], "inspect", c], capture_output=True, text=True,
                                            timeout=30).stdout)[0]["State"] for c in containers]
        assert all(s["Running"] and not s["Restarting"] for s in states), states
        assert len(containers) == 4 + grafana_present
        phases.done("calls through the balancer, Prometheus pages")
    finally:
        down = _make("down", env, timeout=240)
        phases.done("make down")
    assert down.returncode == 0, down.stdout + down.stderr
    if engine_was_running:
        assert not _stack_containers(tools["docker"])
    else:
        # It started the engine, so down stops it again.
        assert "stopping the Docker engine make up started" in down.stderr, down.stderr
        assert subprocess.run([tools["docker"], "info"], capture_output=True, timeout=30).returncode != 0
