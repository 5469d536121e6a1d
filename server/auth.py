"""Bearer-token authentication: `authorization: Bearer <token>` metadata on every call but health.

Tokens come from `RNN_SENTIMENT_AUTH_TOKENS` (comma-separated) and/or a file (one per line,
`#` comments and blank lines ignored) that is re-read within a second of changing, so a token is
rotated by adding the new one, moving callers over, then removing the old one: no restart.
A presented token is compared with every valid token in constant time. Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc
from grpc import aio

from .errors import ServiceError

log = logging.getLogger("rnn_sentiment.server.auth")

AUTHORIZATION_KEY = "authorization"
BEARER_PREFIX = "bearer "
# Health stays open: probes and load balancers carry no token.
OPEN_SERVICES = ("grpc.health.v1.Health",)
FILE_CHECK_SECONDS = 1.0  # how stale the token file may be: a stat at most this often, not per call


def parse_tokens(text: str, separator: str | None = None) -> tuple[bytes, ...]:
    """Tokens from a file's text (one per line) or a variable (separator ","); no blanks or comments."""
    pieces = text.split(separator) if separator else text.splitlines()
    tokens = []
    for piece in pieces:
        token = piece.strip()
        if token and not token.startswith("#"):
            tokens.append(token.encode())
    return tuple(tokens)


def read_token_file(path: Path) -> tuple[bytes, ...]:
    return parse_tokens(path.read_text(encoding="utf-8"))


