"""`make bench-long`: accuracy and cost of a served token limit, head against head+tail truncation.

On the shipped checkpoints, through Predict's executor (model/backends.py `make_predictor`,
ONNX Runtime as served) on one thread:

- (a) SST-2 dev: its length distribution, and accuracy on its longest sentences under each limit;
- (b) long reviews assembled from dev sentences, seeded, 150-1,500 tokens (log-uniform target):
  `uniform`       sentences of the review's label only;
  `verdict_last`  sentences of random labels, then one sentence of the review's label (a review
                  that gives its verdict at the end);
  `verdict_first` one sentence of the review's label, then sentences of random labels.
  A sentence is used once per review kind; each review's label is balanced 50/50.

Cost is CPU µs of one thread per text, one text per run (a lone request) and in runs of 16 (a full
batch, as served), on texts that fill the limit: the worst case a limit allows, so its p99.
Writes bench/results/long_texts.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rnn_sentiment.model.backends import Predictor, make_predictor
from rnn_sentiment.model.checkpoint import load_checkpoint
from rnn_sentiment.model.data import Example, read_sst_tsv
from rnn_sentiment.model.inference import EncodedText, encode_tokens
from rnn_sentiment.model.truncation import TokenLimit

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path("/work/shared/data/sst2")
LIMITS = (128, 256, 512, 1024)
# head_tail's share of the limit kept from the start (model/truncation.py HEAD_TAIL_HEAD_SHARE).
HEAD_SHARES = (0.25, 0.5)
KINDS = ("uniform", "verdict_last", "verdict_first")
MIN_REVIEW_TOKENS, MAX_REVIEW_TOKENS = 150, 1500
MAX_TEXTS_PER_REQUEST = 64  # ServerConfig.max_texts_per_request's default: the request bound below
BATCH = 16  # model/backends.py DEFAULT_ONNX_MAX_BATCH: one ONNX Runtime run as served


@dataclass(frozen=True)
class Review:
    kind: str
    label: int
    tokens: tuple[str, ...]


@dataclass(frozen=True)
class Strategy:
    name: str  # "head", "head_tail 0.25", "tail"
    truncation: str
    head_share: float = 0.0

    def limit(self, max_tokens: int) -> TokenLimit:
        return TokenLimit(max_tokens, self.truncation, self.head_share)


# "tail" (head_tail keeping no head) is a reference row: what the end alone is worth.
STRATEGIES = (Strategy("head", "head"), Strategy("tail", "head_tail", 0.0),
              *(Strategy(f"head_tail {s:.2f}", "head_tail", s) for s in HEAD_SHARES))


def assemble_reviews(dev: Sequence[Example], kind: str, count: int, rng: random.Random) -> list[Review]:
    """`count` reviews of one kind from dev sentences (see the module docstring)."""
    by_label = {label: [e for e in dev if e.label == label] for label in (0, 1)}
    reviews = []
    for index in range(count):
        label = index % 2
        target = round(math.exp(rng.uniform(math.log(MIN_REVIEW_TOKENS), math.log(MAX_REVIEW_TOKENS))))
        used: set[int] = set()

        def draw(sentence_label: int) -> tuple[str, ...]:
            pool = by_label[sentence_label]
            while True:
                pick = rng.randrange(len(pool))
                if (sentence_label, pick) not in used:
                    used.add((sentence_label, pick))
                    return pool[pick].tokens

        verdict = draw(label)
        body: list[str] = list(verdict) if kind == "verdict_first" else []
        reserve = len(verdict) if kind == "verdict_last" else 0
        while len(body) + reserve < target:
            body.extend(draw(label if kind == "uniform" else rng.randrange(2)))
        if kind == "verdict_last":
            body.extend(verdict)
        reviews.append(Review(kind, label, tuple(body)))
    return reviews


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


class CachedPredictor:
    """Labels by the tokens read: a review that fits a limit reads the same under every strategy,
    so it runs once."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.labels = list(predictor.loaded.config.labels)
        self._seen: dict[tuple[str, ...], int] = {}

    def accuracy(self, encoded: Sequence[EncodedText], gold: Sequence[int]) -> float:
        todo = list({e.tokens: e for e in encoded if e.tokens not in self._seen}.values())
        for start in range(0, len(todo), MAX_TEXTS_PER_REQUEST):
            chunk = todo[start:start + MAX_TEXTS_PER_REQUEST]
            for item, result in zip(chunk, self.predictor(chunk), strict=True):
                self._seen[item.tokens] = self.labels.index(result.label)
        return sum(self._seen[e.tokens] == g for e, g in zip(encoded, gold, strict=True)) / len(gold)


