"""The docker-compose stack for real: engine, offline base image, build, up, calls, Prometheus, down.

Starts a Docker engine when none is running (and stops exactly that dockerd afterwards), builds
the base image offline with debootstrap (scripts/local-base-image.sh, cached under
.deploy-cache/), builds the stack's images from the committed Dockerfiles and runs
docker-compose.yml with every address moved to a free loopback port.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from rnn_sentiment.client import SentimentClient
from tests.support import REPO_ROOT, SHIPPED_MODELS, free_port
from tests.system.stack import (
    BackgroundProcess, Phases, counter_moves, http_get, poll, prometheus_query, require_commands, run,
    scrape_counter,
)

# A first run on a fresh machine debootstraps and builds everything (about 4 minutes on 2 cores).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BASE_IMAGE = "rnn-sentiment-base:bookworm"
TAG = "system-test"
SERVER_IMAGE = f"rnn-sentiment:{TAG}"
PROJECT = "rnn-sentiment-system-test"
# Left behind by an engine that was killed: dockerd refuses to start over a stale docker.pid.
DOCKERD_PID_FILE = Path("/var/run/docker.pid")
CONTAINERD_PID_FILE = Path("/var/run/docker/containerd/containerd.pid")
CALLS = 20
PREDICT_OK = {"grpc_service": "rnn_sentiment.v1.SentimentService", "grpc_method": "Predict", "grpc_code": "OK"}


def _engine_answers(docker: str) -> bool:
    return subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode == 0


def _pid_file_names_live(pid_file: Path, command: str) -> bool:
    """Whether the PID in `pid_file` is a live process named `command` (not a reused PID)."""
    try:
        pid = int(pid_file.read_text().strip())
        # /proc/PID/stat: "PID (comm) STATE ..."; a zombie (Z) is as good as gone
        name, _, rest = Path(f"/proc/{pid}/stat").read_text().partition(") ")
        return name.split("(", 1)[1] == command and not rest.startswith(("Z", "X"))
    except (ValueError, OSError):
        return False


def _clear_stale_pid_files() -> None:
    if DOCKERD_PID_FILE.exists():
        if _pid_file_names_live(DOCKERD_PID_FILE, "dockerd"):
            pytest.fail(f"{DOCKERD_PID_FILE} names a live dockerd, yet `docker info` fails: an engine is stuck")
        DOCKERD_PID_FILE.unlink()
    # A live containerd from a killed dockerd is fine: the new dockerd takes it over.
    if CONTAINERD_PID_FILE.exists() and not _pid_file_names_live(CONTAINERD_PID_FILE, "containerd"):
        CONTAINERD_PID_FILE.unlink()


@pytest.fixture(scope="module")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Docker engine that answers: the running one, or a dockerd started (and stopped) here."""
    tools = require_commands("docker", "dockerd", "docker-compose", "debootstrap")
    if _engine_answers(tools["docker"]):
        yield tools["docker"]
        return
    if os.geteuid() != 0:
        pytest.skip("no Docker engine is running and starting dockerd needs root")
    _clear_stale_pid_files()
    log_path = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    # No bridge on these machines: every container uses the host network (see docker-compose.yml).
    dockerd = BackgroundProcess(
        [tools["dockerd"], "--iptables=false", "--ip6tables=false", "--bridge=none"], log_path=log_path
    ).start()
    try:
        def ready() -> bool:
            if not dockerd.running():
                pytest.skip(f"the Docker engine cannot start on this machine:\n{dockerd.log(2000)}")
            return _engine_answers(tools["docker"])

        poll(ready, 60, "dockerd to answer `docker info`", interval=0.5)
        yield tools["docker"]
    finally:
        dockerd.stop(timeout=60)


def _compose_env(ports: dict[str, str]) -> dict[str, str]:
    # Only this test's settings: nothing from the caller's shell may redirect the stack.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RNNS_", "COMPOSE_"))}
    env.update(ports)
    env.update({
        "COMPOSE_PROJECT_NAME": PROJECT,
        "RNNS_TAG": TAG,   # never retags the images of a stack someone runs here
        "RNNS_BASE_IMAGE": BASE_IMAGE,
        "RNNS_DEBIAN_IMAGE": BASE_IMAGE,
        "RNNS_TORCH_INDEX_URL": "",   # torch comes from the local wheel in .deploy-cache/pip
        "RNNS_HEALTHCHECK_INTERVAL": "2s",
    })
    return env


