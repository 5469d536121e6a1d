"""client/stream_core.py: failover bookkeeping, the retry backoff, StreamPredict requests and errors."""

from __future__ import annotations

import json

import grpc
import pytest

from rnn_sentiment.client.channel import RetryPolicy, channel_settings
from rnn_sentiment.client.stream_core import (
    REPLAY_PIECE_CHARS, Backoff, SentText, can_retry, error_of, predict_requests,
)
from rnn_sentiment.v1 import sentiment_pb2 as pb


def test_the_backoff_is_the_channels_retry_policy() -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff_seconds=0.2, max_backoff_seconds=1.5, backoff_multiplier=3)
    settings = channel_settings(retry=policy, environ={})
    assert Backoff.from_channel_options(settings.options) == Backoff(3, 0.2, 1.5, 3.0)
    assert Backoff.from_channel_options(channel_settings(environ={}).options) == Backoff()
    assert Backoff.from_channel_options(channel_settings(retry=False, environ={}).options) is None
    assert Backoff.from_channel_options(channel_settings(environ={"RNN_SENTIMENT_RETRY": "false"}).options) is None


def test_each_wait_is_random_up_to_a_growing_capped_backoff() -> None:
    backoff = Backoff(max_attempts=5, initial_seconds=0.1, max_seconds=0.3, multiplier=2)
    waits = [[backoff.delay(retry) for _ in range(200)] for retry in range(4)]
    for retry, ceiling in enumerate((0.1, 0.2, 0.3, 0.3)):
        assert 0 <= min(waits[retry]) and max(waits[retry]) <= ceiling
        assert max(waits[retry]) > ceiling / 2  # jittered over the whole range, not fixed


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


def test_unavailable_and_idle_streams_are_reopened_within_the_attempts() -> None:
    backoff = Backoff(max_attempts=3)
    unavailable = FakeRpcError(grpc.StatusCode.UNAVAILABLE)
    assert [can_retry(unavailable, backoff, n, has_deadline=False) for n in range(3)] == [True, True, False]
    assert can_retry(unavailable, backoff, 0, has_deadline=True)
    # DEADLINE_EXCEEDED ends a stream without a deadline only when the server found it idle.
    idle = FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED)
    assert can_retry(idle, backoff, 0, has_deadline=False)
    assert not can_retry(idle, backoff, 0, has_deadline=True)  # the caller's own deadline passed
    for code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.NOT_FOUND):
        assert not can_retry(FakeRpcError(code), backoff, 0, has_deadline=False)
    assert not can_retry(unavailable, None, 0, has_deadline=False)  # retries off


def test_the_replay_is_the_acknowledged_text_and_opens_the_stream_with_its_model() -> None:
    sent = SentText(model="sst2-rnn", include_steps=True)
    assert sent.replay() == []
    assert sent.request("the pl", first=True) == pb.StreamSentimentRequest(
        text="the pl", model="sst2-rnn", include_steps=True)
    assert sent.request("ot", first=False) == pb.StreamSentimentRequest(text="ot")
    for chunk in ["the pl", "", "ot is du", "ll"]:
        sent.acknowledge(chunk)
    (replay,) = sent.replay()
    assert replay == pb.StreamSentimentRequest(text="the plot is dull", model="sst2-rnn", include_steps=True)


def test_a_long_replay_goes_in_pieces_no_longer_than_the_server_accepted() -> None:
    sent = SentText(model="m", include_steps=False)
    words = [f"word{i} " for i in range(600)]
    for word in words:
        sent.acknowledge(word)
    pieces = sent.replay()
    assert "".join(p.text for p in pieces) == "".join(words)
    assert all(len(p.text) <= REPLAY_PIECE_CHARS for p in pieces) and len(pieces) > 1
    assert not any(p.model or p.include_steps for p in pieces[1:])  # only the first opens the stream
    sent.acknowledge("x" * (REPLAY_PIECE_CHARS + 500))  # the server took a chunk this long
    assert max(len(p.text) for p in sent.replay()) == REPLAY_PIECE_CHARS + 500


