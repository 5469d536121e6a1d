"""make bench's recomputed bound: the no-op front end's cost plus the model's, per call."""

from __future__ import annotations

import pytest

from bench.run import front_end_and_model_bound, model_texts_per_core_s

DOCUMENT = {"ceiling_b": {"1": {"batches": [{"batch": 1, "texts_per_s": 3000.0}, {"batch": 4, "texts_per_s": 5000.0},
                                            {"batch": 16, "texts_per_s": 7000.0}]}}}


def test_model_cost_is_interpolated_in_log_batch_and_clamped_at_the_ends() -> None:
    assert model_texts_per_core_s(DOCUMENT, 1) == 3000.0
    assert model_texts_per_core_s(DOCUMENT, 2) == pytest.approx(4000.0)  # halfway between 1 and 4 in log2
    assert model_texts_per_core_s(DOCUMENT, 8) == pytest.approx(6000.0)
    assert model_texts_per_core_s(DOCUMENT, 0.5) == 3000.0
    assert model_texts_per_core_s(DOCUMENT, 64) == 7000.0
    assert model_texts_per_core_s({"ceiling_b": {}}, 4) is None


def test_the_bound_adds_front_end_and_model_time_on_the_cores_the_no_op_server_got() -> None:
    # 5,000 no-op req/s on 1.6 cores: 320 us of CPU a call; the model at 4,000 texts/s a core: 250 us.
    bound = front_end_and_model_bound({"rps": 5000.0, "server_cpu_cores": 1.6}, 4000.0)
    assert bound == pytest.approx(1.6 / (320e-6 + 250e-6))
    assert bound < 5000.0
