"""Does the hand-written backward (model/replay_backward.py) still earn its lines? Gradient × input
on a shipped model, interleaved A/B, medians, at 20 and 100 tokens, one torch thread:

  hand-written, replays given   what a trace pays: it has replayed the gates already
  hand-written, with its replay the same, replaying the cells first
  autograd, torch module        attribution.gradient_x_input: backward through nn.GRU/LSTM/RNN
  autograd, shared step         backward through model/cells.py's scan (the plain torch step)

and, for the walk alone, W_hh.T as a view against a contiguous copy made once and kept (what a
module-level cache used to hold).

    python -m bench.trace_backward [--model-dir model/checkpoints/sst2-gru] [--rounds 60]

Results: bench/results/trace_backward.{json,md}. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

from rnn_sentiment.model.attribution import gradient_x_input, gradients_enabled, target_log_odds
from rnn_sentiment.model.cell_replay import DIRECTIONS, replay_cells
from rnn_sentiment.model.cells import cell_kind, layer_weights, scan
from rnn_sentiment.model.checkpoint import load_checkpoint
from rnn_sentiment.model.inference import encode_texts
from rnn_sentiment.model.network import EncodedSequence, SentimentRNN
from rnn_sentiment.model.replay_backward import replayed_gradient_x_input

from .report import markdown_table, write_results

REPO = Path(__file__).resolve().parent.parent
TWENTY_WORDS = "the film is not as funny as it wants to be , but the cast is warm and the ending works"


def autograd_through_the_step(network: SentimentRNN, token_ids: torch.Tensor, target: int) -> torch.Tensor:
    """Gradient × input [T] by autograd through cells.scan instead of the torch module."""
    kind = cell_kind(network.config.cell)
    with gradients_enabled():
        x = network.embed(token_ids).detach().unsqueeze(0).requires_grad_()  # [1, T, E]
        layer_input, finals = x, []
        for layer in range(network.config.num_layers):
            runs = [scan(kind, layer_input, layer_weights(network.rnn, layer, d), reverse=bool(d))
                    for d in range(network.config.num_directions)]
            layer_input = torch.cat([outputs for outputs, _ in runs], dim=-1)  # [1, T, H*D]
            finals = [final for _, final in runs]
        final = ((torch.stack([f[0] for f in finals]), torch.stack([f[1] for f in finals]))
                 if kind.has_memory else torch.stack(finals))  # [D, 1, H]
        lengths = torch.tensor([x.shape[1]])
        logits = network.classify_encoded(EncodedSequence(outputs=layer_input, final_state=final), lengths)
        (grad,) = torch.autograd.grad(target_log_odds(logits, target).sum(), x)
    return (grad * x.detach()).sum(-1)[0]  # [T]


def walk_only(network: SentimentRNN, replays, contiguous_transpose: torch.Tensor | None) -> Callable[[], object]:
    """The top layer's backward walk alone, W_hh.T as a view or as the given contiguous copy."""
    replay = replays[-1]
    steps = replay.steps()
    recurrent_t = (contiguous_transpose if contiguous_transpose is not None
                   else layer_weights(network.rnn, replay.layer, 0).recurrent.detach().T)
    above = torch.randn_like(steps.hidden)
    order = range(len(above) - 1, -1, -1) if replay.direction == DIRECTIONS[0] else range(len(above))

    def run() -> object:
        walk = replay.kind.backward(steps, recurrent_t, above, order)
        for _ in walk:
            pass
        return None

    return run


def interleaved_medians(arms: dict[str, Callable[[], object]], rounds: int, warmup: int = 5) -> dict[str, dict]:
    """Each round runs every arm once, in turn: a busy moment on a shared machine hits all arms."""
    times: dict[str, list[float]] = {name: [] for name in arms}
    for round_ in range(warmup + rounds):
        for name, work in arms.items():
            started = time.perf_counter()
            work()
            if round_ >= warmup:
                times[name].append((time.perf_counter() - started) * 1000)
    summary = {}
    for name, values in times.items():
        quartiles = statistics.quantiles(values, n=4)
        summary[name] = {"median_ms": statistics.median(values), "q1_ms": quartiles[0], "q3_ms": quartiles[2]}
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.trace_backward", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=REPO / "model" / "checkpoints" / "sst2-gru")
    parser.add_argument("--rounds", type=int, default=60, help="interleaved rounds per text length")
    parser.add_argument("--output-dir", type=Path, default=REPO / "bench" / "results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    loaded = load_checkpoint(args.model_dir)
    network = loaded.network
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    document: dict = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": ("python -m bench.trace_backward " + shlex.join(sys.argv[1:] if argv is None else argv)).strip(),
        "machine": {"cores": cores, "processor": platform.processor() or platform.machine(), "torch": torch.__version__},
        "model": loaded.name, "cell": loaded.config.cell, "hidden_size": loaded.config.hidden_size,
        "rounds": args.rounds, "lengths": {},
    }
    for words in (20, 100):
        text = " ".join((TWENTY_WORDS.split() * 5)[:words])
        (encoded,) = encode_texts([text], loaded.vocab, 10_000)
        ids = torch.tensor(encoded.ids)
        target = 1
        with torch.inference_mode():
            replays = replay_cells(network, ids)
        expected = gradient_x_input(network, ids, target)
        for name, scores in (("hand-written", replayed_gradient_x_input(network, ids, target, replays)),
                             ("shared step", autograd_through_the_step(network, ids, target))):
            gap = float((scores - expected).abs().max())
            if gap > 1e-4:
                raise SystemExit(f"{name} disagrees with autograd by {gap:.2e} at {len(ids)} tokens")
        top = replays[-1]
        contiguous = layer_weights(network.rnn, top.layer, 0).recurrent.detach().T.contiguous()
        arms = {
            "hand-written, replays given": lambda: replayed_gradient_x_input(network, ids, target, replays),
            "hand-written, with its replay": lambda: replayed_gradient_x_input(network, ids, target),
            "autograd, torch module": lambda: gradient_x_input(network, ids, target),
            "autograd, shared step": lambda: autograd_through_the_step(network, ids, target),
            "walk alone, W_hh.T view": walk_only(network, replays, None),
            "walk alone, W_hh.T contiguous (kept)": walk_only(network, replays, contiguous),
        }
        print(f"{len(ids)} tokens: {len(arms)} arms × {args.rounds} rounds", flush=True)
        document["lengths"][str(len(ids))] = interleaved_medians(arms, args.rounds)
    rows = []
    for tokens, arms_ in document["lengths"].items():
        baseline = arms_["autograd, torch module"]["median_ms"]
        for name, stats in arms_.items():
            rows.append([tokens, name, f"{stats['median_ms']:.3f}", f"{stats['q1_ms']:.3f}–{stats['q3_ms']:.3f}",
                         f"{stats['median_ms'] / baseline:.2f}" if not name.startswith("walk") else "–"])
    markdown = "\n".join([
        "# Trace: hand-written backward against autograd",
        "",
        f"`{document['command']}` — {document['date']}, {cores} cores ({document['machine']['processor']}), "
        f"torch {torch.__version__}, one torch thread. Model {loaded.name} ({loaded.config.cell}, "
        f"{loaded.config.hidden_size} units). Interleaved rounds: {args.rounds}; medians and quartiles in ms.",
        "",
        markdown_table(["tokens", "gradient × input", "median ms", "q1–q3 ms", "× autograd (module)"], rows),
        "",
    ])
    json_path, md_path = write_results(args.output_dir, "trace_backward", document, markdown)
    print(markdown)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
