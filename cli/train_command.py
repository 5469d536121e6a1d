"""`rnn-sentiment train`: its flags, defaults taken from TrainConfig, and the TrainConfig they make."""

from __future__ import annotations

import argparse

from rnn_sentiment.model.config import CELLS, POOLINGS
from rnn_sentiment.model.training import TrainConfig


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags for `rnn-sentiment train`; defaults come from TrainConfig."""
    d = TrainConfig()
    parser.add_argument("--data", "--data-dir", dest="data_dir", default=d.data_dir, help="directory with SST-2 train.tsv and dev.tsv (default: %(default)s)")
    parser.add_argument("--output", default=d.output_dir, help="checkpoint directory to write (default: %(default)s)")
    parser.add_argument("--name", default=d.name, help="model name stored in the checkpoint (default: %(default)s)")
    parser.add_argument("--version", dest="model_version", default=d.version, help="model version (default: %(default)s)")
    parser.add_argument("--cell", choices=CELLS, default=d.cell, help="recurrent cell (default: %(default)s)")
    parser.add_argument("--embedding-dim", type=int, default=d.embedding_dim)
    parser.add_argument("--hidden-size", type=int, default=d.hidden_size)
    parser.add_argument("--num-layers", type=int, default=d.num_layers)
    parser.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=d.bidirectional)
    parser.add_argument("--pooling", choices=POOLINGS, default=d.pooling, help="(default: %(default)s)")
    parser.add_argument("--subword-buckets", type=int, default=d.subword_buckets,
                        help="hashed character 3-5-gram rows added to each word's vector; 0 = none (default: %(default)s)")
    parser.add_argument("--dropout", type=float, default=d.dropout)
    parser.add_argument("--max-tokens", type=int, default=d.max_tokens)
    parser.add_argument("--epochs", type=int, default=d.epochs, help="upper bound; early stopping usually ends sooner")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--warmup-fraction", type=float, default=d.warmup_fraction)
    parser.add_argument("--word-dropout", type=float, default=d.word_dropout,
                        help="chance a training token is replaced by <unk> (default: %(default)s)")
    parser.add_argument("--ema-decay", type=float, default=d.ema_decay,
                        help="moving-average decay of the evaluated weights; 0 turns it off (default: %(default)s)")
    parser.add_argument("--label-smoothing", type=float, default=d.label_smoothing,
                        help="share of each gold label spread over all labels, 0..1 (default: %(default)s)")
    parser.add_argument("--adversarial-epsilon", type=float, default=d.adversarial_epsilon,
                        help="L2 norm of the adversarial move of each text's input vectors; 0 = off (default: %(default)s)")
    parser.add_argument("--grad-clip", type=float, default=d.grad_clip)
    parser.add_argument("--patience", type=int, default=d.patience, help="dev evaluations without gain before stopping")
    parser.add_argument("--evals-per-epoch", type=int, default=d.evals_per_epoch)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=d.deterministic)
    parser.add_argument("--min-freq", type=int, default=d.min_freq)
    parser.add_argument("--max-vocab", type=int, default=d.max_vocab)
    parser.add_argument("--max-train-examples", type=int, default=d.max_train_examples)
    parser.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--weights-dtype", choices=("float32", "float16"), default=d.weights_dtype)
    parser.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=d.calibrate,
                        help="fit a softmax temperature on dev (default: on)")
    parser.add_argument("--time-limit", dest="time_limit_seconds", type=float, default=d.time_limit_seconds,
                        help="seconds; stop at the next dev evaluation after this long")
    parser.add_argument("--teachers", nargs="+", default=list(d.teachers), metavar="DIR",
                        help="checkpoint directories to distil from (default: none, gold labels only)")
    parser.add_argument("--distill-weight", type=float, default=d.distill_weight,
                        help="share of the teachers' soft-label loss, 0..1 (default: %(default)s)")
    parser.add_argument("--distill-temperature", type=float, default=d.distill_temperature,
                        help="softmax temperature for teacher and student soft labels (default: %(default)s)")
    parser.add_argument("--distill-online", action=argparse.BooleanOptionalAction, default=d.distill_online,
                        help="teachers label each batch after word dropout, not the clean phrases once (default: off)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        data_dir=args.data_dir, output_dir=args.output, name=args.name, version=args.model_version,
        cell=args.cell, embedding_dim=args.embedding_dim, hidden_size=args.hidden_size,
        num_layers=args.num_layers, bidirectional=args.bidirectional, pooling=args.pooling,
        subword_buckets=args.subword_buckets, dropout=args.dropout, max_tokens=args.max_tokens, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_fraction=args.warmup_fraction, word_dropout=args.word_dropout, ema_decay=args.ema_decay or None, label_smoothing=args.label_smoothing,
        adversarial_epsilon=args.adversarial_epsilon, grad_clip=args.grad_clip, patience=args.patience,
        evals_per_epoch=args.evals_per_epoch, seed=args.seed, deterministic=args.deterministic,
        min_freq=args.min_freq, max_vocab=args.max_vocab, max_train_examples=args.max_train_examples,
        threads=args.threads, weights_dtype=args.weights_dtype, calibrate=args.calibrate,
        time_limit_seconds=args.time_limit_seconds, teachers=tuple(args.teachers),
        distill_weight=args.distill_weight, distill_temperature=args.distill_temperature,
        distill_online=args.distill_online,
    )