def test_compose_stack_builds_serves_and_is_scraped(docker_engine: str) -> None:
    docker = docker_engine
    phases = Phases("docker")
    compose = [require_commands("docker-compose")["docker-compose"], "-f", str(REPO_ROOT / "docker-compose.yml")]
    base = run([str(REPO_ROOT / "scripts" / "local-base-image.sh"), BASE_IMAGE], timeout=600).stdout.strip()
    assert base == BASE_IMAGE
    run([str(REPO_ROOT / "scripts" / "docker-pip-context.sh")], timeout=300)
    phases.done("base image and pip context")

    replicas = [(f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}") for _ in range(2)]
    lb_address = f"127.0.0.1:{free_port()}"
    prometheus_address = f"127.0.0.1:{free_port()}"
    env = _compose_env({
        "RNNS_LB_ADDRESS": lb_address,
        "RNNS_REPLICA1_ADDRESS": replicas[0][0], "RNNS_REPLICA1_METRICS": replicas[0][1],
        "RNNS_REPLICA2_ADDRESS": replicas[1][0], "RNNS_REPLICA2_METRICS": replicas[1][1],
        "RNNS_GPU_ADDRESS": f"127.0.0.1:{free_port()}", "RNNS_GPU_METRICS": f"127.0.0.1:{free_port()}",
        "RNNS_PROMETHEUS_ADDRESS": prometheus_address,
    })

    def compose_run(*args: str, timeout: float, check: bool = True) -> subprocess.CompletedProcess:
        return run([*compose, *args], timeout=timeout, env=env, cwd=REPO_ROOT, check=check)

    compose_run("down", "--volumes", "--remove-orphans", timeout=120)  # a run that was killed
    compose_run("config", "-q", timeout=60)
    phases.done("down (stale) and config")
    try:
        # One server build serves both replicas (same image); nginx and Prometheus build beside it.
        compose_run("build", "--parallel", "rnn-sentiment-1", "lb", "prometheus", timeout=780)
        phases.done("build")
        image = json.loads(run([docker, "image", "inspect", SERVER_IMAGE], timeout=30).stdout)[0]
        print(f"\n[system] {SERVER_IMAGE}: {image['Size'] / 1e6:.0f} MB", end="")
        assert image["Config"]["User"] == "10001:10001"
        assert "rnn-sentiment-healthcheck" in " ".join(image["Config"]["Healthcheck"]["Test"])
        assert "/models" in image["Config"]["Volumes"]

        # `up` waits for both replicas to turn healthy (the LB depends on it), then starts the rest.
        compose_run("up", "-d", timeout=300)
        phases.done("up, replicas healthy")
        for service in ("rnn-sentiment-1", "rnn-sentiment-2"):
            container = compose_run("ps", "-q", service, timeout=60).stdout.strip()
            state = json.loads(run([docker, "inspect", container], timeout=30).stdout)[0]["State"]
            assert state["Health"]["Status"] == "healthy", (service, state["Health"])
        assert compose_run("exec", "-T", "rnn-sentiment-1", "id", "-u", timeout=60).stdout.strip() == "10001"
        # The image carries ONNX Runtime, and the server chose it for small batches after its check.
        replica_log = compose_run("logs", "--no-color", "rnn-sentiment-1", timeout=60).stdout
        assert "Predict runs on onnxruntime" in replica_log, replica_log[-3000:]

        # ---- Predict through the nginx container reaches both replica containers ----
        metrics_urls = [f"http://{metrics}/metrics" for _, metrics in replicas]
        with SentimentClient(lb_address, timeout=10) as client:
            client.wait_until_serving(timeout=60)
            before = [scrape_counter(url, "grpc_server_handled_total", **PREDICT_OK) for url in metrics_urls]
            results = [client.predict(["a warm, funny and beautifully acted film"]) for _ in range(CALLS)]
        assert {r.predictions[0].label for r in results} <= {"negative", "positive"}
        served = counter_moves(lambda: [scrape_counter(url, "grpc_server_handled_total", **PREDICT_OK)
                                        for url in metrics_urls], before, CALLS)
        assert sum(served) == CALLS and all(n > 0 for n in served), served

        # ---- the Prometheus container scrapes both replicas and sees the calls ----
        prometheus_url = f"http://{prometheus_address}"
        poll(lambda: http_get(f"{prometheus_url}/-/ready"), 60, "Prometheus /-/ready")

        def both_up() -> list[dict] | None:
            up = prometheus_query(prometheus_url, 'up{job="rnn-sentiment"} == 1')
            return up if len(up) == 2 else None

        up = poll(both_up, 60, "both replicas up in Prometheus")
        assert {s["metric"]["instance"] for s in up} == {metrics for _, metrics in replicas}
        expected = sum(scrape_counter(url, "grpc_server_handled_total", **PREDICT_OK) for url in metrics_urls)

        def predict_count_scraped() -> bool:
            total = prometheus_query(prometheus_url, 'sum(grpc_server_handled_total{job="rnn-sentiment", '
                                                     'grpc_method="Predict", grpc_code="OK"})')
            return bool(total) and float(total[0]["value"][1]) == expected

        poll(predict_count_scraped, 30, f"Prometheus to count {expected:.0f} Predict calls")
        prometheus_container = compose_run("ps", "-q", "prometheus", timeout=60).stdout.strip()

        def prometheus_healthy() -> bool:  # its HEALTHCHECK (bash /dev/tcp, no curl in the image)
            state = json.loads(run([docker, "inspect", prometheus_container], timeout=30).stdout)[0]["State"]
            return state["Health"]["Status"] == "healthy"

        poll(prometheus_healthy, 30, "the Prometheus container's healthcheck", interval=1)
        phases.done("calls through the LB, Prometheus checks")

        # ---- other models from the /models volume, read by the non-root user ----
        address = f"127.0.0.1:{free_port()}"
        container = run([
            docker, "run", "-d", "--rm", "--network", "host", "--name", f"{PROJECT}-models-volume",
            "-v", f"{SHIPPED_MODELS}:/models:ro", "-e", "RNN_SENTIMENT_MODEL_DIR=/models",
            "-e", f"RNN_SENTIMENT_ADDRESS={address}", "-e", "RNN_SENTIMENT_METRICS_ADDRESS=",
            SERVER_IMAGE,
        ], timeout=60).stdout.strip()
        try:
            with SentimentClient(address, timeout=10) as client:
                client.wait_until_serving(timeout=60)
                served = {m.name for m in client.list_models()}
        finally:
            run([docker, "rm", "-f", container], timeout=60, check=False)
        assert served == {d.name for d in SHIPPED_MODELS.iterdir() if (d / "config.json").is_file()}
        phases.done("a container serving the models of a mounted volume")

        # ---- a CPU quota sets the default worker count, not the host's CPUs ----
        # `--cpus 1` still lets the container see (and run on) every host CPU; one worker per visible
        # CPU would start a supervisor and a worker per host core, each holding the models.
        address = f"127.0.0.1:{free_port()}"
        container = run([
            docker, "run", "-d", "--rm", "--network", "host", "--cpus", "1", "--name", f"{PROJECT}-cpu-quota",
            "-e", f"RNN_SENTIMENT_ADDRESS={address}", "-e", "RNN_SENTIMENT_METRICS_ADDRESS=", SERVER_IMAGE,
        ], timeout=60).stdout.strip()
        try:
            with SentimentClient(address, timeout=10) as client:
                client.wait_until_serving(timeout=60)
                assert client.predict(["a warm, funny film"]).predictions[0].label in {"negative", "positive"}
            processes = run([docker, "top", container, "-o", "pid,args"], timeout=60).stdout.splitlines()[1:]
            servers = [p for p in processes if "rnn-sentiment serve" in p or "rnn_sentiment.cli serve" in p]
        finally:
            run([docker, "rm", "-f", container], timeout=60, check=False)
        assert len(servers) == 1, processes  # one worker, serving by itself: no supervisor
        phases.done("a container with a CPU quota of 1 runs one worker")
    except BaseException:
        logs = compose_run("logs", "--no-color", "--tail", "60", timeout=60, check=False)
        print(f"---- docker-compose logs ----\n{logs.stdout[-8000:]}{logs.stderr[-2000:]}")
        raise
    finally:
        compose_run("down", "--volumes", "--remove-orphans", timeout=180, check=False)
        phases.done("down")
