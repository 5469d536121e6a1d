"""predict_many through a real nginx load balancer while one of its two replicas drains.

The drained replica answers UNAVAILABLE to calls arriving after the drain began (never
CANCELLED), finishes the ones it holds, and exits; the SDK's default retry policy re-sends the
refused calls, which nginx balances onto the other replica. The caller must see 0 errors and
every prediction, in order.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import pytest

from rnn_sentiment.client import SentimentClient
from tests.support import ServerProcess, free_port
from tests.system.stack import DEFAULT_LB, DEFAULT_REPLICAS, DEPLOY, BackgroundProcess, render_config, require_commands

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPLICA_ARGS = ["--drain-seconds", "2", "--max-texts-per-request", "8"]
TEXTS = ("a warm , funny and beautifully acted film", "a dull , lifeless and boring movie")
LABELS = ("positive", "negative")
TEXTS_BEFORE_DRAIN = 400
TEXTS_AFTER_EXIT = 400  # the loop goes on this long once the drained replica has exited
MOST_TEXTS = 200_000  # a bound on the loop, whatever happens


class DrainDuringLoop:
    """The texts predict_many reads; at TEXTS_BEFORE_DRAIN it drains a replica in a thread, and
    it ends TEXTS_AFTER_EXIT texts after that replica has exited."""

    def __init__(self, replica: ServerProcess) -> None:
        self.replica = replica
        self.sent = 0
        self.sent_when_exited: int | None = None
        self.exit_code: int | None = None
        self._drainer = threading.Thread(target=self._drain, daemon=True)

    def _drain(self) -> None:
        self.exit_code = self.replica.stop()  # SIGTERM: drain, then exit
        self.sent_when_exited = self.sent

    def texts(self) -> Iterator[str]:
        while self.sent < MOST_TEXTS:
            if self.sent == TEXTS_BEFORE_DRAIN:
                self._drainer.start()
            exited = self.sent_when_exited
            if exited is not None and self.sent >= exited + TEXTS_AFTER_EXIT:
                return
            yield TEXTS[self.sent % 2]
            self.sent += 1


def test_predict_many_sees_no_error_while_a_replica_drains_behind_nginx(tmp_path: Path) -> None:
    nginx_path = require_commands("nginx")["nginx"]
    replicas = [ServerProcess(extra_args=REPLICA_ARGS).start(wait=False) for _ in range(2)]
    lb_address = f"127.0.0.1:{free_port()}"
    nginx = None
    try:
        for replica in replicas:
            replica.wait_until_serving(timeout=120)
        nginx_dir = render_config(DEPLOY / "nginx", tmp_path / "nginx", {
            DEFAULT_LB: lb_address, **{d: r.target for d, r in zip(DEFAULT_REPLICAS, replicas)}})
        nginx_dir.chmod(0o755)  # workers run as another user when the master is root
        nginx = BackgroundProcess([nginx_path, "-p", f"{nginx_dir}/", "-e", str(nginx_dir / "error.log"),
                                   "-c", str(nginx_dir / "nginx.conf"), "-g", "daemon off;"],
                                  log_path=tmp_path / "nginx.log").start()
        loop = DrainDuringLoop(replicas[0])
        with SentimentClient(lb_address, timeout=30) as client:  # the SDK's default retry policy
            client.wait_until_serving(timeout=30)
            labels = [p.label for p in client.predict_many(loop.texts())]  # any error raises here
        print(f"\n[drain] {loop.sent} texts, replica exited after {loop.sent_when_exited}", end="")
        assert loop.exit_code == 0, replicas[0].log()
        assert loop.sent_when_exited is not None and loop.sent_when_exited > TEXTS_BEFORE_DRAIN
        assert labels == [LABELS[i % 2] for i in range(loop.sent)]
    except BaseException:
        if nginx is not None:
            print(f"---- nginx log ----\n{nginx.log()}")
        raise
    finally:
        if nginx is not None:
            nginx.stop()
        for replica in replicas:
            replica.stop()
