"""Evaluation's calibration numbers: ECE before scaling recovers the unscaled probabilities."""

from __future__ import annotations

import math

import pytest

from rnn_sentiment.model.evaluation import _unscaled_confidence


def _softmax(logits: list[float]) -> list[float]:
    top = max(logits)
    weights = [math.exp(z - top) for z in logits]
    return [w / sum(weights) for w in weights]


@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.7, 3.0])
def test_unscaled_confidence_undoes_the_temperature(temperature: float) -> None:
    logits = [0.3, 2.1]
    scaled = _softmax([z / temperature for z in logits])
    assert _unscaled_confidence(scaled, temperature) == pytest.approx(max(_softmax(logits)), rel=1e-9)


def test_temperature_one_changes_nothing() -> None:
    probabilities = [0.2, 0.8]
    assert _unscaled_confidence(probabilities, 1.0) == pytest.approx(0.8)
