"""Bearer-token extraction for HTTP routes."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from livecore.auth import Claims, TokenService
from livecore.errors import Unauthenticated


def bearer_token(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def require_claims(conn: HTTPConnection, tokens: TokenService) -> Claims:
    token = bearer_token(conn)
    if token is None:
        raise Unauthenticated("missing bearer token")
    return tokens.verify(token)


def optional_claims(conn: HTTPConnection, tokens: TokenService) -> Claims | None:
    """Anonymous is allowed; a token that is present must still be valid."""
    token = bearer_token(conn)
    return None if token is None else tokens.verify(token)
