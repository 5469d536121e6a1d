"""`rnn-sentiment eval`: its flags, and the run, in-process on a checkpoint or over gRPC against
a running server (cli/remote_eval.py). The evaluation itself is model/evaluation.py's."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rnn_sentiment.model.checkpoint import CheckpointError, load_checkpoint
from rnn_sentiment.model.data import read_sst_tsv
from rnn_sentiment.model.evaluation import evaluate, format_report

from .remote_eval import run_remote_eval


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags for `rnn-sentiment eval`."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="evaluate this checkpoint directory in-process")
    source.add_argument("--target", help="evaluate a running server (host:port) over gRPC instead")
    parser.add_argument("--model", default="", help="with --target: the model name (default: the server's default)")
    parser.add_argument("--texts-per-call", type=int, default=32,
                        help="with --target: texts per Predict call, at most the server's limit (default: %(default)s)")
    parser.add_argument("--data", default="../shared/data/sst2",
                        help="a TSV file, or a directory holding SPLIT.tsv (default: %(default)s)")
    parser.add_argument("--split", default="dev", help="file name in --data without .tsv (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run_eval_from_args(args: argparse.Namespace) -> int:
    """Run `rnn-sentiment eval`; return the process exit code (2 for a bad checkpoint or path)."""
    data = Path(args.data)
    path = data / f"{args.split}.tsv" if data.is_dir() else data
    if args.target:
        return run_remote_eval(args.target, args.model, path, args.json, args.texts_per_call)
    try:
        loaded = load_checkpoint(args.checkpoint)
        examples = read_sst_tsv(path)
    except (CheckpointError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = evaluate(loaded, examples)
    if args.json:
        print(json.dumps({"checkpoint": loaded.name, "version": loaded.version,
                          "sha256": loaded.sha256, "data": str(path), **report.to_dict()}))
    else:
        print(f"{loaded.name} {loaded.version} ({loaded.sha256[:12]}) on {path}")
        print(format_report(report))
    return 0
