"""make bench-trace: are trace attributions faithful, what does a trace cost, how fast do models forget.

    python -m bench.trace_run [--quick] [--model-dir DIR] [--output-dir DIR] [--pictures DIR]

Targets (issue 4), reported as PASS/FAIL, never part of the test suite:
  faithfulness  deleting the top-1 attributed word flips the prediction >= 3x as often as deleting
                a random word (integrated gradients, occlusion); deletion curves k = 1..5 for every
                method and for attention weights
  cost          Trace with PREFIX + GRADIENT_X_INPUT on a 20-word text <= 3x Predict's latency
                (over gRPC, what a caller waits for; in-process ratios are shown beside it);
                INTEGRATED_GRADIENTS at 32 steps <= 30 ms on CPU
  memory        recency and decay of ‖∂h_T/∂x_t‖ on long SST-2 dev sentences, per model
Results: bench/results/trace.{json,md}. --pictures DIR also draws docs pictures with the CLI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from rnn_sentiment.model.checkpoint import LoadedModel, load_checkpoint
from rnn_sentiment.model.data import read_sst_tsv
from rnn_sentiment.model.inference import encode_tokens

from .report import markdown_table, write_results
from .trace_cost import grpc_costs, in_process_costs
from .trace_faithfulness import ATTENTION, KS, RANDOM, deletion_curves
from .trace_memory import DISTANCES, memory_summary

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
DATA_DIR = REPO.parent / "shared" / "data" / "sst2"
# A 20-word text for the cost target (the "20-word text").
TWENTY_WORDS = ("the film is not as funny as it wants to be , but the cast is warm and the ending works")
SHORT_EXAMPLE = "it 's not a bad film at all , but the plot is thin"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.trace_run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="150 dev sentences, fewer repeats")
    parser.add_argument("--model-dir", type=Path, default=REPO / "model" / "checkpoints",
                        help="a directory of checkpoints (default: the shipped models)")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--max-examples", type=int, default=0, help="dev sentences to use (0: all)")
    parser.add_argument("--output-dir", type=Path, default=None)
    parser.add_argument("--pictures", type=Path, default=None, help="also draw the docs pictures into DIR")
    parser.add_argument("--repeats", type=int, default=0, help="timed calls per measurement (default 100, quick 30)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m bench.trace_run " + shlex.join(sys.argv[1:] if argv is None else argv)
    models = _load_models(args.model_dir)
    dev = read_sst_tsv(args.data_dir / "dev.tsv")
    limit = args.max_examples or (150 if args.quick else len(dev))
    examples = dev[:limit]
    repeats = args.repeats or (30 if args.quick else 100)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    print(f"bench-trace: {len(models)} models, {len(examples)} dev sentences, {cores} cores", flush=True)
    document: dict = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command.strip(),
        "machine": {"cores": cores, "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__},
        "models": {},
    }
    torch.set_num_threads(1)
    for name, loaded in models.items():
        started = time.perf_counter()
        print(f"{name}: faithfulness", flush=True)
        curves = deletion_curves(loaded, examples)
        print(f"{name}: memory", flush=True)
        memory = memory_summary(loaded, examples, min_tokens=30)
        print(f"{name}: cost", flush=True)
        encoded = encode_tokens(TWENTY_WORDS.split(), loaded.vocab, loaded.config.max_tokens)
        cost = {"in_process": [in_process_costs(loaded, encoded, repeats, threads)
                               for threads in sorted({1, cores})],
                "grpc": grpc_costs(loaded.path, name, TWENTY_WORDS, repeats, threads=1)}
        document["models"][name] = {
            "checkpoint": str(loaded.path), "sha256": loaded.sha256,
            "architecture": loaded.config.to_dict(),
            "dev_accuracy": loaded.training.dev_accuracy if loaded.training else None,
            "faithfulness": curves.to_dict(), "memory": memory, "cost": cost,
            "seconds": time.perf_counter() - started,
        }
    markdown = render_markdown(document)
    output = args.output_dir or (RESULTS_DIR / "tmp" if args.quick else RESULTS_DIR)
    json_path, md_path = write_results(output, "trace", document, markdown)
    print(markdown)
    print(f"wrote {json_path} and {md_path}")
    if args.pictures:
        draw_pictures(args.model_dir, list(models), dev, args.pictures)
    return 0


def _load_models(model_dir: Path) -> dict[str, LoadedModel]:
    directories = [model_dir] if (model_dir / "config.json").is_file() else sorted(
        p.parent for p in model_dir.glob("*/config.json"))
    if not directories:
        raise SystemExit(f"no checkpoints under {model_dir}; train one (rnn-sentiment train --output DIR/NAME) "
                         f"and pass --model-dir DIR")
    loaded = [load_checkpoint(d) for d in directories]
    return {m.name: m for m in loaded}


def _status(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def render_markdown(document: dict) -> str:
    lines = ["# bench-trace results", "", f"{document['date']}; `{document['command']}`; "
             f"{document['machine']['cores']} cores; torch {document['machine']['torch']}.", ""]
    for name, result in document["models"].items():
        arch = result["architecture"]
        lines += [f"## {name}", "",
                  f"{arch['cell']} {arch['num_layers']}×{arch['hidden_size']}"
                  f"{' bidirectional' if arch['bidirectional'] else ''}, pooling {arch['pooling']}, "
                  f"dev accuracy {result['dev_accuracy']}; sha256 {result['sha256'][:12]}", ""]
        faith = result["faithfulness"]
        rates = faith["flip_rate"]
        methods = [m for m in rates if m != RANDOM] + [RANDOM]
        lines += [f"Deletion curves: share of {faith['sentences']} dev sentences whose prediction flips when "
                  f"the top-k words are deleted (random: the mean over 10 random draws).", ""]
        rows = [[m] + [f"{rates[m][str(k)]:.1%}" if str(k) in rates[m] else "" for k in KS] for m in methods]
        lines += [markdown_table(["method", *[f"k={k}" for k in KS]], rows), ""]
        random_1 = rates[RANDOM]["1"]
        for method in ("integrated_gradients", "occlusion"):
            ratio = rates[method]["1"] / random_1 if random_1 else float("inf")
            lines.append(f"- {_status(ratio >= 3)} {method}: top-1 deletion flips {ratio:.1f}× as often as a "
                         f"random word (target ≥ 3×)")
        gap = faith["integrated_gradients_relative_gap"]
        if gap["median"] is not None:
            lines.append(f"- integrated gradients at 32 steps: completeness gap / |logit difference| median "
                         f"{gap['median']:.2e}, 99th percentile {gap['p99']:.2e}; {gap['share_below_1_percent']:.1%} "
                         f"of sentences below 1%")
        if ATTENTION in rates:
            lines.append(f"- attention weights: top-1 deletion flips {rates[ATTENTION]['1'] / random_1:.1f}× "
                         f"as often as a random word")
        lines.append("")
        for run in result["cost"]["in_process"]:
            ms = run["median_ms"]
            lines += [f"Cost in-process, {run['tokens']} tokens, {run['threads']} thread(s), median ms:", "",
                      markdown_table(["work", "ms", "× predict"],
                                     [[k, f"{v:.2f}", f"{v / ms['predict']:.1f}"] for k, v in ms.items()]), ""]
            # The ≤ 3× target is about latency, what a caller waits for: judged over gRPC below. In
            # process only the model's work shows, and the server's Predict runs on ONNX Runtime.
            ratio = ms["trace prefix + gradient_x_input"] / ms["predict"]
            lines.append(f"- model work alone, torch: trace prefix + gradient×input = {ratio:.1f}× predict")
            if "predict (server's executor)" in ms:
                served = ms["trace prefix + gradient_x_input (server's executor)"] / ms["predict (server's executor)"]
                lines.append(f"- model work alone, as the server runs it: {served:.1f}× (Predict on ONNX Runtime)")
            ig = ms["integrated_gradients 32 steps (alone)"]
            lines += [f"- {_status(ig <= 30)} integrated gradients, 32 steps: {ig:.1f} ms (target ≤ 30 ms)", ""]
        grpc = result["cost"]["grpc"]["median_ms"]
        ratio = grpc["Trace prefix + gradient_x_input"] / grpc["Predict"]
        lines += ["Over gRPC (loopback, 1 torch thread, sequential calls), median ms:", "",
                  markdown_table(["call", "ms", "× Predict"],
                                 [[k, f"{v:.2f}", f"{v / grpc['Predict']:.1f}"] for k, v in grpc.items()]), "",
                  f"- {_status(ratio <= 3)} Trace prefix + gradient×input = {ratio:.1f}× Predict (target ≤ 3×)", ""]
        memory = result["memory"]
        if memory["sentences"]:
            relative = memory["median_influence_relative_to_last"]
            lines += [f"Memory on the {memory['sentences']} dev sentences of ≥ {memory['min_tokens']} tokens: mean "
                      f"recency (share of influence in the last third) {memory['mean_recency']:.1%}, median decay "
                      f"×{memory['median_decay_per_token']:.3f} per token; median influence relative to the last "
                      f"token at distance " + ", ".join(f"{d}: {relative[str(d)]:.2e}" for d in DISTANCES
                                                        if relative[str(d)] is not None), ""]
    return "\n".join(lines) + "\n"


def draw_pictures(model_dir: Path, names: list[str], dev, directory: Path) -> None:  # type: ignore[no-untyped-def]
    """The docs pictures, drawn by the CLI against a real server (the tool, not a notebook)."""
    from rnn_sentiment.client import SentimentClient

    from .trace_cost import _free_port

    directory.mkdir(parents=True, exist_ok=True)
    plain = next((n for n in names if "rnn" in n.split("-")[-1]), names[0])
    gated = next((n for n in names if n.endswith("gru")), next((n for n in names if n != plain), names[-1]))
    long_sentence = next(" ".join(e.tokens) for e in dev if 30 <= len(e.tokens) <= 36)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "rnn_sentiment.cli", "serve", "--address", f"127.0.0.1:{port}",
                               "--metrics-address", "", "--model-dir", str(model_dir), "--log-level", "WARNING"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with SentimentClient(f"127.0.0.1:{port}") as client:
            client.wait_until_serving(timeout=120)
        cli = [sys.executable, "-m", "rnn_sentiment.cli", "trace", "--target", f"127.0.0.1:{port}", "--timeout", "120"]
        jobs = {
            "trace-short.png": [SHORT_EXAMPLE, "--model", gated, "--format", "png", "--top-k-units", "48"],
            "trace-memory-rnn-vs-gru.png": [long_sentence, "--model", plain, "--compare", gated, "--format", "png",
                                            "--attributions", "integrated_gradients", "--top-k-units", "48"],
        }
        for filename, arguments in jobs.items():
            subprocess.run([*cli, *arguments, "--output", str(directory / filename)], check=True)
        meta = {"plain": plain, "gated": gated, "long_sentence": long_sentence, "short_sentence": SHORT_EXAMPLE}
        (directory / "pictures.json").write_text(json.dumps(meta, indent=2) + "\n")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    sys.exit(main())
