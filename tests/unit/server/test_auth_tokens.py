"""Token sets, bearer parsing and the auth/reflection settings, without a server."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import grpc
import pytest

from rnn_sentiment.server.auth import (
    AuthInterceptor, TokenSet, auth_interceptors, bearer_token, check_call, parse_tokens, token_set,
)
from rnn_sentiment.server.config import ServerConfig, add_server_arguments, config_from
from tests.certificates import write_atomically


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_parse_tokens_skips_blanks_and_comments() -> None:
    assert parse_tokens("# rotation in progress\nold\n\n  new  \n") == (b"old", b"new")
    assert parse_tokens("a, b,,c ", ",") == (b"a", b"b", b"c")


def test_bearer_token_reads_the_scheme_case_insensitively() -> None:
    assert bearer_token([("authorization", "Bearer abc")]) == b"abc"
    assert bearer_token([("x-request-id", "1"), ("authorization", "BEARER abc")]) == b"abc"
    assert bearer_token([("authorization", "Basic abc")]) is None
    assert bearer_token(None) is None


def test_every_configured_token_is_accepted_and_nothing_else() -> None:
    tokens = TokenSet((b"alpha", b"beta"))
    assert tokens.accepts(b"alpha") and tokens.accepts(b"beta")
    for wrong in (b"", b"alph", b"alphaa", b"ALPHA", "béta".encode()):
        assert not tokens.accepts(wrong)
    refused = check_call(tokens, [("authorization", "Bearer gamma")])
    assert refused is not None and refused.code == grpc.StatusCode.UNAUTHENTICATED
    assert "gamma" not in refused.message
    missing = check_call(tokens, [])
    assert missing is not None and "authorization: Bearer" in missing.message
    assert check_call(tokens, [("authorization", "Bearer beta")]) is None


def test_token_file_is_reread_after_it_changes_at_most_once_a_second(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    write_atomically(path, b"old\n")
    clock = FakeClock()
    tokens = TokenSet(path=path, clock=clock)
    assert tokens.tokens() == (b"old",)
    write_atomically(path, b"old\nnew\n")
    clock.now = 0.5
    assert not tokens.refresh_due()  # no stat on every call
    tokens.refresh_if_due()
    assert tokens.tokens() == (b"old",)
    clock.now = 1.0
    assert tokens.refresh_due()
    tokens.refresh_if_due()
    assert tokens.tokens() == (b"old", b"new") and not tokens.refresh_due()
    path.unlink()  # a rotation tool between writes: the last good set stays
    clock.now = 2.0
    tokens.refresh_if_due()
    assert tokens.tokens() == (b"old", b"new")


def _config(*argv: str, environ: dict[str, str] | None = None) -> ServerConfig:
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    return config_from(parser.parse_args(list(argv)), environ=environ or {})


def test_auth_settings_are_validated_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="auth_token_file=.* is not a readable file"):
        _config("--auth-token-file", str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    write_atomically(empty, b"# no tokens yet\n")
    with pytest.raises(ValueError, match="no token is given"):
        _config("--auth-token-file", str(empty))
    assert token_set("", "") is None


def test_tokens_have_no_flag_and_stay_out_of_repr() -> None:
    with pytest.raises(SystemExit):
        _config("--auth-tokens", "secret")
    config = _config(environ={"RNN_SENTIMENT_AUTH_TOKENS": "s3cret-token"})
    assert config.auth_enabled and "s3cret-token" not in repr(config)
    # A supervisor hands the workers the same settings.
    assert config.as_environment()["RNN_SENTIMENT_AUTH_TOKENS"] == "s3cret-token"


def test_reflection_defaults_off_with_auth_unless_asked_for() -> None:
    assert _config().resolved_reflection is True
    assert _config("--no-reflection").resolved_reflection is False
    with_auth = {"RNN_SENTIMENT_AUTH_TOKENS": "t"}
    assert _config(environ=with_auth).resolved_reflection is False
    assert _config("--reflection", environ=with_auth).resolved_reflection is True
    assert _config(environ={**with_auth, "RNN_SENTIMENT_REFLECTION": "true"}).resolved_reflection is True
    # Unset stays unset for the workers, which resolve it the same way.
    assert "RNN_SENTIMENT_REFLECTION" not in _config(environ=with_auth).as_environment()


def test_a_token_file_that_cannot_be_read_at_start_is_refused_naming_it(tmp_path: Path) -> None:
    not_text = tmp_path / "tokens"
    not_text.write_bytes(b"\xff\xfe token\n")
    for path in (tmp_path / "missing", tmp_path, not_text):  # absent, a directory, not UTF-8
        with pytest.raises(ValueError, match=f"^auth_token_file={str(path)!r}: "):
            TokenSet(path=path)


def test_a_token_file_that_turns_unreadable_keeps_the_last_good_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    write_atomically(path, b"old\n")
    clock = FakeClock()
    tokens = TokenSet(path=path, clock=clock)
    write_atomically(path, b"\xff\xfe half-written\n")  # not UTF-8
    clock.now = 1.0
    tokens.refresh_if_due()
    assert tokens.tokens() == (b"old",) and tokens.accepts(b"old")
    write_atomically(path, b"new\n")  # fixed: the next look takes it
    clock.now = 2.0
    tokens.refresh_if_due()
    assert tokens.tokens() == (b"new",) and not tokens.accepts(b"old")


def test_tokens_from_the_variable_the_file_or_both(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    write_atomically(path, b"from-file\n")
    only_variable = token_set(" a , b ", "")
    assert only_variable is not None and only_variable.tokens() == (b"a", b"b")
    only_file = token_set("", str(path))
    assert only_file is not None and only_file.tokens() == (b"from-file",)
    both = token_set("a", str(path))
    assert both is not None and both.accepts(b"a") and both.accepts(b"from-file")
    assert auth_interceptors("", "") == []
    assert [type(i) for i in auth_interceptors("a", "")] == [AuthInterceptor]


def test_each_reload_of_the_token_file_is_logged_with_the_count_not_the_tokens(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Operators confirm a rotation from this line; the first load at start is no reload.
    path = tmp_path / "tokens"
    write_atomically(path, b"old\n")
    clock = FakeClock()
    with caplog.at_level(logging.INFO, logger="rnn_sentiment.server.auth"):
        tokens = TokenSet(path=path, clock=clock)
        assert [r.getMessage() for r in caplog.records] == []
        write_atomically(path, b"old\nrotated-7f3a\n")
        clock.now = 1.0
        tokens.refresh_if_due()
    reloads = [r for r in caplog.records if r.getMessage() == "token file reloaded"]
    assert len(reloads) == 1 and reloads[0].fields == {"path": str(path), "tokens": 2}  # type: ignore[attr-defined]
    assert "rotated-7f3a" not in caplog.text
