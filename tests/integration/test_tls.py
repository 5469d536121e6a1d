"""TLS and mutual TLS on a real server: calls over TLS, plaintext and certificate-less callers
refused, and a rotated certificate served to new connections without a restart."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from rnn_sentiment.client import SentimentClient, SentimentError
from tests.certificates import CertificateAuthority, Identity
from tests.support import ServerProcess

TEXT = "a warm, funny and beautifully acted film"


def start_tls_server(*args: str, client: dict) -> ServerProcess:
    """A server started with `args`; ready once health says SERVING over TLS with `client`'s settings."""
    server = ServerProcess(extra_args=list(args)).start(wait=False)
    try:
        with SentimentClient(server.target, **client) as probe:
            probe.wait_until_serving(timeout=120)
    except SentimentError:
        server.stop()
        raise AssertionError(f"server did not become SERVING over TLS:\n{server.log()}") from None
    return server


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pki")


@pytest.fixture(scope="module")
def ca(pki: Path) -> CertificateAuthority:
    return CertificateAuthority.create(pki)


@pytest.fixture(scope="module")
def tls_server(pki: Path, ca: CertificateAuthority) -> Iterator[tuple[ServerProcess, Identity]]:
    identity = ca.issue(pki, "server", dns_names=("localhost",), ips=("127.0.0.1",), stem="tls-server")
    server = start_tls_server("--tls-cert", str(identity.cert), "--tls-key", str(identity.key),
                              client={"root_ca": ca.cert})
    yield server, identity
    assert server.stop() == 0, server.log()


def test_tls_call_works_and_plaintext_is_refused(tls_server: tuple[ServerProcess, Identity],
                                                 ca: CertificateAuthority) -> None:
    server, _ = tls_server
    with SentimentClient(server.target, root_ca=ca.cert, timeout=30) as client:
        assert client.predict(TEXT).predictions[0].label == "positive"
    with SentimentClient(server.target, timeout=10, retry=False) as plaintext:
        with pytest.raises(SentimentError) as refused:
            plaintext.predict(TEXT)
    assert refused.value.code == "UNAVAILABLE"


def test_a_client_trusting_another_ca_is_refused(tls_server: tuple[ServerProcess, Identity], pki: Path) -> None:
    server, _ = tls_server
    stranger = CertificateAuthority.create(pki, "stranger CA")
    with SentimentClient(server.target, root_ca=stranger.cert, timeout=10, retry=False) as client:
        with pytest.raises(SentimentError) as refused:
            client.predict(TEXT)
    assert refused.value.code == "UNAVAILABLE"


def test_cli_calls_over_tls_with_flags_and_env(tls_server: tuple[ServerProcess, Identity],
                                               ca: CertificateAuthority) -> None:
    server, _ = tls_server
    command = [sys.executable, "-m", "rnn_sentiment.cli"]
    by_flag = subprocess.run([*command, "predict", "--target", server.target, "--tls-ca", str(ca.cert), TEXT],
                             capture_output=True, text=True, timeout=60)
    assert by_flag.returncode == 0 and by_flag.stdout.startswith("positive"), by_flag.stderr
    by_env = subprocess.run([*command, "health", server.target], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "RNN_SENTIMENT_TLS_CA": str(ca.cert)})
    assert by_env.returncode == 0 and by_env.stdout.strip() == "SERVING", by_env.stderr
    plaintext = subprocess.run([*command, "health", server.target, "--no-retry"],
                               capture_output=True, text=True, timeout=60)
    assert plaintext.returncode == 1 and "UNAVAILABLE" in plaintext.stderr


def test_rotated_certificate_is_served_without_restart(pki: Path, ca: CertificateAuthority) -> None:
    # Its own server and files: rotating the module server's certificate would fail whichever
    # of this module's tests ran after it.
    identity = ca.issue(pki, "rotating server", dns_names=("localhost",), ips=("127.0.0.1",), stem="rotating-server")
    server = start_tls_server("--tls-cert", str(identity.cert), "--tls-key", str(identity.key),
                              client={"root_ca": ca.cert})
    try:
        pid = server.process.pid if server.process else None
        # A new CA and a certificate for a name the old one lacks, over the same files.
        new_ca = CertificateAuthority.create(pki, "rotated CA")
        new_ca.issue(pki, "rotated", dns_names=("rnn.rotated.test",), stem=identity.cert.stem)
        assert identity.cert.exists() and identity.key.exists()
        # Each new connection's handshake asks the server, which re-reads the changed files.
        with SentimentClient(server.target, root_ca=new_ca.cert, server_name="rnn.rotated.test",
                             timeout=30) as client:
            assert client.predict(TEXT).predictions[0].label == "positive"
        assert server.process is not None and server.process.poll() is None and server.process.pid == pid
        assert "TLS certificates reloaded" in server.log()
    finally:
        assert server.stop() == 0, server.log()


def test_mutual_tls_requires_a_client_certificate_from_the_ca(pki: Path, ca: CertificateAuthority) -> None:
    server_identity = ca.issue(pki, "mtls server", dns_names=("localhost",), ips=("127.0.0.1",))
    client_identity = ca.issue(pki, "caller", client=True)
    stranger = CertificateAuthority.create(pki, "untrusted client CA").issue(pki, "intruder", client=True)
    trusted = {"root_ca": ca.cert, "client_cert": client_identity.cert, "client_key": client_identity.key}
    server = start_tls_server("--tls-cert", str(server_identity.cert), "--tls-key", str(server_identity.key),
                              "--tls-client-ca", str(ca.cert), client=trusted)
    try:
        with SentimentClient(server.target, timeout=30, **trusted) as client:
            assert client.predict(TEXT).predictions[0].label == "positive"
        for settings in ({"root_ca": ca.cert},
                         {"root_ca": ca.cert, "client_cert": stranger.cert, "client_key": stranger.key}):
            with SentimentClient(server.target, timeout=10, retry=False, **settings) as client:
                with pytest.raises(SentimentError) as refused:
                    client.predict(TEXT)
            assert refused.value.code == "UNAVAILABLE", settings
        assert "mutual" in server.log()
    finally:
        assert server.stop() == 0, server.log()


def test_bad_tls_settings_stop_the_start_with_the_fix(pki: Path, ca: CertificateAuthority) -> None:
    other = ca.issue(pki, "other", dns_names=("localhost",))
    mismatched = ca.issue(pki, "mismatched", dns_names=("localhost",))
    command = [sys.executable, "-m", "rnn_sentiment.cli", "serve", "--address", "127.0.0.1:0", "--workers", "1"]
    cases = {
        ("--tls-cert", str(other.cert)): "tls_cert and tls_key go together",
        ("--tls-client-ca", str(ca.cert)): "needs the server's own --tls-cert",
        ("--tls-cert", str(pki / "missing.pem"), "--tls-key", str(other.key)): "is not a readable file",
        ("--tls-cert", str(other.cert), "--tls-key", str(mismatched.key)): "matching unencrypted private key",
        ("--tls-cert", str(other.cert), "--tls-key", str(other.key), "--tls-client-ca", str(other.key)):
            "not a PEM CA certificate bundle",
    }
    for args, message in cases.items():
        result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
