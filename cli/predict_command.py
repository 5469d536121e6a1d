"""`rnn-sentiment predict`: score texts given as arguments or streamed from stdin, for pipelines.

Texts from stdin are read lazily and scored through `predict_many` (chunks under the server's
limit, a few requests in flight), and each answer is written as soon as it arrives, in input
order: a million-line file runs in constant memory. Output is a table, JSON lines or CSV.
Exit codes: 0 all scored, 1 the server refused or failed a call, 2 bad usage or bad input.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import sys
from collections import deque
from dataclasses import asdict, dataclass
from typing import IO, TYPE_CHECKING, Any, Iterable, Iterator

if TYPE_CHECKING:
    from rnn_sentiment.client import SentimentClient
    from rnn_sentiment.client.results import Prediction

INPUT_FORMATS = ("auto", "lines", "jsonl")
OUTPUT_FORMATS = ("table", "jsonl", "csv")
CSV_COLUMNS = ("text", "label", "score", "probabilities", "token_count", "unknown_token_count", "truncated")
PROGRESS_EVERY = 256  # texts between redraws of the progress line
MAX_TRUNCATION_NOTES = 10  # a long stdin of long texts would otherwise bury stderr in notes

EXAMPLES = """\
input (stdin, when no TEXT is given): one text per line (blank lines skipped), or JSON lines
with a "text" field (--input jsonl; auto picks jsonl when the first line starts with "{").
JSON lines output keeps each input object's other fields (an id, say) beside the prediction.

exit codes: 0 every text scored; 1 the server refused or failed a call (message on stderr);
            2 bad usage or unreadable input (a line that is not JSON, no "text" field).

examples:
  rnn-sentiment predict "a warm, funny film" "a dull, lifeless movie"
  cut -f2 reviews.tsv | rnn-sentiment predict --format csv > scored.csv
  rnn-sentiment predict --format jsonl < reviews.jsonl | jq -c 'select(.label == "negative")'
  RNN_SENTIMENT_TARGET=sentiment.internal:50051 rnn-sentiment predict --batch-size 32 < texts.txt
"""


class InputError(Exception):
    """A line of stdin that cannot be read as the chosen input format (exit code 2)."""


@dataclass(frozen=True)
class Record:
    """One input text and, for JSON lines, the object it came in (echoed in JSON lines output)."""

    text: str
    fields: dict[str, Any]


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `predict` beyond the connection ones."""
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to score (none: read stdin)")
    parser.add_argument("--input", choices=INPUT_FORMATS, default="auto",
                        help="how stdin is read: lines, jsonl (a \"text\" field per object), auto (default)")
    parser.add_argument("--format", choices=OUTPUT_FORMATS, default="table", dest="output_format",
                        help="table (default), jsonl (one object per text) or csv (with a header)")
    parser.add_argument("--json", action="store_true",
                        help="the whole answer as one JSON document (TEXT arguments only)")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="texts per request (default and most: the server's limit)")


def records_from(lines: Iterable[str], input_format: str) -> Iterator[Record]:
    """The texts of stdin's lines, lazily; blank lines are skipped. Raises InputError on bad JSON."""
    numbered = ((number, line.rstrip("\r\n")) for number, line in enumerate(lines, start=1))
    nonblank = ((number, line) for number, line in numbered if line.strip())
    first = next(nonblank, None)
    if first is None:
        return
    if input_format == "auto":
        input_format = "jsonl" if first[1].lstrip().startswith("{") else "lines"
    for number, line in itertools.chain([first], nonblank):
        yield _json_record(number, line) if input_format == "jsonl" else Record(line, {})


def _json_record(number: int, line: str) -> Record:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        raise InputError(f"stdin line {number}: not JSON ({error.msg})") from None
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        raise InputError(f'stdin line {number}: expected an object with a "text" string field')
    return Record(value["text"], value)


class Progress:
    """A line on stderr counting texts scored, redrawn in place; silent unless stderr is a terminal."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._shown = stream.isatty()
        self.count = 0

    def advance(self) -> None:
        self.count += 1
        if self._shown and self.count % PROGRESS_EVERY == 0:
            self._stream.write(f"\r{self.count:,} texts scored")
            self._stream.flush()

    def finish(self) -> None:
        if self._shown and self.count >= PROGRESS_EVERY:
            self._stream.write(f"\r{self.count:,} texts scored\n")
            self._stream.flush()


class PredictionWriter:
    """Writes (record, prediction) pairs to stdout as a table, JSON lines or CSV."""

    def __init__(self, output_format: str, stream: IO[str]) -> None:
        self._format = output_format
        self._stream = stream
        self._csv = csv.writer(stream, lineterminator="\n") if output_format == "csv" else None
        if self._csv is not None:
            self._csv.writerow(CSV_COLUMNS)

    def write(self, record: Record, prediction: "Prediction") -> None:
        if self._format == "jsonl":
            self._stream.write(json.dumps({**record.fields, "text": record.text, **asdict(prediction)}) + "\n")
        elif self._csv is not None:
            values = {"text": record.text, **asdict(prediction)}
            values["probabilities"] = " ".join(f"{p:.6f}" for p in prediction.probabilities)
            self._csv.writerow([values[column] for column in CSV_COLUMNS])
        else:
            self._stream.write(f"{prediction.label:<8} {prediction.score:.3f}  {record.text}\n")


def run_predict(client: "SentimentClient", args: argparse.Namespace) -> int:
    """Score args.texts, or stdin's texts when none are given; the exit code."""
    if args.batch_size is not None and args.batch_size < 1:
        print(f"error: --batch-size must be at least 1, got {args.batch_size}", file=sys.stderr)
        return 2
    if args.json:
        if not args.texts:
            print("error: --json takes TEXT arguments; for stdin use --format jsonl", file=sys.stderr)
            return 2
        return _print_whole_answer(client, args)
    from_stdin = not args.texts
    records = records_from(sys.stdin, args.input) if from_stdin else (Record(t, {}) for t in args.texts)
    pending: deque[Record] = deque()

    def texts() -> Iterator[str]:
        for record in records:
            pending.append(record)
            yield record.text

    writer = PredictionWriter(args.output_format, sys.stdout)
    progress = Progress(sys.stderr)
    truncated: list[tuple[str, "Prediction"]] = []
    try:
        for index, prediction in enumerate(client.predict_many(texts(), model=args.model, batch_size=args.batch_size)):
            # predict_many answers in input order, so the oldest pending record is this one's.
            writer.write(pending.popleft(), prediction)
            progress.advance()
            if prediction.truncated and len(truncated) < MAX_TRUNCATION_NOTES:
                single = not from_stdin and len(args.texts) == 1
                truncated.append(("the text" if single else f"text {index + 1}", prediction))
    except InputError as error:
        sys.stdout.flush()
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader stopped (`| head`): not an error. Point stdout at /dev/null so the
        # interpreter's final flush does not fail on the closed pipe (Python's signal docs).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        progress.finish()
    if truncated and args.output_format == "table":  # jsonl and csv carry `truncated` themselves
        from .truncation_notice import print_truncation_notes

        names, predictions = zip(*truncated)
        print_truncation_notes(list(predictions), lambda: client.model_info(args.model), list(names))
    return 0


def _print_whole_answer(client: "SentimentClient", args: argparse.Namespace) -> int:
    """`--json`: one Predict and the whole answer as one JSON document (the original output)."""
    result = client.predict(args.texts, model=args.model)
    print(json.dumps(asdict(result), indent=2))
    return 0