class TokenSet:
    """The tokens a call may present: fixed ones plus a file's, the file re-read when it changes."""

    def __init__(self, fixed: tuple[bytes, ...] = (), path: Path | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fixed = fixed
        self._path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._file_tokens: tuple[bytes, ...] = ()
        self._file_signature: tuple[int, int, int] | None = None
        self._next_check = 0.0
        if path is not None:
            self._refresh_file(initial=True)

    def tokens(self) -> tuple[bytes, ...]:
        return self._fixed + self._file_tokens

    def refresh_due(self) -> bool:
        """Whether the file is due for a look (at most every FILE_CHECK_SECONDS)."""
        return self._path is not None and self._clock() >= self._next_check

    def refresh_if_due(self) -> None:
        """Re-read the file if it is due and changed. Blocking file I/O: call it off the event loop."""
        if self.refresh_due():
            self._refresh_file(initial=False)

    def accepts(self, presented: bytes) -> bool:
        """Whether `presented` is one of the tokens; every token is compared, whichever matches."""
        matched = False
        for token in self.tokens():
            # compare_digest's time depends on the lengths only, never on where the bytes differ.
            matched |= hmac.compare_digest(presented, token)
        return matched

    def _refresh_file(self, initial: bool) -> None:
        assert self._path is not None
        with self._lock:
            if not initial and not self.refresh_due():
                return  # another thread looked while this one waited for the lock
            self._next_check = self._clock() + FILE_CHECK_SECONDS
            try:
                stat = self._path.stat()
                signature = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
                if signature == self._file_signature:
                    return
                tokens = read_token_file(self._path)
            except (OSError, UnicodeDecodeError) as error:
                if initial:
                    raise ValueError(f"auth_token_file={str(self._path)!r}: {error}") from None
                # A rotation tool replacing the file, or a permission slip: keep the last good set.
                log.warning("cannot read the token file; keeping the previous tokens",
                            extra={"fields": {"path": str(self._path), "error": type(error).__name__}})
                return
            self._file_signature = signature
            self._file_tokens = tokens
        if not initial:
            log.info("token file reloaded", extra={"fields": {"path": str(self._path), "tokens": len(tokens)}})


def unauthenticated(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAUTHENTICATED, message)


def bearer_token(metadata: Any) -> bytes | None:
    """The token of the call's `authorization: Bearer ...` metadata, or None without one."""
    for key, value in metadata or ():
        if key == AUTHORIZATION_KEY and isinstance(value, str) and value[:len(BEARER_PREFIX)].lower() == BEARER_PREFIX:
            # No length cap needed here: gRPC's metadata size limit bounds it before we see it.
            return value[len(BEARER_PREFIX):].strip().encode()
    return None


def check_call(tokens: TokenSet, metadata: Any) -> ServiceError | None:
    """None when the call carries a valid token; otherwise the error to answer with."""
    presented = bearer_token(metadata)
    if presented is None:
        return unauthenticated("this server requires a bearer token: send metadata `authorization: Bearer <token>`")
    if not tokens.accepts(presented):
        return unauthenticated("the bearer token is not valid")
    return None


class AuthInterceptor(aio.ServerInterceptor):
    """Refuses calls without a valid bearer token with UNAUTHENTICATED; health passes.

    The check runs inside the handler it returns (one per method, the same for every call),
    so the metrics interceptor in front of it, which wraps that handler once per method, counts
    each refusal in grpc_server_handled_total{grpc_code="UNAUTHENTICATED"}. The request is parsed
    before the check: a malformed request from anyone gets INVALID_ARGUMENT, which reveals nothing.
    """

    def __init__(self, tokens: TokenSet) -> None:
        self._tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        service = handler_call_details.method.split("/")[1] if handler_call_details.method.count("/") >= 2 else ""
        if handler is None or service in OPEN_SERVICES:
            return handler
        return self._guarded(handler)

    async def _refuse_unless_authorized(self, context: aio.ServicerContext) -> None:
        if self._tokens.refresh_due():
            # A stat (and, after a change, a read) of the token file: off the event loop, which
            # a slow filesystem must never stall. Calls meanwhile use the tokens as they were.
            await asyncio.to_thread(self._tokens.refresh_if_due)
        error = check_call(self._tokens, context.invocation_metadata())
        if error is not None:
            await context.abort(error.code, error.message, trailing_metadata=error.trailing_metadata())

    def _guarded(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        refuse = self._refuse_unless_authorized
        serializers = {"request_deserializer": handler.request_deserializer,
                       "response_serializer": handler.response_serializer}
        if handler.unary_unary is not None:
            unary_unary = handler.unary_unary

            async def checked_unary_unary(request: Any, context: aio.ServicerContext) -> Any:
                await refuse(context)
                return await unary_unary(request, context)

            return grpc.unary_unary_rpc_method_handler(checked_unary_unary, **serializers)
        if handler.unary_stream is not None:
            unary_stream = handler.unary_stream

            async def checked_unary_stream(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
                await refuse(context)
                async for response in unary_stream(request, context):
                    yield response

            return grpc.unary_stream_rpc_method_handler(checked_unary_stream, **serializers)
        if handler.stream_unary is not None:
            stream_unary = handler.stream_unary

            async def checked_stream_unary(requests: Any, context: aio.ServicerContext) -> Any:
                await refuse(context)
                return await stream_unary(requests, context)

            return grpc.stream_unary_rpc_method_handler(checked_stream_unary, **serializers)
        stream_stream = handler.stream_stream

        async def checked_stream_stream(requests: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            await refuse(context)
            async for response in stream_stream(requests, context):
                yield response

        return grpc.stream_stream_rpc_method_handler(checked_stream_stream, **serializers)


def token_set(auth_tokens: str, auth_token_file: str) -> TokenSet | None:
    """The configured tokens, or None when auth is off (neither setting given)."""
    if not auth_tokens and not auth_token_file:
        return None
    return TokenSet(parse_tokens(auth_tokens, ","), Path(auth_token_file) if auth_token_file else None)


def auth_interceptors(auth_tokens: str, auth_token_file: str) -> list[AuthInterceptor]:
    """[AuthInterceptor] when tokens are configured, else [] (auth off)."""
    tokens = token_set(auth_tokens, auth_token_file)
    return [] if tokens is None else [AuthInterceptor(tokens)]
