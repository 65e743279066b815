"""Signed tokens (JWT HS256) and the roles they carry."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Literal

import jwt

from livecore.errors import Forbidden, Unauthenticated

Role = Literal["viewer", "host", "moderator", "admin"]
ROLES: tuple[str, ...] = ("viewer", "host", "moderator", "admin")
ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class Claims:
    sub: str
    name: str
    role: str
    show: str
    exp: int

    def can_act_on(self, show_id: str) -> bool:
        return (self.show == "*" and self.role == "admin") or self.show == show_id

    def require(self, show_id: str | None, *roles: str) -> None:
        """Raise Forbidden unless this token has one of `roles` for `show_id`."""
        if self.role not in roles:
            raise Forbidden(f"role {self.role!r} may not do this")
        if show_id is not None and not self.can_act_on(show_id):
            raise Forbidden("token is for another show")


class TokenService:
    def __init__(self, secret: str) -> None:
        if len(secret) < 16:
            raise ValueError("LIVECORE_SECRET must be at least 16 characters")
        self._secret = secret

    def mint(self, *, sub: str, name: str, role: str, show: str, ttl_s: int) -> tuple[str, int]:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        now = int(time.time())
        exp = now + int(ttl_s)
        payload = {"sub": sub, "name": name, "role": role, "show": show, "iat": now, "exp": exp,
                   "jti": uuid.uuid4().hex}
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM), exp * 1000

    def verify(self, token: str) -> Claims:
        try:
            # algorithms pinned: refuses `alg: none` and key-confusion tricks.
            data = jwt.decode(token, self._secret, algorithms=[ALGORITHM],
                              options={"require": ["sub", "role", "show"]})
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("token expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("invalid token") from exc
        role, sub, show = data.get("role"), data.get("sub"), data.get("show")
        if role not in ROLES or not isinstance(sub, str) or not isinstance(show, str) or not sub:
            raise Unauthenticated("invalid token claims")
        if show == "*" and role != "admin":
            raise Unauthenticated("only admin tokens may span shows")
        name = data.get("name") if isinstance(data.get("name"), str) else sub
        # PROTOCOL §2 requires sub, name, role, show; `exp` is honoured when present
        # (PyJWT checks it is an integer and in the future); ours always carry one.
        return Claims(sub=sub, name=str(name)[:64], role=role, show=show,
                      exp=int(data.get("exp", 0)))  # 0 = no expiry
