"""Opaque ids and clocks."""

from __future__ import annotations

import secrets
import time


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000
