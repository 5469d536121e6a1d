"""TLS and mutual TLS for the gRPC port, with certificate files re-read without a restart.

gRPC asks `ReloadingCertificates.fetch` at every new connection's handshake; it re-reads the
files only when one of them changed (size, mtime or inode: an atomic rename counts), checks the
new set with Python's `ssl` before handing it over, and keeps serving the previous set when the
new one is incomplete or broken (a key rotated before its certificate, a half-written file).
Connections already open keep the certificate they shook hands with.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger("rnn_sentiment.server.tls")


@dataclass(frozen=True)
class TlsFiles:
    """Where the server's PEM files are; `client_ca` set means mutual TLS."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key) + ((self.client_ca,) if self.client_ca else ())


@dataclass(frozen=True)
class _LoadedCertificates:
    signature: tuple[tuple[int, int, int], ...]  # (size, mtime_ns, inode) per file
    configuration: grpc.ServerCertificateConfiguration


def tls_problems(cert: str, key: str, client_ca: str) -> list[str]:
    """What is wrong with these TLS settings, each with its fix; [] when they are usable."""
    if not (cert or key or client_ca):
        return []
    if bool(cert) != bool(key):
        return ["tls_cert and tls_key go together: give both (--tls-cert server.pem --tls-key server.key)"]
    if client_ca and not cert:
        return ["tls_client_ca (mutual TLS) needs the server's own --tls-cert and --tls-key"]
    problems = []
    for name, path in (("tls_cert", cert), ("tls_key", key), ("tls_client_ca", client_ca)):
        if path and not os.access(path, os.R_OK):
            problems.append(f"{name}={path!r} is not a readable file")
    if problems:
        return problems
    try:
        check_certificates(TlsFiles(Path(cert), Path(key), Path(client_ca) if client_ca else None))
    except (ssl.SSLError, OSError, ValueError) as error:
        problems.append(str(error))
    return problems


def check_certificates(files: TlsFiles) -> None:
    """Raise ValueError unless the key matches the certificate and the CA bundle parses."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(files.cert), str(files.key))
    except ssl.SSLError as error:
        raise ValueError(
            f"tls_cert={str(files.cert)!r} / tls_key={str(files.key)!r}: not a PEM certificate chain and its "
            f"matching unencrypted private key ({error.reason or error})"
        ) from None
    if files.client_ca is not None:
        try:
            context.load_verify_locations(cafile=str(files.client_ca))
        except ssl.SSLError as error:
            raise ValueError(
                f"tls_client_ca={str(files.client_ca)!r}: not a PEM CA certificate bundle ({error.reason or error})"
            ) from None


class ReloadingCertificates:
    """The server's certificate configuration, re-read when its files change."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._lock = threading.Lock()  # gRPC may call fetch from several of its threads
        self._current = self._load()

    @property
    def initial(self) -> grpc.ServerCertificateConfiguration:
        return self._current.configuration

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's per-handshake question: a new configuration, or None to keep the current one."""
        with self._lock:
            try:
                if self._signature() == self._current.signature:
                    return None
                loaded = self._load()
            except (OSError, ValueError) as error:
                # Mid-rotation (one file replaced, not yet the other) or a broken file: keep the
                # working set and ask again at the next handshake.
                log.warning("TLS certificate files changed but cannot be used yet; keeping the previous ones",
                            extra={"fields": {"error": str(error)}})
                return None
            self._current = loaded
        log.info("TLS certificates reloaded", extra={"fields": {"cert": str(self.files.cert)}})
        return loaded.configuration

    def _signature(self) -> tuple[tuple[int, int, int], ...]:
        stats = [path.stat() for path in self.files.paths]
        return tuple((s.st_size, s.st_mtime_ns, s.st_ino) for s in stats)

    def _load(self) -> _LoadedCertificates:
        signature = self._signature()
        key, cert = self.files.key.read_bytes(), self.files.cert.read_bytes()
        client_ca = self.files.client_ca.read_bytes() if self.files.client_ca else None
        check_certificates(self.files)
        # Unchanged since before the read: the bytes read are the ones just checked.
        if self._signature() != signature:
            raise ValueError("the certificate files changed while being read")
        configuration = grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=client_ca)
        return _LoadedCertificates(signature, configuration)


def server_credentials(certificates: ReloadingCertificates) -> grpc.ServerCredentials:
    """Credentials whose certificates follow the files; client certificates required for mTLS."""
    return grpc.dynamic_ssl_server_credentials(
        certificates.initial,
        certificates.fetch,
        require_client_authentication=certificates.files.client_ca is not None,
    )


def tls_files(cert: str, key: str, client_ca: str) -> TlsFiles | None:
    """The configured files, or None for a plaintext port."""
    if not cert:
        return None
    return TlsFiles(Path(cert), Path(key), Path(client_ca) if client_ca else None)


def add_grpc_port(server: grpc.aio.Server, address: str, files: TlsFiles | None) -> int:
    """Bind `address` over TLS when `files` are given (mutual TLS with a client CA), else plaintext."""
    if files is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, server_credentials(ReloadingCertificates(files)))
