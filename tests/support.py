"""Test support: start a real server process on a loopback port and stop exactly it; or a
scripted stand-in gRPC server inside the test process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Coroutine, Iterator, TypeVar

import grpc

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MODELS = REPO_ROOT / "model" / "checkpoints"
SST2_DIR = REPO_ROOT.parent / "shared" / "data" / "sst2"


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (free right now; tests start at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def stand_in_server(register: Callable[[grpc.Server], None], threads: int = 4) -> Iterator[str]:
    """A gRPC server in this process on a free loopback port, serving what `register` adds to it
    (a scripted stand-in for the real server, to see exactly what a client sends or how it takes
    an answer); yields its target and stops it at the end."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)


@dataclass
class ServerProcess:
    """`rnn-sentiment serve` as a child process, with its log in a temporary file."""

    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    keep_log: bool = False  # keep the log file after a clean stop (to read the last lines)
    port: int = 0
    metrics_port: int = 0
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, wait: bool = True) -> "ServerProcess":
        self.port = self.port or free_port()
        self.metrics_port = self.metrics_port or free_port()
        log_fd, log_name = tempfile.mkstemp(prefix="rnn-sentiment-server-", suffix=".log")
        self.log_path = Path(log_name)
        command = [
            sys.executable, "-m", "rnn_sentiment.cli", "serve",
            "--address", self.target,
            "--metrics-address", f"127.0.0.1:{self.metrics_port}",
            "--torch-threads", "1",
            # One process unless a test asks for workers: faster to start, simpler to reason about.
            *([] if "--workers" in self.extra_args else ["--workers", "1"]),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(
            command, stdout=log_fd, stderr=log_fd, env={**os.environ, **self.env}, cwd=REPO_ROOT
        )
        os.close(log_fd)
        if wait:
            self.wait_until_serving()
        return self

    def wait_until_serving(self, timeout: float = 60.0) -> None:
        from rnn_sentiment.client import SentimentClient, SentimentError

        with SentimentClient(self.target) as client:
            try:
                client.wait_until_serving(timeout=timeout)
            except SentimentError as error:
                raise RuntimeError(f"server did not become SERVING: {error}\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path else ""

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait, and return the exit code (kill if it does not exit in time)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        if code == 0 and self.log_path is not None and not self.keep_log:
            self.log_path.unlink(missing_ok=True)  # keep only the logs of failures
            self.log_path = None
        return code

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def write_untrained_checkpoint(directory: Path, name: str, version: str, cell: str = "gru", seed: int = 0) -> Path:
    """A real, loadable checkpoint with random weights: for tests about serving, not accuracy."""
    import torch

    from rnn_sentiment.model.checkpoint import save_checkpoint
    from rnn_sentiment.model.config import ModelConfig
    from rnn_sentiment.model.network import SentimentRNN
    from rnn_sentiment.model.vocabulary import Vocabulary

    torch.manual_seed(seed)
    vocab = Vocabulary.build([["a", "good", "bad", "film", "not", ".", ","]])
    config = ModelConfig(cell=cell, embedding_dim=8, hidden_size=8, num_layers=1, bidirectional=False,
                         pooling="last", dropout=0.0)
    save_checkpoint(directory, SentimentRNN(config, vocab_size=len(vocab)), vocab, config, name=name, version=version)
    return directory


def write_tiny_gru_and_lstm(directory: Path) -> Path:
    """Two untrained models, tiny-gru and tiny-lstm, under `directory` (in-process server tests)."""
    write_untrained_checkpoint(directory / "tiny-gru", "tiny-gru", "1", cell="gru")
    write_untrained_checkpoint(directory / "tiny-lstm", "tiny-lstm", "1", cell="lstm", seed=2)
    return directory


T = TypeVar("T")


class LoopThread:
    """An event loop on a thread of its own: coroutines (an in-process server, the asyncio SDK)
    run from blocking test code, and what they make lives between calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()
