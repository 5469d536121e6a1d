"""TrainConfig: every setting of a training run, each with the help text its flag shows.

`rnn-sentiment train` generates one flag per field from this dataclass (cli/train_command.py),
so a new setting is one field here: its default, its type, `help` and, if it has them, `choices`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from .config import CELLS, POOLINGS, ModelConfig

__all__ = ["WEIGHTS_DTYPES", "TrainConfig", "setting"]

WEIGHTS_DTYPES = ("float32", "float16")


def setting(default: Any, help_text: str, *, choices: Sequence[str] | None = None, metavar: str | None = None) -> Any:
    """A TrainConfig field with what `--help` says about it (and the values it accepts)."""
    return field(default=default, metadata={"help": help_text, "choices": choices, "metavar": metavar})


@dataclass
class TrainConfig:
    """Everything a training run needs; the defaults train the shipped sst2-gru model."""

    # Relative to cwd: the project root's sibling `shared/`.
    data_dir: str = setting("../shared/data/sst2", "directory with SST-2 train.tsv and dev.tsv")
    output_dir: str = setting("model/checkpoints/sst2-gru", "checkpoint directory to write (the log goes in it)")
    name: str = setting("sst2-gru", "model name stored in the checkpoint")
    # sst2-gru 2: sub-word n-grams; 2.1: adversarial training, dropout 0.4, 3 epochs.
    version: str = setting("2.1.0", "model version stored in the checkpoint")
    cell: str = setting("gru", "recurrent cell", choices=CELLS)
    embedding_dim: int = setting(256, "word vector size")
    hidden_size: int = setting(256, "hidden state size of each recurrent layer")
    num_layers: int = setting(1, "stacked recurrent layers")
    bidirectional: bool = setting(False, "also read each text right to left")
    pooling: str = setting("last", "how the classifier reads the states", choices=POOLINGS)
    # Hashed character n-gram rows (model/subwords.py); 0 = word vectors only. 10,000 gained
    # 1.5 dev points over seeds 1-3 (docs/models.md) at 2.56 M parameters.
    subword_buckets: int = setting(10000, "hashed character 3-5-gram rows added to each word's vector; 0 = none")
    # Random-init embeddings over 67k short phrases overfit within 2 epochs. 0.5 before adversarial
    # training took over part of the regularising; with it, 0.4 (docs/models.md).
    dropout: float = setting(0.4, "dropout on the word vectors, the pooled state and between layers, 0..1")
    max_tokens: int = setting(128, "longest text, in tokens, read in training and stored in the checkpoint")
    # The cosine decay ends with the last epoch. Without adversarial training SST-2 GRUs peak within
    # 2 epochs of the phrase data and a third did not help; with it they peak later, and 3 epochs
    # gained 0.67 dev points over 2 (seeds 1-5, docs/models.md).
    epochs: int = setting(3, "upper bound; early stopping usually ends sooner")
    batch_size: int = setting(64, "texts per training step")
    lr: float = setting(2e-3, "peak AdamW learning rate")
    weight_decay: float = setting(0.01, "AdamW weight decay")
    warmup_fraction: float = setting(0.03, "share of all steps with a linear warmup, then cosine decay to zero")
    # Trains <unk> (every unseen word at serve time) and regularises; 0.1 gained ~0.5 dev points
    # over 0.0 on the GRU defaults.
    word_dropout: float = setting(0.1, "chance a training token is replaced by <unk>")
    # e.g. 0.998: evaluate and keep a moving average of the weights (Polyak averaging). Off by
    # default: on SST-2 with the GRU defaults the average scored below the raw weights.
    ema_decay: float | None = setting(None, "moving-average decay of the evaluated weights; 0 turns it off")
    # Szegedy et al. 2016.
    label_smoothing: float = setting(0.0, "share of each gold label spread over all labels, 0..1")
    # Adversarial training (Miyato et al. 2017, arXiv:1605.07725): each batch is also learned with
    # its input vectors moved this far (L2 norm per text) in the direction that raises the loss
    # most. Word vectors have norm ~2, so 0.5 moves a 20-word text by about 5%; its dev gain is
    # in docs/models.md.
    adversarial_epsilon: float = setting(
        0.5, "L2 norm of the adversarial move of each text's input vectors; 0 = off")
    # Recurrent nets occasionally explode (Pascanu et al. 2013).
    grad_clip: float = setting(5.0, "largest gradient norm; larger gradients are scaled down to it")
    patience: int = setting(4, "dev evaluations without gain before stopping")  # 4: one epoch
    # The peak is sharp; evaluating more often than once per epoch finds it.
    evals_per_epoch: int = setting(4, "dev evaluations per epoch")
    # The shipped sst2-gru's seed. Seeds 1-5 gave 87.0/86.8/87.2/87.3/86.8 dev accuracy with these
    # defaults (85.7/86.2/85.9/85.8/85.7 with 2.0.0's: no adversarial term, dropout 0.5, 2 epochs),
    # so about half a point of seed noise on 872 sentences. Seed 3 ships, as it did for 2.0.0.
    seed: int = setting(3, "seed of every random choice (same seed, same weights)")
    deterministic: bool = setting(True, "use torch's deterministic algorithms")
    min_freq: int = setting(1, "fewest occurrences in the training data for a word to get its own vector")
    max_vocab: int | None = setting(None, "most words in the vocabulary (the most frequent)")
    max_train_examples: int | None = setting(None, "train on a random sample of this many examples (tiny runs)")
    threads: int = setting(1, "torch CPU threads")
    weights_dtype: str = setting(
        "float16", "weights as stored; float16 halves the checkpoint, dev accuracy is measured after rounding",
        choices=WEIGHTS_DTYPES)
    calibrate: bool = setting(True, "fit a softmax temperature on dev NLL (ModelConfig.temperature)")
    time_limit_seconds: float | None = setting(None, "seconds; stop at the next dev evaluation after this long")
    # Knowledge distillation (model/distillation.py): teachers of any cell, size or vocabulary,
    # whose averaged, softened probabilities the network also learns from.
    teachers: tuple[str, ...] = setting((), "checkpoint directories to distil from (none: gold labels only)",
                                        metavar="DIR")
    distill_weight: float = setting(0.5, "share of the teachers' soft-label loss, 0..1; the rest is gold CE")
    distill_temperature: float = setting(2.0, "softmax temperature for teacher and student soft labels")
    # Slower (a teacher forward each step), but the teachers label inputs the student really sees.
    distill_online: bool = setting(
        False, "teachers label each batch after word dropout, not the clean phrases once")

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            cell=self.cell, embedding_dim=self.embedding_dim, hidden_size=self.hidden_size,
            num_layers=self.num_layers, bidirectional=self.bidirectional, pooling=self.pooling,
            dropout=self.dropout, max_tokens=self.max_tokens, subword_buckets=self.subword_buckets,
        ).validate()
