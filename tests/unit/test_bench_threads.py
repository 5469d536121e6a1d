"""bench/threads.py reads every thread's CPU time from /proc, by name."""

from __future__ import annotations

import os
import threading

from bench.threads import thread_cpu


def test_a_busy_python_thread_shows_under_its_own_name_and_the_main_thread_as_the_event_loop() -> None:
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    worker = threading.Thread(target=spin)
    worker.start()
    try:
        before = thread_cpu([os.getpid()])
        stop.wait(0.3)
        after = thread_cpu([os.getpid()])
    finally:
        stop.set()
        worker.join()
    assert "worker: event loop (main thread)" in after
    assert after["worker: model thread (and other Python threads)"] > before["worker: model thread (and other Python threads)"]
