"""Start a server under test on loopback, wait until it answers, stop exactly what was started.

Each server runs in its own new session (process group), so stopping it reaches the workers
it spawned and nothing else. Every started server is also stopped when the benchmark exits.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from .procstat import tree_pids
from .wire import grpc_frame

_running: list["ServerProcess"] = []


def free_port() -> int:
    """A loopback port free right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """A server command started in its own process group, with its output in `log_path`."""

    def __init__(self, name: str, command: Sequence[str], log_path: Path, *, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.command = list(command)
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT,
                                        env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
        self.pgid = self.process.pid  # start_new_session: the leader's pid is the group id
        _running.append(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the group, wait, then SIGKILL what is left of it (only our own processes)."""
        if self in _running:
            _running.remove(self)
        pids = tree_pids(self.pid) if self.alive() else []
        try:
            os.killpg(self.pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        # Descendants that left the group (a daemonizing peer) are still ours: we recorded them.
        for pid in pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and _exists(pid):
                time.sleep(0.1)
            if _exists(pid):
                os.kill(pid, signal.SIGKILL)
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait(timeout=10)
        self._log.close()


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of ours still "exists" until reaped; treat it as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _stop_all() -> None:
    for server in list(_running):
        try:
            server.stop(grace_s=5)
        except Exception:  # exiting anyway; keep stopping the others
            pass


atexit.register(_stop_all)


def stop_servers_on_signals() -> None:
    """Turn SIGTERM/SIGHUP into a normal exit, so the servers started are stopped (atexit) then too."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))


def raw_unary(target: str, method: str, message: bytes, timeout: float = 5.0,
              metadata: Sequence[tuple[str, str]] = ()) -> bytes:
    """Call a unary method with an already serialized request; return the serialized response."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        return call(message, timeout=timeout, metadata=list(metadata) or None)


def wait_until_answering(server: ServerProcess, target: str, method: str, message: bytes,
                         timeout_s: float = 120.0, ready: Callable[[], bool] | None = None,
                         metadata: Sequence[tuple[str, str]] = ()) -> int:
    """Poll until `ready()` (if given) and a real call succeed; return one answer's body size.

    The size is that of the whole gRPC body (5-byte prefix included), as h2load counts it.
    """
    deadline = time.monotonic() + timeout_s
    last_error = ""
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited ({server.process.returncode}):\n{server.log_tail()}")
        if ready is None or ready():
            try:
                answer = raw_unary(target, method, message, metadata=metadata)
                return len(grpc_frame(answer))
            except grpc.RpcError as error:
                last_error = f"{error.code()}: {error.details()}"
        time.sleep(0.25)
    raise RuntimeError(f"{server.name} did not answer within {timeout_s:.0f} s ({last_error}):\n{server.log_tail()}")


def serving_workers(log_path: Path) -> int:
    """How many of our server's processes logged "serving" (JSON log lines)."""
    pids = set()
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return 0
    for line in lines:
        if '"serving"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("message") == "serving":
            pids.add(entry.get("pid"))
    return len(pids)
