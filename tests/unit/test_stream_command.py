"""cli/stream_command.py without a server: how stdin becomes chunks, and how an update is drawn."""

from __future__ import annotations

import os
import threading

from rnn_sentiment.cli.stream_command import BAR_WIDTH, Shown, read_chunks


def chunks_of(*writes: bytes) -> list[str]:
    """What read_chunks yields when `writes` arrive on a pipe one after the other."""
    read_end, write_end = os.pipe()
    arrived = threading.Semaphore(0)
    chunks: list[str] = []

    def reader() -> None:
        for chunk in read_chunks(read_end):
            chunks.append(chunk)
            arrived.release()

    thread = threading.Thread(target=reader)
    thread.start()
    for data in writes:
        os.write(write_end, data)
        if b"\x04" not in data:  # each write is read on its own: no line buffering
            assert arrived.acquire(timeout=10)
    os.close(write_end)
    thread.join(10)
    os.close(read_end)
    return chunks


def test_each_write_is_a_chunk_without_waiting_for_a_newline() -> None:
    assert chunks_of(b"the plot is du", b"ll but", b" the acting\n") == ["the plot is du", "ll but", " the acting\n"]


def test_utf8_split_across_reads_is_joined() -> None:
    text = "naïve café".encode()
    split = text.index("ï".encode()) + 1  # inside the two bytes of ï
    chunks = chunks_of(text[:split], text[split:])
    assert "".join(chunks) == "naïve café"
    assert all("\ufffd" not in c for c in chunks)


def test_ctrl_d_ends_the_text_and_backspace_sends_nothing() -> None:
    assert chunks_of(b"good\x7f film", b" ok\x04ignored") == ["good film", " ok"]


def test_the_running_line() -> None:
    line = Shown(label="negative", positive=0.25, tokens=4, final=False, steps=()).line("plot is dull")
    assert line == f"negative 0.250 {'█' * 5}{'·' * (BAR_WIDTH - 5)} 4 tokens  plot is dull"
    final = Shown(label="positive", positive=0.957, tokens=1, final=True, steps=()).line()
    assert final.startswith("final: positive 0.957 ") and final.endswith(" 1 token")
    assert "no tokens yet" in Shown(label="", positive=None, tokens=0, final=False, steps=()).line()
