"""Train a SentimentRNN on SST-2, keep the best-dev weights, calibrate, write a checkpoint."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import Tensor, nn

from .checkpoint import save_checkpoint
from .config import ModelConfig, TrainingRecord
from .data import Batch, Example, length_bucketed_batches, read_sst_tsv
from .distillation import OnlineTeachers, distillation_loss, teacher_probabilities
from .metrics import classification_metrics
from .network import SentimentRNN
from .train_config import WEIGHTS_DTYPES, TrainConfig
from .vocabulary import UNK_ID, Vocabulary

__all__ = ["TrainConfig", "train", "fit_temperature",
           "adversarial_loss"]

LOG_FILE = "training_log.jsonl"


def train(config: TrainConfig, progress: bool = True) -> TrainingRecord:
    """Train, keep the best dev-accuracy weights, calibrate, save; return the training record."""
    # Process-wide torch settings are restored afterwards: train() may run inside a server or a test.
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        return _train(config, progress)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train(config: TrainConfig, progress: bool) -> TrainingRecord:
    model_config = _checked_model_config(config)
    started = time.monotonic()
    _seed_everything(config.seed, config.deterministic)
    torch.set_num_threads(config.threads)
    rng = random.Random(config.seed)  # draws the training sample, then every epoch's batch order
    data = _load_data(config, model_config, rng)
    network = SentimentRNN(model_config, len(data.vocab))
    if model_config.subword_buckets:
        network.set_known_subwords(data.vocab.known_subword_table())
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with (output_dir / LOG_FILE).open("w", encoding="utf-8") as log:
        _log(log, event="start", config=dataclasses.asdict(config), vocab_size=len(data.vocab),
             train_examples=len(data.train_examples), dev_examples=len(data.dev_examples),
             parameters=sum(p.numel() for p in network.parameters()), **data.teacher_summary)
        run = _Run.start(config, network, data, rng, log, started, progress)
        for _ in range(config.epochs):
            if _run_epoch(run):
                break
        if run.bar is not None:
            run.bar.close()
        return _write_checkpoint(run, model_config, output_dir)


def _checked_model_config(config: TrainConfig) -> ModelConfig:
    """The architecture to train, after refusing settings no run can use (ValueError naming them)."""
    model_config = config.model_config()
    if not 0.0 <= config.label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {config.label_smoothing}")
    if config.adversarial_epsilon < 0.0:
        raise ValueError(f"adversarial_epsilon must be >= 0, got {config.adversarial_epsilon}")
    if config.weights_dtype not in WEIGHTS_DTYPES:
        raise ValueError(f"invalid weights_dtype {config.weights_dtype!r}; options are {list(WEIGHTS_DTYPES)}")
    return model_config


@dataclass
class _TrainingData:
    """What a run reads before its first step."""

    train_examples: list[Example]
    dev_examples: list[Example]
    dev_batches: list[Batch]
    vocab: Vocabulary
    num_classes: int
    soft_targets: Tensor | None  # the teachers' labels of train_examples [N, C], offline distillation
    online_teachers: OnlineTeachers | None
    teacher_summary: dict[str, Any]
    data_name: str  # the data directory's name, recorded in the checkpoint


def _load_data(config: TrainConfig, model_config: ModelConfig, rng: random.Random) -> _TrainingData:
    """Read and check the examples, sample the training set, build the vocabulary, ask the teachers."""
    data_dir = Path(config.data_dir)
    for split in ("train.tsv", "dev.tsv"):
        if not (data_dir / split).is_file():
            raise FileNotFoundError(f"{data_dir / split} not found; pass --data DIR holding SST-2 "
                                    f"train.tsv and dev.tsv")
    train_examples = read_sst_tsv(data_dir / "train.tsv")
    dev_examples = read_sst_tsv(data_dir / "dev.tsv")
    if config.max_train_examples is not None and config.max_train_examples < len(train_examples):
        train_examples = rng.sample(train_examples, config.max_train_examples)
    num_classes = len(model_config.labels)
    for example in (*train_examples, *dev_examples):
        if not 0 <= example.label < num_classes:
            raise ValueError(f"label {example.label} outside 0..{num_classes - 1}")

    vocab = Vocabulary.build((e.tokens for e in train_examples), config.min_freq, config.max_vocab,
                             model_config.subword_buckets)
    soft_targets, teacher_summary = _teacher_targets(config, train_examples, dev_examples, model_config)
    online = (OnlineTeachers(config.teachers, vocab, model_config.labels, config.distill_temperature)
              if config.teachers and config.distill_online else None)
    return _TrainingData(
        train_examples=train_examples, dev_examples=dev_examples,
        dev_batches=length_bucketed_batches(dev_examples, vocab, 256, max_tokens=config.max_tokens),
        vocab=vocab, num_classes=num_classes, soft_targets=soft_targets, online_teachers=online,
        teacher_summary=teacher_summary, data_name=data_dir.resolve().name,
    )


@dataclass
class _BestWeights:
    """Early stopping's memory: the best dev accuracy so far, when, and the weights that scored it."""

    state: dict[str, Tensor]
    accuracy: float = -1.0
    step: int = 0
    evaluations_without_gain: int = 0

    def offer(self, accuracy: float, step: int, network: nn.Module) -> None:
        """Keep the network's current weights if they beat the best (call with the evaluated weights in)."""
        if accuracy > self.accuracy:
            self.accuracy, self.step, self.state = accuracy, step, _copy_state(network)
            self.evaluations_without_gain = 0
        else:
            self.evaluations_without_gain += 1