def test_predict_requests_batch_the_texts_and_number_them() -> None:
    requests = list(predict_requests(iter(["a", "b", "c", "d", "e"]), model="m", batch=2))
    assert [(r.id, list(r.request.texts), r.request.model) for r in requests] == [
        ("0", ["a", "b"], "m"), ("1", ["c", "d"], "m"), ("2", ["e"], "m")]
    with pytest.raises(ValueError, match="batch"):
        list(predict_requests(["a"], model="", batch=0))


def test_a_stream_error_becomes_the_unary_calls_sentiment_error() -> None:
    response = pb.StreamPredictResponse(id="7", error=pb.StreamError(
        code=3, message="texts[1]: must contain ...",
        field_violations=[pb.FieldViolation(field="request.texts[1]", description="must contain ...")]))
    error = error_of(response)
    assert error is not None
    assert (error.code, error.message, error.field_violations) == (
        "INVALID_ARGUMENT", "texts[1]: must contain ...", {"texts[1]": "must contain ..."})
    assert error_of(pb.StreamPredictResponse(id="8", error=pb.StreamError(code=8, message="full"))).code == \
        "RESOURCE_EXHAUSTED"
    assert error_of(pb.StreamPredictResponse(id="9", response=pb.PredictResponse())) is None


def test_streams_fail_over_only_when_the_channels_policy_retries_unavailable() -> None:
    # A caller's own service config decides: no retry policy, or one that retries other codes
    # only, means a failed stream is not reopened either.
    def backoff(service_config: dict) -> Backoff | None:  # type: ignore[type-arg]
        return Backoff.from_channel_options([("grpc.enable_retries", 1),
                                             ("grpc.service_config", json.dumps(service_config))])

    overload_only = {"maxAttempts": 3, "initialBackoff": "0.5s", "maxBackoff": "1s", "backoffMultiplier": 2,
                     "retryableStatusCodes": ["RESOURCE_EXHAUSTED"]}
    assert backoff({"methodConfig": [{"name": [{}], "timeout": "5s"}]}) is None
    assert backoff({"methodConfig": [{"name": [{}], "retryPolicy": overload_only}]}) is None
    assert backoff({}) is None
    # The first policy that retries UNAVAILABLE is the one streams follow.
    both = {**overload_only, "retryableStatusCodes": ["RESOURCE_EXHAUSTED", "UNAVAILABLE"]}
    assert backoff({"methodConfig": [{"name": [{}], "timeout": "5s"}, {"name": [{}], "retryPolicy": both}]}) == \
        Backoff(3, 0.5, 1.0, 2.0)


def test_streams_do_not_fail_over_when_the_caller_turned_grpcs_retries_off() -> None:
    # Retries off by the channel option alone: the default service config is still there, unused.
    off = channel_settings(options=[("grpc.enable_retries", 0)], environ={})
    assert dict(off.options)["grpc.service_config"] and Backoff.from_channel_options(off.options) is None
    own_config = RetryPolicy(max_attempts=4).service_config()
    assert Backoff.from_channel_options(channel_settings(
        retry=False, options=[("grpc.service_config", own_config)], environ={}).options) is None
    assert Backoff.from_channel_options(channel_settings(
        options=[("grpc.service_config", own_config)], environ={}).options) == Backoff(max_attempts=4)
    # Retries on but no service config: nothing to follow.
    assert Backoff.from_channel_options([("grpc.enable_retries", 1)]) is None


def test_a_replay_takes_as_few_messages_as_1000_character_pieces_allow() -> None:
    # Each replayed piece is a chunk the server counts (rnn_sentiment_stream_chunks_total) and
    # steps: 2,500 acknowledged characters go back in three messages, not more.
    sent = SentText(model="m", include_steps=False)
    for _ in range(125):
        sent.acknowledge("a fine film, really ")  # 20 characters
    assert [len(p.text) for p in sent.replay()] == [1000, 1000, 500]
