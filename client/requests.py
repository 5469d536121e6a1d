"""Request-side helpers shared by the sync and asyncio clients."""

from __future__ import annotations

from typing import Sequence

from rnn_sentiment.v1 import sentiment_pb2 as pb

_ATTRIBUTION_PREFIX = "ATTRIBUTION_METHOD_"


def attribution_name(number: int) -> str:
    """The SDK's name of an AttributionMethod value: ATTRIBUTION_METHOD_OCCLUSION -> "occlusion"."""
    return pb.AttributionMethod.Name(number).removeprefix(_ATTRIBUTION_PREFIX).lower()


# Derived from the contract's enum, so a method added to the .proto is accepted here unchanged.
ATTRIBUTION_METHODS = tuple(
    attribution_name(number) for number in pb.AttributionMethod.values()
    if number != pb.ATTRIBUTION_METHOD_UNSPECIFIED
)


def as_texts(texts: str | Sequence[str]) -> list[str]:
    """Accept one text or a sequence; a bare string is one text, not a list of characters."""
    return [texts] if isinstance(texts, str) else list(texts)


def attribution_enums(methods: Sequence[str]) -> list[int]:
    """Method names ("integrated_gradients" or "ATTRIBUTION_METHOD_INTEGRATED_GRADIENTS") -> enum values."""
    numbers = []
    for method in methods:
        name = method.strip().lower().removeprefix(_ATTRIBUTION_PREFIX.lower())
        if name not in ATTRIBUTION_METHODS:
            raise ValueError(f"invalid attribution {method!r}; options are {list(ATTRIBUTION_METHODS)}")
        numbers.append(pb.AttributionMethod.Value(_ATTRIBUTION_PREFIX + name.upper()))
    return numbers


def trace_request(
    text: str,
    *,
    model: str,
    include_hidden_states: bool,
    attributions: Sequence[str],
    integrated_gradients_steps: int,
    all_layers: bool,
    top_k_units: int,
    include_memory_profile: bool,
) -> pb.TraceRequest:
    """The TraceRequest both clients send."""
    return pb.TraceRequest(
        text=text,
        model=model,
        include_hidden_states=include_hidden_states,
        attributions=attribution_enums(attributions),
        integrated_gradients_steps=integrated_gradients_steps,
        all_layers=all_layers,
        top_k_units=top_k_units,
        include_memory_profile=include_memory_profile,
    )
