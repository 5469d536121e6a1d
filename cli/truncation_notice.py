"""The note on stderr when a text was longer than its model reads: how much was read, what was dropped.

On stderr, so stdout stays the same for pipelines; `--json` carries `truncated` and
`text_token_count` instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from rnn_sentiment.client.errors import SentimentError
from rnn_sentiment.client.results import ModelInfo, Prediction

__all__ = ["truncation_note", "print_truncation_notes"]


def truncation_note(prediction: Prediction, info: ModelInfo | None, which: str) -> str:
    """One line: the tokens read of the text's tokens, and which part was dropped, e.g.
    "note: text 1 has 1,433 tokens; sst2-gru read 512 (the first 128 and the last 384) and
    dropped the middle 921 (its --max-tokens limit; see docs/models.md#long-texts)"."""
    read = prediction.token_count
    total = max(prediction.text_token_count, read)
    dropped = total - read
    if info is None:  # the model could not be described: say what the prediction alone tells
        return f"note: {which} has {total:,} tokens; the model read {read:,} and dropped {dropped:,}"
    if info.truncation == "head_tail" and info.truncation_head_tokens < read:
        head = info.truncation_head_tokens
        kept = f"the first {head:,} and the last {read - head:,}" if head else f"the last {read:,}"
        part = f"the middle {dropped:,}" if head else f"the first {dropped:,}"
    else:
        kept, part = f"the first {read:,}", f"the last {dropped:,}"
    return (f"note: {which} has {total:,} tokens; {info.name} read {read:,} ({kept}) and dropped {part} "
            f"(its --max-tokens limit; see docs/models.md#long-texts)")


def print_truncation_notes(predictions: Sequence[Prediction], info_of: Callable[[], ModelInfo],
                           names: Sequence[str], stream: TextIO | None = None) -> None:
    """A note per truncated prediction, each named by `names`; `info_of` (one GetModelInfo) is
    called only if one was."""
    truncated = [(name, p) for name, p in zip(names, predictions, strict=True) if p.truncated]
    if not truncated:
        return
    try:
        info: ModelInfo | None = info_of()
    except SentimentError:
        info = None  # the prediction stands; the note just cannot say which part was dropped
    for name, prediction in truncated:
        print(truncation_note(prediction, info, name), file=stream or sys.stderr)

