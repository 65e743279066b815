"""Hypothesis strategies for hostile input: JSON of every shape, and worse."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from livecore import protocol

NASTY_TEXT = ["", " ", "\u0000", "a\u0000b", "❤️", "🔥" * 300, "x" * 501, "x" * 5000, "<script>alert(1)</script>",
              "../../etc/passwd", "%00", "' OR 1=1 --", "{show:x}", "}{", "lc:{deal:x}:state", "\ufeff", "\u202e",
              "r.d_x.abc", "r..", "r.{x}.y", "*", "null", "true", "-1", "1e999", "\n\r\t"]
HUGE_INTS = [2**31, 2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30, -(2**63) - 1, -1, 0]
COMMAND_TYPES = [*sorted(protocol.ALL_COMMANDS), "", "HELLO", "chat.send ", "batch", "welcome", "ack",
                 "deal.claim\u0000", "__proto__", "constructor"]
FIELDS = ["deal_id", "qty", "text", "emoji", "product_id", "price_cents", "quantity", "duration_s",
          "per_user_limit", "hold_ttl_s", "message_id", "user_id", "seconds", "words", "idempotency_key",
          "token", "resume_from", "batch", "type", "id"]

leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from(HUGE_INTS),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40), st.sampled_from(NASTY_TEXT),
    st.sampled_from(sorted(protocol.ALLOWED_EMOJI)))
json_value = st.recursive(
    leaf, lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4), max_leaves=12)


def dumps(value: Any, ascii_only: bool) -> str:
    # The stdlib encoder, not orjson: it writes integers of any size, NaN and
    # Infinity (not JSON at all) and, with ensure_ascii, lone surrogates as \ud800.
    return json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)


@st.composite
def command_frame(draw: st.DrawFn, known: dict[str, list[Any]] | None = None) -> str:
    """A frame that looks like a command: a plausible type, fields of any type."""
    frame: dict[str, Any] = {}
    if draw(st.integers(0, 9)) > 0:
        frame["type"] = draw(st.sampled_from(COMMAND_TYPES) | json_value)
    if draw(st.booleans()):
        frame["id"] = draw(st.text(max_size=80) | st.integers() | json_value)
    ids = [i for values in (known or {}).values() for i in values]
    real = st.sampled_from(ids) if ids else None
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=6, unique=True)):
        options = [json_value, st.integers(-5, 5000), st.text(max_size=30)]
        if real is not None:
            options.append(real)
        frame[name] = draw(st.one_of(*options))
    return dumps(frame, draw(st.booleans()))


# Each command with its fields, for frames that get past parsing into the handlers.
SCHEMAS: dict[str, dict[str, str]] = {
    "chat.send": {"text": "text"}, "react": {"emoji": "emoji"},
    "deal.claim": {"deal_id": "deal", "qty": "int", "idempotency_key": "text"},
    "ping": {}, "show.start": {}, "show.end": {}, "product.pin": {"product_id": "product"},
    "product.unpin": {},
    "deal.launch": {"product_id": "product", "price_cents": "int", "quantity": "int", "duration_s": "int",
                    "per_user_limit": "int", "hold_ttl_s": "int"},
    "deal.cancel": {"deal_id": "deal"}, "announce": {"text": "text"},
    "chat.delete": {"message_id": "message"}, "chat.pin": {"message_id": "message"}, "chat.unpin": {},
    "user.timeout": {"user_id": "user", "seconds": "int"}, "user.ban": {"user_id": "user"},
    "user.unban": {"user_id": "user"}, "chat.slow_mode": {"seconds": "int"},
    "chat.filter": {"words": "words"}, "chat.approve": {"message_id": "message"},
    "chat.reject": {"message_id": "message"},
}
EDGE_INTS = st.sampled_from([0, 1, 2, 5, 59, 60, 3600, 3601, 86_400, 86_401, 1000, 1001, 1_000_000,
                             1_000_001, 2**53 - 1, 2**53, -1]) | st.integers(-10, 100)


@st.composite
def plausible_command(draw: st.DrawFn, known: dict[str, list[Any]] | None = None,
                      allowed: frozenset[str] | None = None) -> str:
    """A real command with fields of the right kind, sometimes wrong, from real ids;
    mostly one the endpoint allows (`allowed`)."""
    pool = sorted(allowed & SCHEMAS.keys()) if allowed and draw(st.integers(0, 4)) else sorted(SCHEMAS)
    type_ = draw(st.sampled_from(pool))
    frame: dict[str, Any] = {"type": type_, "id": draw(st.text(max_size=8) | st.integers(0, 99))}
    for name, kind in SCHEMAS[type_].items():
        if draw(st.integers(0, 9)) == 0:
            continue  # missing field
        if draw(st.integers(0, 9)) == 0:
            frame[name] = draw(json_value)  # wrong type
            continue
        ids = (known or {}).get(kind) or []
        if kind == "int":
            frame[name] = draw(EDGE_INTS)
        elif kind == "text":
            frame[name] = draw(st.text(max_size=600) | st.sampled_from(NASTY_TEXT))
        elif kind == "emoji":
            frame[name] = draw(st.sampled_from(sorted(protocol.ALLOWED_EMOJI)) | st.text(max_size=3))
        elif kind == "words":
            frame[name] = draw(st.lists(st.text(max_size=120) | st.sampled_from(NASTY_TEXT), max_size=6))
        else:
            frame[name] = draw(st.sampled_from(ids) | st.text(max_size=70) | st.sampled_from(NASTY_TEXT)) \
                if ids else draw(st.text(max_size=70))
    return dumps(frame, draw(st.booleans()))


def nested(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"type":"ping","x":' + '{"a":' * depth + "1" + "}" * depth + "}"


raw_text = st.one_of(
    st.text(max_size=200),
    json_value.map(lambda v: dumps(v, True)),
    st.builds(nested, st.integers(50, 3000), st.sampled_from(["list", "dict"])),
    st.sampled_from(['{"type":"deal.claim","id":"h","deal_id":"d","qty":1e999}',
                     '{"type":"ping","id":123456789012345678901234567890}',
                     '{"type":"chat.slow_mode","id":"s","seconds":-1e308}',
                     '{"type":"ping","id":"a","id":"b"}', '{"type":"ping"', '{"type":"ping"}}',
                     '{"type":"chat.send","id":"t","text":"\\ud800"}', "\ufeff{\"type\":\"ping\"}",
                     '{"type":"hello","token":null,"resume_from":18446744073709551615}',
                     '{"type":"deal.claim","id":"q","deal_id":"d","qty":-0}', "NaN", "[]", "{}", "null"]))

binary = st.binary(max_size=200)


@st.composite
def frame_or_bytes(draw: st.DrawFn, known: dict[str, list[Any]] | None = None,
                   allowed: frozenset[str] | None = None) -> str | bytes:
    kind = draw(st.integers(0, 9))
    if kind < 5:
        return draw(plausible_command(known, allowed))
    if kind < 7:
        return draw(command_frame(known))
    if kind < 9:
        return draw(raw_text)
    return draw(binary)
