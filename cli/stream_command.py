"""`rnn-sentiment stream`: the running sentiment of text read from stdin as it arrives.

Each read of stdin (whatever has arrived: a keystroke, a word, a line) is one chunk of a
StreamSentiment stream. On a terminal one line is redrawn in place after every chunk (label,
positive probability, a bar, tokens read); otherwise one line per update is printed (or a JSON
object per line with --json). At the end of input the whole text's prediction is printed.
When stdin is a terminal it is put in cbreak mode, so each keystroke is sent as typed (Ctrl-D
ends the text; the stream only appends, so a backspace is read as nothing).
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import json
import os
import sys
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from rnn_sentiment.client import SentimentClient
    from rnn_sentiment.client.results import StreamUpdate

READ_BYTES = 4096
BAR_WIDTH = 20
SHOWN_TEXT_CHARS = 40  # the tail of the text read, shown on the terminal line
END_OF_TEXT = "\x04"  # Ctrl-D: with the terminal in cbreak mode it arrives as a character
ERASED = "\x7f\x08"  # backspace keys: nothing to send, a stream cannot take text back
CLEAR_LINE = "\r\x1b[2K"
NOTHING_YET = "…        (no tokens yet)"


@dataclass(frozen=True)
class Shown:
    """One update as the command shows it."""

    label: str  # "" before the first token
    positive: float | None
    tokens: int
    final: bool
    steps: tuple[tuple[str, float], ...]  # (token, change of the positive probability)

    def line(self, text_tail: str = "") -> str:
        if self.positive is None:
            head = NOTHING_YET
        else:
            filled = round(self.positive * BAR_WIDTH)
            head = (f"{self.label:<8} {self.positive:.3f} {'█' * filled}{'·' * (BAR_WIDTH - filled)} "
                    f"{self.tokens} token{'s' if self.tokens != 1 else ''}")
        if self.final:
            head = "final: " + head
        return f"{head}  {text_tail}" if text_tail else head

    def as_json(self) -> str:
        return json.dumps({"label": self.label, "positive": self.positive, "tokens": self.tokens,
                           "final": self.final, **({"steps": [list(s) for s in self.steps]} if self.steps else {})})


def shown(update: "StreamUpdate", positive_index: int) -> Shown:
    p = update.prediction
    return Shown(
        label=p.label if p else "", positive=p.probabilities[positive_index] if p else None,
        tokens=p.token_count if p else 0, final=update.final,
        steps=tuple((s.token, s.positive_delta) for s in update.steps),
    )


def read_chunks(stream: IO[bytes] | int) -> Iterator[str]:
    """Text from `stream` as it arrives: each read returns what is there, without waiting for a
    line; UTF-8 split across reads is joined. Ends at end of file or a Ctrl-D character."""
    fd = stream if isinstance(stream, int) else stream.fileno()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while True:
        data = os.read(fd, READ_BYTES)
        text = decoder.decode(data, final=not data)
        end = END_OF_TEXT in text
        text = text.split(END_OF_TEXT, 1)[0].translate({ord(c): None for c in ERASED})
        if text:
            yield text
        if end or not data:
            return


@contextlib.contextmanager
def keystrokes(fd: int) -> Iterator[None]:
    """A terminal's input in cbreak mode (every key at once, no echo) for the duration."""
    if not os.isatty(fd):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run_stream(client: "SentimentClient", args: argparse.Namespace) -> int:
    labels = client.model_info(args.model).labels
    positive_index = labels.index("positive") if "positive" in labels else len(labels) - 1
    out = sys.stdout
    redraw = out.isatty() and not args.json
    text = ""

    def show(update: "StreamUpdate") -> None:
        view = shown(update, positive_index)
        if args.json:
            out.write(view.as_json() + "\n")
        elif redraw:
            tail = text.replace("\n", " ")[-SHOWN_TEXT_CHARS:]
            out.write(CLEAR_LINE + view.line(tail) + ("\n" if view.final else ""))
        else:
            out.write(view.line() + "\n")
            if args.steps:
                out.write("".join(f"  {token:<16} {delta:+.3f}\n" for token, delta in view.steps))
        out.flush()

    stdin_fd = sys.stdin.fileno()
    try:
        with client.stream(args.model, include_steps=args.steps or args.json) as stream, keystrokes(stdin_fd):
            if redraw:  # the line is there before the first key (and says the terminal is ready)
                out.write(CLEAR_LINE + NOTHING_YET + ("  (type; Ctrl-D ends)" if os.isatty(stdin_fd) else ""))
                out.flush()
            for chunk in read_chunks(stdin_fd):
                text += chunk
                show(stream.send(chunk))
            show(stream.close())
    except BaseException as error:
        if redraw:  # an error message or the shell prompt starts on a line of its own
            out.write("\n")
            out.flush()
        if isinstance(error, KeyboardInterrupt):
            return 130  # Ctrl-C: the text is abandoned, as a shell expects
        raise
    return 0
