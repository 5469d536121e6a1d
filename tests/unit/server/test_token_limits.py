"""Each model's token limit: the server's --max-tokens/--truncation unless --model-token-limits names it."""

from __future__ import annotations

import argparse

import pytest

from rnn_sentiment.model.checkpoint_schema import MAX_TOKENS_BOUND
from rnn_sentiment.model.truncation import DEFAULT_MAX_TOKENS, DEFAULT_TRUNCATION, TokenLimit
from rnn_sentiment.server.config import add_server_arguments, config_from
from rnn_sentiment.server.token_limits import CHARS_PER_TOKEN, text_chars_shortfall, token_limit_for, token_limit_overrides


def _config(*argv: str, environ: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    return config_from(parser.parse_args(list(argv)), environ=environ or {})


def test_the_defaults_are_the_measured_ones() -> None:
    config = _config()
    assert (config.max_tokens, config.truncation) == (DEFAULT_MAX_TOKENS, DEFAULT_TRUNCATION)


def test_an_override_names_a_model_and_may_keep_the_servers_strategy() -> None:
    spec = "sst2-rnn=256:head, other=1024"
    assert token_limit_overrides(spec) == {"sst2-rnn": (256, "head"), "other": (1024, None)}
    assert token_limit_for("sst2-rnn", 128, "head_tail", spec) == TokenLimit(256, "head")
    assert token_limit_for("other", 128, "head_tail", spec) == TokenLimit(1024, "head_tail")
    assert token_limit_for("unnamed", 128, "head_tail", spec) == TokenLimit(128, "head_tail")


def test_flags_and_environment_set_the_limit() -> None:
    config = _config("--max-tokens", "512", environ={"RNN_SENTIMENT_TRUNCATION": "head",
                                                     "RNN_SENTIMENT_MODEL_TOKEN_LIMITS": "a=64"})
    assert (config.max_tokens, config.truncation, config.model_token_limits) == (512, "head", "a=64")


@pytest.mark.parametrize(("argv", "message"), [
    (("--truncation", "middle"), "truncation='middle': use one of head, head_tail"),
    (("--max-tokens", "0"), "--max-tokens/RNN_SENTIMENT_MAX_TOKENS=0: must be from 1 to 4096"),
    (("--model-token-limits", "sst2-rnn"), "'sst2-rnn' is not NAME=TOKENS"),
    (("--model-token-limits", "a=9999"), "'a=9999': TOKENS must be from 1 to 4096"),
    (("--model-token-limits", "a=8:tail"), "'a=8:tail': TRUNCATION must be one of head, head_tail"),
    (("--model-token-limits", "a=8,a=9"), "model 'a' is named twice"),
])
def test_a_bad_setting_is_refused_at_start_naming_the_fix(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match="invalid server configuration") as error:
        _config(*argv)
    assert message in str(error.value)


def test_the_character_limit_must_let_prose_reach_the_token_limit() -> None:
    assert text_chars_shortfall(5000, 128) is None  # the defaults
    assert text_chars_shortfall(5000, 1024) == (
        "--max-text-chars 5000 refuses prose before it reaches 1024 tokens (about 6 characters each): a long text is "
        "refused instead of truncated; raise it to 6144 or more")


def test_spaces_and_empty_entries_in_the_override_list_are_ignored() -> None:
    # An operator's list written by hand: spaces around names and numbers, a trailing comma.
    assert token_limit_overrides("") == {}
    assert token_limit_overrides(" a = 8 , , b=9:head_tail ,") == {"a": (8, None), "b": (9, "head_tail")}


def test_an_override_may_be_any_limit_from_one_to_the_bound() -> None:
    assert token_limit_overrides(f"a=1,b={MAX_TOKENS_BOUND}") == {"a": (1, None), "b": (MAX_TOKENS_BOUND, None)}
    for tokens in (0, MAX_TOKENS_BOUND + 1):
        with pytest.raises(ValueError, match=f"TOKENS must be from 1 to {MAX_TOKENS_BOUND}"):
            token_limit_overrides(f"a={tokens}")


@pytest.mark.parametrize("spec", ["=8", "a=", "a=eight", "a8", "a=-8", "a=8:"])
def test_an_entry_without_a_name_a_count_or_a_strategy_is_refused_naming_the_format(spec: str) -> None:
    with pytest.raises(ValueError) as error:
        token_limit_overrides(f"ok=4,{spec}")
    assert repr(spec) in str(error.value)
    assert ("is not NAME=TOKENS" in str(error.value)) != spec.endswith(":")  # "a=8:" names the strategies


def test_the_character_limit_that_just_lets_prose_reach_the_token_limit_is_enough() -> None:
    assert text_chars_shortfall(CHARS_PER_TOKEN * 1024, 1024) is None
    shortfall = text_chars_shortfall(CHARS_PER_TOKEN * 1024 - 1, 1024)
    assert shortfall is not None and f"raise it to {CHARS_PER_TOKEN * 1024} or more" in shortfall