def encode(predictor: Predictor, tokens: Sequence[str], limit: TokenLimit) -> EncodedText:
    # keep() picks the tokens (its head_share may differ from the served constant); encode_tokens
    # then reads them whole and records how long the text was.
    kept = limit.keep(tokens)
    encoded = encode_tokens(kept, predictor.loaded.vocab, len(kept))
    return dataclasses.replace(encoded, truncated=len(tokens) > limit.max_tokens, text_token_count=len(tokens))


def cost_us(predictor: Predictor, texts: Sequence[EncodedText], batch: int, repeats: int) -> list[float]:
    """CPU µs per text of each run of `batch` texts, after a warm-up run. CPU time, not wall time:
    the machine is shared, and another process's work would otherwise count as ours."""
    times = []
    predictor(texts[:batch])
    for index in range(repeats):
        start = (index * batch) % max(1, len(texts) - batch + 1)
        chunk = texts[start:start + batch]
        started = time.process_time()
        predictor(chunk)
        times.append((time.process_time() - started) * 1e6 / len(chunk))
    return times


def measure_model(checkpoint: Path, dev: list[Example], reviews: list[Review], repeats: int) -> dict:
    loaded = load_checkpoint(checkpoint)
    predictor = make_predictor(loaded, "auto", threads=1)
    cached = CachedPredictor(predictor)
    longest = sorted(dev, key=lambda e: len(e.tokens))[-len(dev) // 10:]
    dev_rows = {str(limit): cached.accuracy([encode(predictor, e.tokens, TokenLimit(limit)) for e in longest],
                                            [e.label for e in longest])
                for limit in LIMITS}
    by_kind = {kind: [r for r in reviews if r.kind == kind] for kind in KINDS}
    gold = {kind: [r.label for r in by_kind[kind]] for kind in KINDS}
    whole = {kind: cached.accuracy([encode(predictor, r.tokens, TokenLimit(MAX_REVIEW_TOKENS * 2))
                                    for r in by_kind[kind]], gold[kind]) for kind in KINDS}
    rows = []
    for limit in LIMITS:
        for strategy in STRATEGIES:
            token_limit = strategy.limit(limit)
            row = {"limit": limit, "strategy": strategy.name}
            for kind in KINDS:
                row[kind] = cached.accuracy([encode(predictor, r.tokens, token_limit) for r in by_kind[kind]],
                                            gold[kind])
            row["mean"] = statistics.fmean(row[kind] for kind in KINDS)
            rows.append(row)
    # Cost depends on the tokens read alone: texts cut to exactly the limit are the worst case.
    full = [r for r in reviews if len(r.tokens) >= max(LIMITS)]
    costs = []
    for limit in LIMITS:
        texts = [encode(predictor, r.tokens, TokenLimit(limit)) for r in full]
        lone = cost_us(predictor, texts, 1, repeats)
        batched = cost_us(predictor, texts, BATCH, max(4, repeats // 4))
        costs.append({
            "limit": limit,
            "lone_p50_us": statistics.median(lone), "lone_p99_us": percentile(lone, 99),
            "batched_p50_us": statistics.median(batched), "batched_p99_us": percentile(batched, 99),
            # A request of MAX_TEXTS_PER_REQUEST texts at the limit, in runs of BATCH: the model
            # time one request can ask for.
            "request_bound_ms": percentile(batched, 99) * MAX_TEXTS_PER_REQUEST / 1000,
        })
    return {"model": loaded.name, "predictor": predictor.description, "dev_longest_tenth": dev_rows,
            "dev_longest_tenth_count": len(longest), "whole_reviews": whole, "accuracy": rows, "cost": costs}


def length_summary(lengths: Sequence[int]) -> dict:
    return {"count": len(lengths), "mean": statistics.fmean(lengths),
            **{f"p{q}": percentile(lengths, q) for q in (50, 90, 99)}, "max": max(lengths)}


def markdown(document: dict) -> str:
    dev, reviews = document["dev_lengths"], document["review_lengths"]
    lines = [
        "# Long texts: the served token limit, head against head+tail",
        "",
        f"`{document['command']}` on {document['machine']}; {document['seconds']:.0f} s. "
        "Accuracy through Predict's executor on the shipped checkpoints; cost in CPU µs of one thread per text "
        "(CPU time: the machine is shared).",
        "",
        "## SST-2 dev sentences",
        "",
        f"Tokens per sentence ({dev['count']} sentences): mean {dev['mean']:.1f}, p50 {dev['p50']}, "
        f"p90 {dev['p90']}, p99 {dev['p99']}, max {dev['max']}. Every limit measured reads them whole; "
        "accuracy on the longest tenth:",
        "",
        "| model | " + " | ".join(f"limit {limit}" for limit in LIMITS) + " |",
        "| --- |" + " --- |" * len(LIMITS),
    ]
    for model in document["models"]:
        lines.append(f"| {model['model']} (longest {model['dev_longest_tenth_count']}) | "
                     + " | ".join(f"{model['dev_longest_tenth'][str(limit)]:.1%}" for limit in LIMITS) + " |")
    lines += [
        "",
        "## Long reviews assembled from dev sentences",
        "",
        f"{document['reviews_per_kind']} reviews per kind, seed {document['seed']}, tokens per review: "
        f"mean {reviews['mean']:.0f}, p50 {reviews['p50']}, p90 {reviews['p90']}, max {reviews['max']} "
        "(`uniform`: sentences of the review's label; `verdict_last`: random-label sentences, then one of the "
        "review's label; `verdict_first`: the reverse). `head_tail S` keeps the first S of the limit and the rest "
        "from the end.",
        "",
    ]
    for model in document["models"]:
        whole = model["whole_reviews"]
        lines += [
            f"### {model['model']} ({model['predictor']})",
            "",
            "Read whole (no limit): " + ", ".join(f"{kind} {whole[kind]:.1%}" for kind in KINDS) + ".",
            "",
            "| limit | strategy | " + " | ".join(KINDS) + " | mean |",
            "| --- | --- |" + " --- |" * (len(KINDS) + 1),
        ]
        for row in model["accuracy"]:
            lines.append(f"| {row['limit']} | {row['strategy']} | "
                         + " | ".join(f"{row[kind]:.1%}" for kind in KINDS) + f" | {row['mean']:.1%} |")
        lines += [
            "",
            f"| limit | one text: p50 / p99 CPU µs | in runs of {BATCH}: p50 / p99 CPU µs per text | "
            f"a {MAX_TEXTS_PER_REQUEST}-text request at the limit, ms |",
            "| --- | --- | --- | --- |",
        ]
        for cost in model["cost"]:
            lines.append(f"| {cost['limit']} | {cost['lone_p50_us']:,.0f} / {cost['lone_p99_us']:,.0f} | "
                         f"{cost['batched_p50_us']:,.0f} / {cost['batched_p99_us']:,.0f} | "
                         f"{cost['request_bound_ms']:,.0f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SST-2 directory holding dev.tsv")
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "model" / "checkpoints")
    parser.add_argument("--reviews-per-kind", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=60, help="timed runs per limit")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench" / "results" / "long_texts")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    dev = read_sst_tsv(args.data / "dev.tsv")
    rng = random.Random(args.seed)
    reviews = [r for kind in KINDS for r in assemble_reviews(dev, kind, args.reviews_per_kind, rng)]
    checkpoints = sorted(p for p in args.model_dir.iterdir() if (p / "config.json").is_file())
    models = [measure_model(c, dev, reviews, args.repeats) for c in checkpoints]
    document = {
        "command": "make bench-long",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread, shared 2-core CPU",
        "seconds": time.perf_counter() - started,
        "seed": args.seed,
        "reviews_per_kind": args.reviews_per_kind,
        "dev_lengths": length_summary([len(e.tokens) for e in dev]),
        "review_lengths": length_summary([len(r.tokens) for r in reviews]),
        "models": models,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(document, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(document) + "\n")
    print(markdown(document))


if __name__ == "__main__":
    main()
