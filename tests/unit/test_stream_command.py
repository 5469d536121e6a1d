"""cli/stream_command.py without a server: how stdin becomes chunks, and how an update is drawn."""

from __future__ import annotations

import json
import os
import threading

from rnn_sentiment.cli.stream_command import BAR_WIDTH, Shown, read_chunks, shown
from rnn_sentiment.client.results import Prediction, StreamUpdate, TraceStep


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


def test_the_bar_is_twenty_characters_filled_by_the_positive_probability() -> None:
    # docs/streaming.md: "a 20-character bar"
    for positive, filled in ((0.0, 0), (0.5, 10), (0.96, 19), (1.0, 20)):
        line = Shown(label="positive", positive=positive, tokens=2, final=False, steps=()).line()
        bar = line.split()[2]
        assert bar == "█" * filled + "·" * (20 - filled), positive
    assert Shown(label="negative", positive=0.1, tokens=2, final=False, steps=()).line().endswith(" 2 tokens")


def test_json_carries_the_documented_fields_and_steps_only_when_there_are_some() -> None:
    with_steps = Shown(label="negative", positive=0.25, tokens=3, final=True, steps=(("dull", -0.5),))
    assert json.loads(with_steps.as_json()) == {"label": "negative", "positive": 0.25, "tokens": 3, "final": True,
                                                "steps": [["dull", -0.5]]}
    before_any_token = Shown(label="", positive=None, tokens=0, final=False, steps=())
    assert json.loads(before_any_token.as_json()) == {"label": "", "positive": None, "tokens": 0, "final": False}


def _update(probabilities: tuple[float, ...] | None, final: bool = False) -> StreamUpdate:
    prediction = None if probabilities is None else Prediction(
        "good", max(probabilities), probabilities, token_count=3, unknown_token_count=0, truncated=False)
    step = TraceStep("fine", True, (), 0.0, (0.4, 0.6), 0.2)
    return StreamUpdate(prediction, (step,), "m", "1", final)


def test_an_update_is_shown_with_the_positive_labels_probability() -> None:
    view = shown(_update((0.1, 0.7, 0.2), final=True), positive_index=1)
    assert view == Shown(label="good", positive=0.7, tokens=3, final=True, steps=(("fine", 0.2),))
    assert shown(_update(None), positive_index=1) == Shown(label="", positive=None, tokens=0, final=False,
                                                            steps=(("fine", 0.2),))


def test_a_read_ends_the_chunks_at_end_of_file_even_without_ctrl_d() -> None:
    assert chunks_of(b"a whole ", b"text") == ["a whole ", "text"]
    assert "".join(chunks_of(b"caf\xc3")) == "caf\ufffd"  # cut inside a character: still ends, marked
