"""What a trace reports about the state after each token, defined once for Trace and streaming."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["hidden_and_change_norms"]


def hidden_and_change_norms(hidden: Tensor, before_first: Tensor | None = None) -> tuple[list[float], list[float]]:
    """TraceStep.hidden_norm and change_norm of consecutive top-layer states hidden [T, H]:
    ‖h_t‖ and ‖h_t − h_(t−1)‖, where h_(−1) is before_first [H] (zeros at the start of a text:
    the recurrence starts from a zero state)."""
    first = torch.zeros_like(hidden[:1]) if before_first is None else before_first.reshape(1, -1).to(hidden)
    before = torch.cat([first, hidden[:-1]])  # [T, H]
    # Both norms in one conversion: per-element tolist()/float() calls cost more than the maths.
    hidden_norms, change_norms = torch.linalg.vector_norm(torch.stack([hidden, hidden - before]), dim=-1).tolist()
    return hidden_norms, change_norms
