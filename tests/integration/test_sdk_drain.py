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
from tests.support import ServerProcess
from tests.system.stack import nginx_over_two_replicas

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
    with nginx_over_two_replicas(tmp_path, REPLICA_ARGS) as stack:
        replicas = stack.replicas
        loop = DrainDuringLoop(replicas[0])
        with SentimentClient(stack.lb_address, timeout=30) as client:  # the SDK's default retry policy
            client.wait_until_serving(timeout=30)
            labels = [p.label for p in client.predict_many(loop.texts())]  # any error raises here
        print(f"\n[drain] {loop.sent} texts, replica exited after {loop.sent_when_exited}", end="")
        assert loop.exit_code == 0, replicas[0].log()
        assert loop.sent_when_exited is not None and loop.sent_when_exited > TEXTS_BEFORE_DRAIN
        assert labels == [LABELS[i % 2] for i in range(loop.sent)]
