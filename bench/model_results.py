"""`make results`: the README's model table, measured from the shipped checkpoints.

Dev accuracy, macro F1 and ECE are re-measured on SST-2 dev (never recorded numbers alone);
training time comes from each checkpoint's training record; latency is one 20-word text
through the serving path (tokenize + forward) on one torch thread, median of 200.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

import torch

from rnn_sentiment.model.backends import make_predictor
from rnn_sentiment.model.checkpoint import load_checkpoint
from rnn_sentiment.model.data import read_sst_tsv
from rnn_sentiment.model.evaluation import evaluate
from rnn_sentiment.model.inference import EncodedText, encode_texts, predict_encoded

from .trace_cost import median_ms

REPO_ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
TWENTY_WORDS = ("the film is a warm , funny and beautifully acted story that never loses its nerve "
                "or its heart")
ANCHORS = (
    "| *Kim 2014, CNN-rand (from scratch)* | 82.7 | | | | | | | [Kim 2014](https://aclanthology.org/D14-1181/) |",
    "| *Socher et al. 2013, RNTN (from scratch)* | 85.4 | | | | | | | [Socher et al. 2013](https://aclanthology.org/D13-1170/) |",
    "| *Tai et al. 2015, 2-layer LSTM (GloVe vectors)* | 86.3 | | | | | | | [Tai et al. 2015](https://aclanthology.org/P15-1150/) |",
    "| *Kim 2014, CNN-multichannel (word2vec vectors)* | 88.1 | | | | | | | [Kim 2014](https://aclanthology.org/D14-1181/) |",
)


def forward_latency_ms(checkpoint: Path) -> tuple[float, float]:
    """Median ms of one 20-word text, tokenize + forward: on torch, and as the server runs it (auto)."""
    loaded = load_checkpoint(checkpoint)
    served = make_predictor(loaded, "auto", threads=torch.get_num_threads())

    def encoded() -> list[EncodedText]:  # tokenizing is part of what is timed
        return encode_texts([TWENTY_WORDS], loaded.vocab, loaded.config.max_tokens)

    return (median_ms(lambda: predict_encoded(loaded, encoded()), 200, warmup=20),
            median_ms(lambda: served(encoded()), 200, warmup=20))


def table(model_dir: Path, data_dir: Path) -> str:
    dev = read_sst_tsv(data_dir / "dev.tsv")
    rows = ["| model | dev accuracy | macro F1 | ECE | parameters | checkpoint | training time | forward, 20 words: torch / served | source |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for checkpoint in sorted(p for p in model_dir.iterdir() if (p / "config.json").is_file()):
        loaded = load_checkpoint(checkpoint)
        report = evaluate(loaded, dev)
        config = loaded.config
        size_mb = sum(f.stat().st_size for f in checkpoint.iterdir() if f.suffix in (".json", ".safetensors")) / 1e6
        parameters = sum(p.numel() for p in loaded.network.parameters())
        trained = f"{loaded.training.train_seconds / 60:.1f} min" if loaded.training else "?"
        shape = f"{'bi' if config.bidirectional else ''}{config.cell.upper()} {config.num_layers}×{config.hidden_size}, pooling {config.pooling}"
        if config.subword_buckets:
            shape += f", {config.subword_buckets:,} n-gram buckets"
        rows.append(
            f"| **{loaded.name}** {loaded.version} ({shape}) | {report.accuracy * 100:.1f} | {report.macro_f1 * 100:.1f} | "
            f"{report.ece * 100:.1f}% | {parameters / 1e6:.2f} M | {size_mb:.1f} MB | {trained} | "
            "{:.2f} / {:.2f} ms".format(*forward_latency_ms(checkpoint)) + f" | this repo, seed {loaded.training.seed if loaded.training else '?'} |"
        )
    rows.extend(ANCHORS)
    load = os.getloadavg()[0]
    rows.append("")
    rows.append(f"Measured {time.strftime('%Y-%m-%d')} by `make results` on {os.cpu_count()} CPU cores "
                f"(load average {load:.1f} at the end: latency is inflated when the machine is shared). "
                "Forward: one thread, tokenize included; served = the server's default executor (ONNX Runtime "
                "on CPU). Anchors are the papers' SST-2 test accuracies; ours are dev (there is no "
                "test split here).")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "model" / "checkpoints")
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "sst2")
    parser.add_argument("--readme", type=Path, default=REPO_ROOT / "README.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rendered = table(args.model_dir, args.data)
    text = args.readme.read_text()
    block = f"{BEGIN}\n{rendered}\n{END}"
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.replace("MODELS_TABLE", block)
    args.readme.write_text(text)
    print(rendered)


if __name__ == "__main__":
    main()
