"""The server's event loop: uvloop by default when installed, asyncio on request, errors named."""

from __future__ import annotations

import asyncio

import pytest

from rnn_sentiment.server import config, event_loop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_auto_prefers_uvloop_when_installed() -> None:
    pytest.importorskip("uvloop", reason="the server extra installs uvloop")
    assert event_loop.resolve_event_loop("auto") == "uvloop"
    assert event_loop.run(_loop_module(), "auto") == "uvloop"


def test_asyncio_is_asyncio() -> None:
    assert event_loop.run(_loop_module(), "asyncio") == "asyncio"


def test_unknown_loop_and_missing_uvloop_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="options are"):
        event_loop.resolve_event_loop("trio")
    monkeypatch.setattr(event_loop.importlib.util, "find_spec", lambda name: None)
    assert event_loop.resolve_event_loop("auto") == "asyncio"
    with pytest.raises(ValueError, match="uvloop package is not installed"):
        event_loop.resolve_event_loop("uvloop")


def test_config_refuses_an_unknown_loop() -> None:
    with pytest.raises(ValueError, match="event_loop='trio'"):
        config.ServerConfig(event_loop="trio").validate()
