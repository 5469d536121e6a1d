"""Knowledge distillation: an ensemble of trained checkpoints teaches one network of the served size.

An average of several SST-2 networks beats each of them, but serving K networks multiplies
the latency and breaks the one-network Trace. Training one network to match the ensemble's
softened probabilities (Hinton et al. 2015, arXiv:1503.02531) carries part of the ensemble's
gain into a single network, so Predict, Trace and the checkpoint format stay as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .checkpoint import LoadedModel, load_checkpoint
from .data import Example, length_bucketed_batches
from .vocabulary import Vocabulary

__all__ = ["TeacherReport", "teacher_probabilities", "OnlineTeachers", "distillation_loss"]


@dataclass(frozen=True)
class TeacherReport:
    """The teachers' averaged probabilities for a list of examples, and how accurate they are."""

    probabilities: Tensor  # [N, C] mean over teachers of softmax(logits / temperature)
    accuracies: tuple[float, ...]  # each teacher's accuracy on the examples, in teacher order
    ensemble_accuracy: float  # accuracy of the averaged probabilities


def teacher_probabilities(teacher_dirs: Sequence[str | Path], examples: Sequence[Example],
                          labels: Sequence[str], temperature: float = 1.0,
                          batch_size: int = 256) -> TeacherReport:
    """Average the teachers' softened probabilities for each example, in example order.

    Each teacher reads the examples through its own vocabulary and truncation, so teachers
    of any architecture or vocabulary can teach. A teacher's logits already include the
    temperature it was calibrated with, so the average mixes calibrated probabilities; the
    distillation temperature softens them further.
    """
    _check_teachers(teacher_dirs, temperature)
    examples = list(examples)
    gold = torch.tensor([example.label for example in examples], dtype=torch.int64)  # [N]
    total = torch.zeros(len(examples), len(labels), dtype=torch.float64)  # [N, C]
    accuracies = []
    for directory in teacher_dirs:
        teacher = _load_teacher(directory, labels)
        probabilities = torch.zeros_like(total)  # [N, C]
        with torch.inference_mode():
            for batch in length_bucketed_batches(examples, teacher.vocab, batch_size,
                                                 max_tokens=teacher.config.max_tokens):
                assert batch.indices is not None
                logits = teacher.network(batch.token_ids, batch.lengths,
                                         subword_ids=batch.subword_ids).logits.double()  # [B, C]
                probabilities[batch.indices] = torch.softmax(logits / temperature, dim=-1)
        accuracies.append(float((probabilities.argmax(dim=-1) == gold).double().mean()))
        total += probabilities
    average = (total / len(teacher_dirs)).float()  # [N, C]
    ensemble_accuracy = float((average.argmax(dim=-1) == gold).double().mean())
    return TeacherReport(probabilities=average, accuracies=tuple(accuracies),
                         ensemble_accuracy=ensemble_accuracy)


class OnlineTeachers:
    """Teachers that answer for each training batch as the student sees it (after word dropout).

    Soft labels computed once on the clean training phrases are, for teachers that were fitted
    to those very phrases, little more than the gold labels. Asked about the corrupted batch
    instead, the teachers label inputs they never saw (Tang et al. 2019, arXiv:1903.12136,
    distil on augmented text), at the price of their forward passes at every step.
    """

    def __init__(self, teacher_dirs: Sequence[str | Path], vocab: Vocabulary,
                 labels: Sequence[str], temperature: float) -> None:
        _check_teachers(teacher_dirs, temperature)
        self.temperature = temperature
        self._teachers = []
        for directory in teacher_dirs:
            teacher = _load_teacher(directory, labels)
            # The student's ids in the teacher's vocabulary: the student's <unk> (a dropped
            # word) is the teacher's <unk>, padding its padding.
            id_map = torch.tensor(teacher.vocab.encode(vocab.tokens), dtype=torch.int64)  # [V_student]
            # The student's n-gram ids of its unknown tokens mean the same to a teacher that hashes
            # into as many buckets; any other teacher sees those tokens as plain <unk>.
            shares_subwords = teacher.config.subword_buckets == vocab.subword_buckets > 0
            self._teachers.append((teacher.network, id_map, shares_subwords))

    def probabilities(self, token_ids: Tensor, lengths: Tensor, subword_ids: Tensor | None = None) -> Tensor:
        """Mean over teachers of softmax(logits / T) for a student batch token_ids [B, T] (its
        unknown tokens' n-grams subword_ids [B, T, K] or None); [B, C]."""
        total = None
        # no_grad, not inference_mode: the result is a target inside the student's autograd graph.
        with torch.no_grad():
            for network, id_map, shares_subwords in self._teachers:
                subwords = subword_ids if shares_subwords else None
                logits = network(id_map[token_ids], lengths, subword_ids=subwords).logits  # [B, C]
                probabilities = torch.softmax(logits / self.temperature, dim=-1)
                total = probabilities if total is None else total + probabilities
        assert total is not None
        return total / len(self._teachers)  # [B, C]


def _check_teachers(teacher_dirs: Sequence[str | Path], temperature: float) -> None:
    if not teacher_dirs:
        raise ValueError("distillation needs at least one teacher checkpoint")
    if not temperature > 0.0:
        raise ValueError(f"distillation temperature must be > 0, got {temperature}")


def _load_teacher(directory: str | Path, labels: Sequence[str]) -> LoadedModel:
    """A teacher checkpoint, refused when its labels are not the student's, in the same order."""
    teacher = load_checkpoint(directory)
    if tuple(teacher.config.labels) != tuple(labels):
        raise ValueError(f"teacher {directory} has labels {list(teacher.config.labels)}, the student {list(labels)}")
    return teacher


def distillation_loss(logits: Tensor, labels: Tensor, teacher_probabilities: Tensor,
                      weight: float, temperature: float, label_smoothing: float = 0.0) -> Tensor:
    """(1 - weight) * cross-entropy on the gold labels + weight * T^2 * KL(teacher || student at T).

    logits [B, C] (the student's, temperature 1), labels [B], teacher_probabilities [B, C]
    already softened at `temperature`. The T^2 factor keeps the soft term's gradients the
    same size as the hard term's whatever T is (Hinton et al. 2015, section 2).
    """
    hard = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    if weight <= 0.0:
        return hard
    student = F.log_softmax(logits / temperature, dim=-1)  # [B, C]
    soft = F.kl_div(student, teacher_probabilities, reduction="batchmean") * temperature ** 2
    return (1.0 - weight) * hard + weight * soft
