"""The `rnn-sentiment` process: main()'s exit code, and quiet when its reader goes away.

`rnn-sentiment serve --print-config-table | head` closes the pipe after ten lines; Python then
raises BrokenPipeError at the next write (it ignores SIGPIPE) and printed a traceback for what is
the reader's choice. As for `predict` (docs/sdk.md: "a reader that stops early ends it
quietly"), a reader gone is not an error: the command ends with 0 and nothing on stderr.
"""

from __future__ import annotations

import os
import sys

from .main import main


def run() -> int:
    try:
        code = main()
        sys.stdout.flush()  # inside the try: the last buffered lines may meet the closed pipe too
        return code
    except BrokenPipeError:
        # Nothing more can reach the reader; point stdout at /dev/null so the interpreter's own
        # flush at exit does not raise the same error again (Python's signal module docs).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
