"""Record `rnn-sentiment stream` being typed into, and draw it: docs/images/stream-typing.svg.

    .venv/bin/rnn-sentiment serve &        # the shipped models
    .venv/bin/python scripts/stream_picture.py [--target 127.0.0.1:50051] [--text "..."]

The real command runs under a pseudo-terminal; the sentence is typed into it a word at a time
and every redraw of its running line is read back, so the picture shows what a person typing
sees: the sentiment after each word, flipping as the sentence turns.
"""

from __future__ import annotations

import argparse
import os
import pty
import re
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from html import escape
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
OUTPUT = REPO_ROOT / "docs" / "images" / "stream-typing.svg"
TEXT = "the plot is dull but the acting is wonderful"
LINE = re.compile(r"(final: )?(positive|negative) (\d\.\d{3}) [█·]+ (\d+) tokens?")
REDRAW = "\r\x1b[2K"


@dataclass(frozen=True)
class Frame:
    typed: str
    label: str
    positive: float
    tokens: int
    final: bool


def record(target: str, text: str, timeout: float = 30.0) -> list[Frame]:
    """Type `text` word by word into `rnn-sentiment stream`; one frame per redraw read back."""
    master, slave = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "rnn_sentiment.cli", "stream", "--target", target],
                               stdin=slave, stdout=slave, cwd=REPO_ROOT)
    os.close(slave)
    screen = ""

    def read_until(done) -> None:  # type: ignore[no-untyped-def]
        nonlocal screen
        deadline = time.monotonic() + timeout
        while not done(screen):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"no redraw within {timeout:g} s: {screen!r}")
            if select.select([master], [], [], remaining)[0]:
                screen += os.read(master, 4096).decode(errors="replace")

    def states() -> list[re.Match[str]]:
        return [m for part in screen.split(REDRAW) if (m := LINE.search(part))]

    frames = []
    try:
        read_until(lambda s: "Ctrl-D ends" in s)
        words = text.split(" ")
        for index, word in enumerate(words):
            last = index == len(words) - 1
            os.write(master, (word if last else word + " ").encode())
            if last:
                os.write(master, b"\x04")
                read_until(lambda s: "final:" in s)
            else:
                read_until(lambda s: any(int(m[4]) >= index + 1 for m in states()))
            match = states()[-1]
            frames.append(Frame(" ".join(words[:index + 1]), match[2], float(match[3]), int(match[4]),
                                bool(match[1])))
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    return frames


def svg(frames: list[Frame], target_note: str) -> str:
    row, width, bar_x, bar_w = 26, 960, 430, 260
    height = 60 + row * len(frames) + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="14">',
        f'<rect width="{width}" height="{height}" rx="8" fill="#1e1e1e"/>',
        '<text x="20" y="28" fill="#9cdcfe">$ rnn-sentiment stream</text>',
        f'<text x="{width - 20}" y="28" fill="#808080" text-anchor="end">{escape(target_note)}</text>',
    ]
    for i, f in enumerate(frames):
        y = 60 + row * i
        color = "#4ec94e" if f.label == "positive" else "#f14c4c"
        parts += [
            f'<text x="20" y="{y}" fill="#d4d4d4">{escape(f.typed)}{"" if f.final else "▏"}</text>',
            f'<rect x="{bar_x}" y="{y - 13}" width="{bar_w}" height="16" fill="#333333"/>',
            f'<rect x="{bar_x}" y="{y - 13}" width="{bar_w * f.positive:.1f}" height="16" fill="{color}"/>',
            f'<line x1="{bar_x + bar_w / 2}" y1="{y - 16}" x2="{bar_x + bar_w / 2}" y2="{y + 5}" stroke="#808080"/>',
            f'<text x="{bar_x + bar_w + 12}" y="{y}" fill="{color}">{"final " if f.final else ""}{f.label} '
            f'{f.positive:.3f}</text>',
            f'<text x="{width - 20}" y="{y}" fill="#808080" text-anchor="end">{f.tokens} tok</text>',
        ]
    parts += [f'<text x="20" y="{height - 16}" fill="#808080">P(positive) after each word as it is typed; '
              'the last word is read at the end of input (Ctrl-D)</text>', "</svg>"]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--text", default=TEXT)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    frames = record(args.target, args.text)
    from rnn_sentiment.client import SentimentClient

    with SentimentClient(args.target) as client:
        info = client.model_info()
    args.output.write_text(svg(frames, f"{info.name} {info.version}"))
    for f in frames:
        print(f"{f.typed:<48} {f.label:<8} {f.positive:.3f} {f.tokens}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
