"""The one place where domain errors become HTTP error bodies."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
import redis.exceptions
from starlette.responses import Response

from livecore.errors import BadRequest, LiveCoreError, RateLimited, Unavailable

# Failures of the backing services that are outages, not bugs: they answer
# 503 `unavailable` (HTTP) or an `unavailable` error frame, never `internal`.
# (asyncpg raises InternalClientError "another operation is in progress" on a
# pooled connection the server terminated; OperatorInterventionError is
# "terminating connection due to administrator command" on a fast shutdown.)
BACKEND_DOWN: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.InternalClientError, asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError, redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError)
BACKEND_RETRY_MS = 1000


def as_domain_error(exc: BaseException) -> LiveCoreError | None:
    """The protocol error for an exception the domain let through, or None for a bug."""
    if isinstance(exc, LiveCoreError):
        return exc
    if isinstance(exc, asyncpg.DataError):
        # e.g. a NUL character in an id: PostgreSQL cannot even compare it.
        return BadRequest("the request contains characters that are not allowed")
    if isinstance(exc, BACKEND_DOWN):
        return Unavailable(retry_after_ms=BACKEND_RETRY_MS)
    return None


class JSONBody(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(exc: LiveCoreError) -> Response:
    headers: dict[str, str] = {}
    retry_ms = exc.extra.get("retry_after_ms")
    if isinstance(exc, RateLimited | Unavailable) and isinstance(retry_ms, int):
        headers["Retry-After"] = str(max(1, (retry_ms + 999) // 1000))
    return JSONBody({"error": exc.to_dict()}, status_code=exc.status, headers=headers)


def error_body(code: str, message: str, status: int) -> Response:
    return JSONBody({"error": {"code": code, "message": message}}, status_code=status)
