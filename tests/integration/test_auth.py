"""Bearer-token auth on a real server: UNAUTHENTICATED without a valid token (counted), health
open, tokens from a file and the environment, rotation without restart, no token in the log."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from rnn_sentiment.client import SentimentClient, SentimentError
from tests.certificates import write_atomically
from tests.scrape import idle_scrape, sample, scrape
from tests.support import ServerProcess

FILE_TOKEN = "file-token-3b7f9c2e51d04a8e"
ENV_TOKEN = "env-token-8d1c47a0f6e2b935"
ROTATED_TOKEN = "rotated-token-0c5e2a9d47b1f386"
TEXT = "a warm, funny and beautifully acted film"
PREDICT = {"grpc_service": "rnn_sentiment.v1.SentimentService", "grpc_method": "Predict"}


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "tokens"
    write_atomically(path, f"# one token per line\n{FILE_TOKEN}\n\n".encode())
    return path


@pytest.fixture(scope="module")
def auth_server(token_file: Path) -> Iterator[ServerProcess]:
    # DEBUG: every call is logged, so the log check below sees the most the server ever writes.
    server = ServerProcess(extra_args=["--auth-token-file", str(token_file), "--log-level", "DEBUG"],
                           env={"RNN_SENTIMENT_AUTH_TOKENS": f"{ENV_TOKEN}, "}, keep_log=True)
    server.start(wait=False)
    try:
        server.wait_until_serving(timeout=120)  # through the health service: open without a token
    except RuntimeError:
        server.stop()
        raise
    yield server
    assert server.stop() == 0, server.log()
    assert server.log_path is not None
    server.log_path.unlink()


def call_every_method(client: SentimentClient) -> None:
    client.predict(TEXT)
    client.trace("good", attributions=("prefix",), include_memory_profile=False)
    client.model_info()
    client.list_models()


def test_calls_without_a_valid_token_are_unauthenticated_and_counted(auth_server: ServerProcess) -> None:
    before = idle_scrape(auth_server)
    for token in (None, "not-a-token", FILE_TOKEN + "x", FILE_TOKEN[:-1]):
        with SentimentClient(auth_server.target, token=token, timeout=30) as client:
            assert client.health() == "SERVING"
            for method in (lambda: client.predict(TEXT), client.model_info, client.list_models,
                           lambda: client.trace("good")):
                with pytest.raises(SentimentError) as refused:
                    method()
                assert refused.value.code == "UNAUTHENTICATED", token
                assert "bearer token" in refused.value.message
    deadline = time.monotonic() + 10
    while sample(after := scrape(auth_server), "grpc_server_handled_total", **PREDICT,
                 grpc_code="UNAUTHENTICATED") - sample(before, "grpc_server_handled_total", **PREDICT,
                                                       grpc_code="UNAUTHENTICATED") < 4:
        assert time.monotonic() < deadline, after
        time.sleep(0.1)
    assert sample(after, "grpc_server_handled_total", **PREDICT, grpc_code="UNAUTHENTICATED") - sample(
        before, "grpc_server_handled_total", **PREDICT, grpc_code="UNAUTHENTICATED") == 4


def test_tokens_from_the_file_and_the_environment_are_accepted(auth_server: ServerProcess) -> None:
    for token in (FILE_TOKEN, ENV_TOKEN):
        with SentimentClient(auth_server.target, token=token, timeout=30) as client:
            call_every_method(client)
    # The scheme is case-insensitive (RFC 7235); the token is not.
    with SentimentClient(auth_server.target, metadata=[("authorization", f"bearer {FILE_TOKEN}")]) as client:
        assert client.predict(TEXT).predictions[0].label == "positive"


def test_reflection_is_off_when_auth_is_on(auth_server: ServerProcess) -> None:
    with grpc.insecure_channel(auth_server.target) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            ProtoReflectionDescriptorDatabase(channel).get_services()
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_rotating_the_token_file_needs_no_restart(auth_server: ServerProcess, token_file: Path) -> None:
    original = token_file.read_bytes()
    try:
        rotate_to_the_new_token(auth_server, token_file)
        with SentimentClient(auth_server.target, token=ENV_TOKEN, timeout=30) as client:
            assert client.predict(TEXT).predictions[0].label == "positive"
    finally:  # the module's other tests call with FILE_TOKEN, in any order
        write_atomically(token_file, original)
        with SentimentClient(auth_server.target, token=FILE_TOKEN, timeout=30) as client:
            _until_accepted(client, True)


def test_no_token_reaches_the_log(auth_server: ServerProcess, token_file: Path) -> None:
    # Every way a token reaches the server, in this test: refused calls, accepted calls, a rotation.
    for token in ("not-a-token", FILE_TOKEN, ENV_TOKEN):
        with SentimentClient(auth_server.target, token=token, timeout=30) as client:
            try:
                client.predict(TEXT)
            except SentimentError as error:
                assert error.code == "UNAUTHENTICATED" and token == "not-a-token", error
    original = token_file.read_bytes()
    try:
        rotate_to_the_new_token(auth_server, token_file)
    finally:
        write_atomically(token_file, original)
        with SentimentClient(auth_server.target, token=FILE_TOKEN, timeout=30) as client:
            _until_accepted(client, True)
    log = auth_server.log()
    assert "UNAUTHENTICATED" in log and "token file reloaded" in log  # the calls above were logged
    for token in (FILE_TOKEN, ENV_TOKEN, ROTATED_TOKEN, "not-a-token"):
        assert token not in log


def rotate_to_the_new_token(server: ServerProcess, token_file: Path) -> None:
    """Rotation, step one: the new token beside the old; step two: the old one gone."""
    write_atomically(token_file, f"{FILE_TOKEN}\n{ROTATED_TOKEN}\n".encode())
    with SentimentClient(server.target, token=ROTATED_TOKEN, timeout=30) as client:
        _until_accepted(client, True)
    write_atomically(token_file, f"{ROTATED_TOKEN}\n".encode())
    with SentimentClient(server.target, token=FILE_TOKEN, timeout=30) as client:
        _until_accepted(client, False)
    with SentimentClient(server.target, token=ROTATED_TOKEN, timeout=30) as client:
        assert client.predict(TEXT).predictions[0].label == "positive"


def _until_accepted(client: SentimentClient, accepted: bool, timeout: float = 10.0) -> None:
    """The server re-reads the token file at most once a second: ask until it has (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.predict(TEXT)
            now_accepted = True
        except SentimentError as error:
            assert error.code == "UNAUTHENTICATED", error
            now_accepted = False
        if now_accepted == accepted:
            return
        assert time.monotonic() < deadline, f"token still {'refused' if accepted else 'accepted'}"
        time.sleep(0.1)
