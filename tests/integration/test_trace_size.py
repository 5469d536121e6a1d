"""Trace responses stay well under gRPC's default 4 MB message limit, even at the token limit."""

from __future__ import annotations

import grpc
import pytest

from rnn_sentiment.client import SentimentClient
from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc

DEFAULT_LIMIT = 4 * 1024 * 1024
# "a," is two tokens in two characters: the session server's 200-character limit holds 200 tokens.
LONGEST = "a," * 100


def test_a_trace_at_the_token_limit_with_every_allowed_option_is_well_under_4_mb(server, client: SentimentClient) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.SentimentServiceStub(channel)
        for info in client.list_models():
            if info.max_tokens > 200:
                pytest.skip(f"{info.name} reads {info.max_tokens} tokens; the session server's texts hold 200")
            request = pb.TraceRequest(
                # The memory profile stops well short of the token limit (MAX_MEMORY_PROFILE_UNIT_TOKENS).
                text=LONGEST, model=info.name, include_hidden_states=True, all_layers=True,
                attributions=[pb.ATTRIBUTION_METHOD_PREFIX, pb.ATTRIBUTION_METHOD_GRADIENT_X_INPUT,
                              pb.ATTRIBUTION_METHOD_INTEGRATED_GRADIENTS, pb.ATTRIBUTION_METHOD_OCCLUSION],
            )
            response = stub.Trace(request, timeout=120)
            assert len(response.steps) == info.max_tokens and response.prediction.truncated
            size = response.ByteSize()
            arch = info.architecture
            width = arch.hidden_size * (2 if arch.bidirectional else 1)
            assert len(response.steps[0].hidden_state) == width
            # "Well under": half the limit, with every field of every step filled.
            assert size < DEFAULT_LIMIT / 2, f"{info.name}: {size} bytes"
            smaller = stub.Trace(pb.TraceRequest(text=LONGEST, model=info.name, include_hidden_states=True,
                                                 top_k_units=16), timeout=120)
            assert all(len(s.hidden_state) == min(16, width) for s in smaller.steps)
            assert smaller.ByteSize() < size