@dataclass
class _Run:
    """A training run in progress: the network, its optimiser and schedule, and where it stands."""

    config: TrainConfig
    network: SentimentRNN
    data: _TrainingData
    rng: random.Random
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    parameters: list[nn.Parameter]
    averaged: list[Tensor] | None  # the moving average of the parameters (ema_decay), or None
    best: _BestWeights
    log: TextIO
    bar: Any  # a tqdm bar, or None
    started: float
    steps_per_epoch: int
    total_steps: int
    eval_every: int
    step: int = 0
    running_loss: float = 0.0  # summed over the texts since the last evaluation
    running_count: int = 0

    @classmethod
    def start(cls, config: TrainConfig, network: SentimentRNN, data: _TrainingData, rng: random.Random,
              log: TextIO, started: float, progress: bool) -> "_Run":
        steps_per_epoch = math.ceil(len(data.train_examples) / config.batch_size)
        total_steps = steps_per_epoch * config.epochs
        optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _warmup_cosine(max(1, int(config.warmup_fraction * total_steps)), total_steps))
        parameters = list(network.parameters())
        return cls(
            config=config, network=network, data=data, rng=rng, optimizer=optimizer, scheduler=scheduler,
            parameters=parameters,
            averaged=[p.detach().clone() for p in parameters] if config.ema_decay else None,
            best=_BestWeights(state=_copy_state(network)), log=log, bar=_progress_bar(total_steps, progress),
            started=started, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
            eval_every=max(1, steps_per_epoch // max(1, config.evals_per_epoch)),
        )


def _run_epoch(run: _Run) -> bool:
    """One pass over the training data, evaluating on dev as scheduled; True when training should stop."""
    config = run.config
    run.network.train()
    for batch in length_bucketed_batches(run.data.train_examples, run.data.vocab, config.batch_size, run.rng,
                                         max_tokens=config.max_tokens):
        loss = _training_step(run, batch)
        run.step += 1
        run.running_loss += loss * len(batch.labels)
        run.running_count += len(batch.labels)
        if run.bar is not None:
            run.bar.update(1)
        if run.step % run.eval_every and run.step != run.total_steps:
            continue
        if _evaluate(run):
            return True
    return False


def _training_step(run: _Run, batch: Batch) -> float:
    """One optimiser step on one batch; returns its loss."""
    config, network = run.config, run.network
    token_ids, subword_ids = _drop_words(network, batch, config.word_dropout)  # [B, T], [B, T, K]
    embedded = network.embed(token_ids, subword_ids)  # [B, T, E]
    logits = network.forward_embedded(embedded, batch.lengths).logits  # [B, C]
    if run.data.online_teachers is not None:
        teachers = run.data.online_teachers.probabilities(token_ids, batch.lengths, subword_ids)
        loss = distillation_loss(logits, batch.labels, teachers, config.distill_weight,
                                 config.distill_temperature, config.label_smoothing)
    elif run.data.soft_targets is None:
        loss = nn.functional.cross_entropy(logits, batch.labels, label_smoothing=config.label_smoothing)
    else:
        assert batch.indices is not None
        loss = distillation_loss(logits, batch.labels, run.data.soft_targets[batch.indices], config.distill_weight,
                                 config.distill_temperature, config.label_smoothing)
    if config.adversarial_epsilon > 0:
        loss = loss + adversarial_loss(network, embedded, batch.lengths, batch.labels, loss,
                                       config.adversarial_epsilon, config.label_smoothing)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(network.parameters(), config.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    if run.averaged is not None:
        with torch.no_grad():
            for average, parameter in zip(run.averaged, run.parameters):
                average.lerp_(parameter, 1.0 - config.ema_decay)  # type: ignore[operator]
    return loss.item()


def _evaluate(run: _Run) -> bool:
    """Score the (averaged) weights on dev, keep the best, log; True when early stopping or the
    time limit says to stop."""
    config, best = run.config, run.best
    with _swapped_in(run.parameters, run.averaged):
        metrics = classification_metrics(*_dev_predictions(run.network, run.data.dev_batches), run.data.num_classes)
        best.offer(metrics.accuracy, run.step, run.network)
    run.network.train()
    train_loss = run.running_loss / max(1, run.running_count)
    run.running_loss, run.running_count = 0.0, 0
    elapsed = time.monotonic() - run.started
    _log(run.log, event="eval", step=run.step, epoch=round(run.step / run.steps_per_epoch, 3),
         train_loss=round(train_loss, 5), dev_accuracy=round(metrics.accuracy, 5),
         dev_macro_f1=round(metrics.macro_f1, 5), lr=run.scheduler.get_last_lr()[0],
         elapsed_seconds=round(elapsed, 1))
    if run.bar is not None:
        run.bar.set_postfix(loss=f"{train_loss:.3f}", dev=f"{metrics.accuracy:.3f}", best=f"{best.accuracy:.3f}")
    return best.evaluations_without_gain >= config.patience or (
        config.time_limit_seconds is not None and elapsed >= config.time_limit_seconds)


def _write_checkpoint(run: _Run, model_config: ModelConfig, output_dir: Path) -> TrainingRecord:
    """Load the best weights as they will ship, score them on dev, calibrate, save; the record."""
    config, network = run.config, run.network
    network.load_state_dict(run.best.state)
    # What ships: each known word's n-grams folded into its vector (same answers, computed once).
    network.fold_known_subwords()
    if config.weights_dtype == "float16":
        # Score what will be shipped: the weights as they come back from a float16 file.
        with torch.no_grad():
            for parameter in network.parameters():
                parameter.copy_(parameter.half().float())
    network.eval()
    gold, predicted, logits = _dev_predictions(network, run.data.dev_batches, with_logits=True)
    final = classification_metrics(gold, predicted, run.data.num_classes)
    temperature = fit_temperature(logits, torch.tensor(gold)) if config.calibrate else 1.0
    model_config = dataclasses.replace(model_config, temperature=temperature)
    network.config = model_config
    record = TrainingRecord(
        dev_accuracy=round(final.accuracy, 5),
        dev_macro_f1=round(final.macro_f1, 5),
        epochs_run=round(run.step / run.steps_per_epoch, 3),
        best_epoch=round(run.best.step / run.steps_per_epoch, 3),
        seed=config.seed,
        train_seconds=round(time.monotonic() - run.started, 1),
        train_examples=len(run.data.train_examples),
        trained_at=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        data=run.data.data_name,
    )
    save_checkpoint(output_dir, network, run.data.vocab, model_config, config.name, config.version,
                    record, weights_dtype=config.weights_dtype)
    _log(run.log, event="end", temperature=temperature, **record.to_dict())
    return record


def _teacher_targets(config: TrainConfig, train_examples: list[Example], dev_examples: list[Example],
                     model_config: ModelConfig) -> tuple[Tensor | None, dict[str, Any]]:
    """The teachers' soft labels for the training examples [N, C], and what to log about them."""
    if not config.teachers:
        return None, {}
    if not 0.0 <= config.distill_weight <= 1.0:
        raise ValueError(f"distill_weight must be in [0, 1], got {config.distill_weight}")
    started = time.monotonic()
    # Online distillation asks the teachers during training; this pass then only reports.
    on_train = teacher_probabilities(config.teachers, train_examples, model_config.labels,
                                     config.distill_temperature) if not config.distill_online else None
    # Dev accuracy of the teachers is logged so a run shows how far the student is from them;
    # it is never used for training (temperature 1: the ensemble as it would be served).
    on_dev = teacher_probabilities(config.teachers, dev_examples, model_config.labels)
    summary = {
        "teacher_dev_accuracies": [round(a, 5) for a in on_dev.accuracies],
        "teacher_ensemble_dev_accuracy": round(on_dev.ensemble_accuracy, 5),
        "teacher_seconds": round(time.monotonic() - started, 1),
    }
    if on_train is None:
        return None, summary
    summary["teacher_ensemble_train_accuracy"] = round(on_train.ensemble_accuracy, 5)
    return on_train.probabilities, summary


def fit_temperature(logits: Tensor, labels: Tensor) -> float:
    """The single temperature minimising dev NLL (Guo et al. 2017), by a log-spaced grid search.

    A grid is enough for one scalar and, unlike LBFGS, cannot diverge on a tiny dev set.
    """
    logits = logits.double()  # [N, C]
    candidates = torch.exp(torch.linspace(math.log(0.2), math.log(10.0), 801, dtype=torch.float64))  # [K]
    scaled = logits.unsqueeze(0) / candidates.view(-1, 1, 1)  # [K, N, C]
    nll = -torch.log_softmax(scaled, dim=-1).gather(
        -1, labels.view(1, -1, 1).expand(len(candidates), -1, 1)).squeeze(-1).mean(dim=1)  # [K]
    return round(float(candidates[int(torch.argmin(nll))]), 4)


def _dev_predictions(network: SentimentRNN, batches: list[Batch], with_logits: bool = False):
    network.eval()
    gold: list[int] = []
    predicted: list[int] = []
    all_logits: list[Tensor] = []
    with torch.inference_mode():
        for batch in batches:
            logits = network(batch.token_ids, batch.lengths, subword_ids=batch.subword_ids).logits  # [B, C]
            gold.extend(batch.labels.tolist())
            predicted.extend(logits.argmax(dim=-1).tolist())
            all_logits.append(logits)
    if with_logits:
        return gold, predicted, torch.cat(all_logits)
    return gold, predicted


@contextlib.contextmanager
def _swapped_in(parameters: list[nn.Parameter], replacement: list[Tensor] | None):
    """Temporarily load replacement values (the averaged weights) into the parameters."""
    if replacement is None:
        yield
        return
    with torch.no_grad():
        saved = [p.detach().clone() for p in parameters]
        for parameter, value in zip(parameters, replacement):
            parameter.copy_(value)
    try:
        yield
    finally:
        with torch.no_grad():
            for parameter, value in zip(parameters, saved):
                parameter.copy_(value)


def adversarial_loss(network: SentimentRNN, embedded: Tensor, lengths: Tensor, labels: Tensor, loss: Tensor,
                     epsilon: float, label_smoothing: float = 0.0) -> Tensor:
    """The gold loss on the input vectors embedded [B, T, E] moved by epsilon (L2 norm per text)
    along the gradient of `loss`: to first order, the nearby input the network gets most wrong.

    The direction is a constant (no second-order terms, as in Miyato et al.); the loss still
    reaches the word vectors through `embedded`. Padding positions get no gradient, so no move.
    Gold labels only: with teachers, `loss` (which holds their term) only sets the direction.
    """
    gradient, = torch.autograd.grad(loss, embedded, retain_graph=True)  # [B, T, E]
    norms = gradient.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)  # [B, 1, 1]
    logits = network.forward_embedded(embedded + epsilon * gradient / norms, lengths).logits  # [B, C]
    return nn.functional.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def _drop_words(network: SentimentRNN, batch: Batch, probability: float) -> tuple[Tensor, Tensor | None]:
    """Word dropout: each known token becomes <unk> with `probability`, keeping its n-grams."""
    if probability <= 0.0:
        return batch.token_ids, batch.subword_ids
    token_ids = batch.token_ids
    # Only known words: an unknown one is <unk> already, and its n-grams must stay.
    dropped = (torch.rand(token_ids.shape) < probability) & (token_ids > UNK_ID)  # [B, T]
    return network.drop_words(token_ids, batch.subword_ids, dropped)


def _copy_state(network: nn.Module) -> dict[str, Tensor]:
    return {key: value.detach().clone() for key, value in network.state_dict().items()}


def _warmup_cosine(warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this for deterministic GEMMs; harmless on CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm  # optional at serve time; only training shows a bar
    return tqdm(total=total, unit="step", dynamic_ncols=True)


def _log(handle: TextIO, **fields: Any) -> None:
    handle.write(json.dumps(fields) + "\n")
    handle.flush()
