"""TLS settings checked before the server starts (each problem with its fix), and certificate
files re-read at a handshake only when they changed, the previous set kept while a new one is
incomplete. The handshakes themselves run on a real server in tests/integration/test_tls.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc
import pytest

from rnn_sentiment.server.tls import ReloadingCertificates, TlsFiles, tls_files, tls_problems
from tests.certificates import CertificateAuthority, Identity, write_atomically


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pki")


@pytest.fixture(scope="module")
def ca(pki: Path) -> CertificateAuthority:
    return CertificateAuthority.create(pki)


@pytest.fixture(scope="module")
def server(pki: Path, ca: CertificateAuthority) -> Identity:
    return ca.issue(pki, "server", dns_names=("localhost",))


def test_no_tls_settings_mean_plaintext_and_no_problem() -> None:
    assert tls_problems("", "", "") == []
    assert tls_files("", "", "") is None


def test_usable_settings_have_no_problem(server: Identity, ca: CertificateAuthority) -> None:
    assert tls_problems(str(server.cert), str(server.key), "") == []
    assert tls_problems(str(server.cert), str(server.key), str(ca.cert)) == []


def test_incomplete_settings_are_refused_with_the_fix(server: Identity, ca: CertificateAuthority) -> None:
    together = ["tls_cert and tls_key go together: give both (--tls-cert server.pem --tls-key server.key)"]
    assert tls_problems(str(server.cert), "", "") == together
    assert tls_problems("", str(server.key), "") == together
    assert tls_problems("", str(server.key), str(ca.cert)) == together
    assert tls_problems("", "", str(ca.cert)) == [
        "tls_client_ca (mutual TLS) needs the server's own --tls-cert and --tls-key"]


def test_every_unreadable_file_is_named(server: Identity, pki: Path) -> None:
    missing = str(pki / "missing.pem")
    assert tls_problems(missing, str(server.key), "") == [f"tls_cert={missing!r} is not a readable file"]
    assert tls_problems(str(server.cert), missing, missing) == [
        f"tls_key={missing!r} is not a readable file", f"tls_client_ca={missing!r} is not a readable file"]


def test_a_mismatched_key_or_a_bad_ca_bundle_is_named_with_the_ssl_reason(
    server: Identity, ca: CertificateAuthority, pki: Path
) -> None:
    other = ca.issue(pki, "other", dns_names=("localhost",))
    assert tls_problems(str(server.cert), str(other.key), "") == [
        f"tls_cert={str(server.cert)!r} / tls_key={str(other.key)!r}: not a PEM certificate chain and its "
        "matching unencrypted private key (KEY_VALUES_MISMATCH)"]
    assert tls_problems(str(server.cert), str(server.key), str(server.key)) == [
        f"tls_client_ca={str(server.key)!r}: not a PEM CA certificate bundle (NO_CERTIFICATE_OR_CRL_FOUND)"]


def test_the_configured_files_and_mutual_tls_only_with_a_client_ca(server: Identity, ca: CertificateAuthority) -> None:
    plain = tls_files(str(server.cert), str(server.key), "")
    assert plain == TlsFiles(server.cert, server.key, None)
    assert plain.paths == (server.cert, server.key)
    mutual = tls_files(str(server.cert), str(server.key), str(ca.cert))
    assert mutual == TlsFiles(server.cert, server.key, ca.cert)
    assert mutual.paths == (server.cert, server.key, ca.cert)


@pytest.mark.parametrize("mutual", [False, True])
def test_files_are_re_read_only_once_changed_and_a_half_rotation_keeps_the_old_set(
    tmp_path: Path, ca: CertificateAuthority, mutual: bool
) -> None:
    identity = ca.issue(tmp_path, "rotating", dns_names=("localhost",), stem="server")
    certificates = ReloadingCertificates(TlsFiles(identity.cert, identity.key, ca.cert if mutual else None))
    assert isinstance(certificates.initial, grpc.ServerCertificateConfiguration)
    assert certificates.fetch() is None  # unchanged: the handshake keeps the current set
    assert certificates.fetch() is None

    # A key rotated before its certificate: the pair does not match yet; the old set serves.
    newer = ca.issue(tmp_path, "newer", dns_names=("localhost",), stem="newer")
    write_atomically(identity.key, newer.key.read_bytes())
    assert certificates.fetch() is None
    write_atomically(identity.cert, newer.cert.read_bytes())
    reloaded = certificates.fetch()
    assert isinstance(reloaded, grpc.ServerCertificateConfiguration)  # the complete new pair, once
    assert certificates.fetch() is None

    # A half-written certificate: kept out; its completed rewrite is taken.
    write_atomically(identity.cert, newer.cert.read_bytes()[:100])
    assert certificates.fetch() is None
    write_atomically(identity.cert, newer.cert.read_bytes())
    assert certificates.fetch() is not None


def test_a_vanished_file_keeps_the_old_set(tmp_path: Path, ca: CertificateAuthority) -> None:
    identity = ca.issue(tmp_path, "vanishing", dns_names=("localhost",), stem="server")
    certificates = ReloadingCertificates(TlsFiles(identity.cert, identity.key))
    identity.cert.rename(tmp_path / "parked.pem")
    assert certificates.fetch() is None
    (tmp_path / "parked.pem").rename(identity.cert)


def test_unusable_files_at_start_are_an_error(tmp_path: Path, ca: CertificateAuthority, server: Identity) -> None:
    other = ca.issue(tmp_path, "other", dns_names=("localhost",))
    with pytest.raises(ValueError, match="KEY_VALUES_MISMATCH"):
        ReloadingCertificates(TlsFiles(server.cert, other.key))


def test_the_configured_files_are_a_value_that_cannot_change_under_the_server(server: Identity) -> None:
    files = tls_files(str(server.cert), str(server.key), "")
    assert {files: "served"}[TlsFiles(server.cert, server.key)] == "served"
    with pytest.raises(dataclasses.FrozenInstanceError):
        files.cert = server.key  # type: ignore[misc]


def test_a_directory_given_as_a_file_is_a_problem_not_a_crash(server: Identity, pki: Path) -> None:
    directory = pki / "a-directory"
    directory.mkdir(exist_ok=True)
    assert tls_problems(str(directory), str(server.key), "") == ["[Errno 21] Is a directory"]
