"""TraceRequest -> TraceOptions: the knobs carried over, bad ones refused with the field named."""

from __future__ import annotations

import grpc
import pytest

from rnn_sentiment.server.errors import ServiceError
from rnn_sentiment.server.trace_options import trace_options_from
from rnn_sentiment.v1 import sentiment_pb2 as pb


def test_the_request_knobs_become_options() -> None:
    options = trace_options_from(pb.TraceRequest(
        text="good", attributions=[pb.ATTRIBUTION_METHOD_PREFIX, pb.ATTRIBUTION_METHOD_OCCLUSION],
        integrated_gradients_steps=8, all_layers=True, include_memory_profile=True, include_hidden_states=True))
    assert options.attributions == ("prefix", "occlusion")
    assert (options.integrated_gradients_steps, options.all_layers, options.memory) == (8, True, True)
    assert options.hidden_states


def test_hidden_states_are_built_only_when_the_response_carries_them() -> None:
    assert not trace_options_from(pb.TraceRequest(text="good", include_hidden_states=False)).hidden_states


def test_bad_knobs_are_named() -> None:
    with pytest.raises(ServiceError) as raised:
        trace_options_from(pb.TraceRequest(text="good", attributions=[99], integrated_gradients_steps=100000,
                                           top_k_units=-1))
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    for field in ("attributions[0]", "integrated_gradients_steps", "top_k_units"):
        assert field in raised.value.message
