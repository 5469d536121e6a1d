"""The compose load balancer's own start script (deploy/nginx/start.sh) with a real nginx on
loopback: plaintext as committed, TLS once certificates are in its folder, mutual TLS with a
client CA, and a clear refusal of half a key pair. Calls go through to a real server."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from rnn_sentiment.client import SentimentClient, SentimentError
from tests.certificates import CertificateAuthority
from tests.support import ServerProcess, free_port
from tests.system.stack import (
    DEFAULT_LB, DEFAULT_REPLICAS, DEPLOY, RENDER_ADDRESSES, BackgroundProcess, poll, require_commands,
)

pytestmark = pytest.mark.slow

DEFAULT_LB_TLS = "127.0.0.1:50443"  # deploy/nginx/tls/listen-tls.conf
TEXT = "a warm, funny and beautifully acted film"


@pytest.fixture(scope="module")
def replica() -> Iterator[ServerProcess]:
    server = ServerProcess().start()
    yield server
    assert server.stop() == 0, server.log()


def start_lb(tmp_path: Path, replica: ServerProcess, tls_dir: Path) -> tuple[BackgroundProcess, str, str]:
    """deploy/nginx/start.sh under a temporary prefix; (process, plaintext address, TLS address)."""
    nginx = require_commands("nginx")["nginx"]
    plain, tls = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    prefix = tmp_path / "prefix"
    address_map = {DEFAULT_LB: plain, DEFAULT_LB_TLS: tls, **{d: replica.target for d in DEFAULT_REPLICAS}}
    process = BackgroundProcess(
        ["sh", str(DEPLOY / "nginx" / "start.sh")],
        log_path=tmp_path / "lb.log",
        env={"NGINX_CONFIG_DIR": str(DEPLOY / "nginx"), "NGINX_PREFIX": str(prefix), "LB_TLS_DIR": str(tls_dir),
             "RENDER_ADDRESSES": str(RENDER_ADDRESSES), "NGINX": nginx,
             "ADDRESS_MAP": " ".join(f"{k}={v}" for k, v in address_map.items())},
    )
    process.start()
    return process, plain, tls


def wait_for_lb(process: BackgroundProcess, target: str, **settings: object) -> None:
    def serving() -> bool:
        assert process.running(), process.log()
        with SentimentClient(target, timeout=5, retry=False, **settings) as client:  # type: ignore[arg-type]
            return client.health() == "SERVING"

    poll(serving, 30, f"nginx at {target}")


def refused(target: str, **settings: object) -> str:
    with SentimentClient(target, timeout=10, retry=False, **settings) as client:  # type: ignore[arg-type]
        with pytest.raises(SentimentError) as error:
            client.predict(TEXT)
    return error.value.code


def test_lb_terminates_tls_when_certificates_are_given(tmp_path: Path, replica: ServerProcess) -> None:
    ca = CertificateAuthority.create(tmp_path)
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    identity = ca.issue(tls_dir, "lb", dns_names=("localhost",), ips=("127.0.0.1",), stem="tls")
    identity.cert.rename(tls_dir / "tls.crt")
    identity.key.rename(tls_dir / "tls.key")
    tmp_path.chmod(0o755)  # nginx workers run as another user when the master is root
    lb, plain, tls = start_lb(tmp_path, replica, tls_dir)
    try:
        wait_for_lb(lb, tls, root_ca=ca.cert)
        with SentimentClient(tls, root_ca=ca.cert, timeout=30) as client:
            assert client.predict(TEXT).predictions[0].label == "positive"
        assert refused(tls) == "UNAVAILABLE"  # plaintext to the TLS port
        with SentimentClient(plain, timeout=30) as client:  # the loopback plaintext listener stays
            assert client.predict(TEXT).predictions[0].label == "positive"
        assert "lb: TLS on" in lb.log()
    finally:
        lb.stop(timeout=30)

    # Mutual TLS: the same folder with client-ca.crt.
    shutil.copy(ca.cert, tls_dir / "client-ca.crt")
    caller = ca.issue(tmp_path, "caller", client=True)
    lb, _, tls = start_lb(tmp_path, replica, tls_dir)
    trusted = {"root_ca": ca.cert, "client_cert": caller.cert, "client_key": caller.key}
    try:
        wait_for_lb(lb, tls, **trusted)
        with SentimentClient(tls, timeout=30, **trusted) as client:  # type: ignore[arg-type]
            assert client.predict(TEXT).predictions[0].label == "positive"
        assert refused(tls, root_ca=ca.cert) == "UNAUTHENTICATED"  # no client certificate
        assert "mutual TLS" in lb.log()
    finally:
        lb.stop(timeout=30)


def test_lb_refuses_half_a_key_pair(tmp_path: Path, replica: ServerProcess) -> None:
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    (tls_dir / "tls.crt").write_text("only the certificate\n")
    lb, _, _ = start_lb(tmp_path, replica, tls_dir)
    try:
        assert lb.process is not None and lb.process.wait(30) == 2
    except subprocess.TimeoutExpired:
        pytest.fail(f"the LB started with half a key pair:\n{lb.log()}")
    finally:
        lb.stop(timeout=10)
    assert "give both, or neither" in lb.log()
