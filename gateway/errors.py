"""The one place where domain errors become HTTP error bodies."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from livecore.errors import LiveCoreError, RateLimited, Unavailable


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
