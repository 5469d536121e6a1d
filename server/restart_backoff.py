"""When the supervisor restarts a crashed worker: at once-ish, then ever later, never giving up.

A worker that crashes again and again (a bad checkpoint, an out-of-memory kill on every
start) is restarted after 0.5 s, 1 s, 2 s, ... up to a cap, forever: the other workers keep
serving meanwhile, and the crash loop shows in the log and in
`rnn_sentiment_worker_restarts_total`. Once a worker has run healthily for a while, its next
crash starts the sequence afresh.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RestartBackoff:
    initial_seconds: float  # the wait before the first restart of a crash series
    max_seconds: float  # the cap of the doubling
    healthy_after_seconds: float  # a run this long ends a crash series
    crashes_in_a_row: int = 0

    def delay_after_crash(self, ran_seconds: float) -> float:
        """The wait before restarting a worker that crashed after running `ran_seconds`."""
        if ran_seconds >= self.healthy_after_seconds:
            self.crashes_in_a_row = 0
        delay = min(self.max_seconds, self.initial_seconds * 2 ** min(self.crashes_in_a_row, 32))
        self.crashes_in_a_row += 1
        return delay
