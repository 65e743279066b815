"""Authorisation callback for an external SFU that speaks WHIP/WHEP itself.

Past one process, media should go through a dedicated SFU (docs/video.md).
LiveCore stays the authority on who may publish or watch a show: the SFU asks
`POST /video/sfu-auth` before accepting each WHIP or WHEP session, with the
same rules as our own endpoints. The body is MediaMTX's `authMethod: http`
request (`{"user", "password", "token", "ip", "action", "path", "protocol",
"id", "query"}`); any SFU or proxy that can make an HTTP call per session can
send the same fields. A 2xx answer allows, anything else denies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from livecore.auth import Claims, TokenService
from livecore.errors import BadRequest, Forbidden, Unauthenticated

PUBLISH_ROLES = ("host", "admin")
WATCH_ROLES = ("viewer", "host", "moderator", "admin")


def show_of(path: str) -> str:
    """The show id from an SFU path such as `show-1`, `live/show-1` or `show-1/whip`."""
    parts = [p for p in path.strip("/").split("/") if p and p not in ("whip", "whep")]
    if not parts:
        raise BadRequest("the SFU path names no show")
    return parts[-1]


def token_of(request: Mapping[str, Any]) -> str | None:
    """Bearer token (`token`), else `password`, else `?token=` in the query string."""
    for key in ("token", "password"):
        value = request.get(key)
        if isinstance(value, str) and value:
            return value
    query = request.get("query")
    if isinstance(query, str) and query:
        values = parse_qs(query).get("token")
        if values and values[0]:
            return values[0]
    return None


def authorize(request: Mapping[str, Any], tokens: TokenService) -> tuple[str, Claims | None]:
    """Apply the WHIP/WHEP rules to one SFU request; returns (show, claims) or raises.

    publish: host or admin token for that show. read: no token, or any valid
    token for that show (anonymous viewers are allowed, PROTOCOL.md §2).
    Everything else the SFU might ask (its API, metrics, recordings) is refused.
    """
    action = request.get("action")
    path = request.get("path")
    if not isinstance(action, str) or not isinstance(path, str):
        raise BadRequest("action and path are required")
    show = show_of(path)
    token = token_of(request)
    if action == "publish":
        if token is None:
            raise Unauthenticated("publishing needs a host token")
        claims = tokens.verify(token)
        claims.require(show, *PUBLISH_ROLES)
        return show, claims
    if action == "read":
        if token is None:
            return show, None
        claims = tokens.verify(token)
        claims.require(show, *WATCH_ROLES)
        return show, claims
    raise Forbidden(f"action {action!r} is not allowed through LiveCore")
