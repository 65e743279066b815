"""Socket frame parsing and field checks: pure, no I/O."""

from __future__ import annotations

from typing import Any

import orjson

from livecore.errors import BadRequest, TooLong

ALLOWED_EMOJI = frozenset({"❤️", "🔥", "👏", "😂", "😮", "🛒", "👍", "🎉"})
_EMOJI_BY_BARE = {e.replace("\ufe0f", ""): e for e in ALLOWED_EMOJI}
MAX_CHAT = 500
MAX_REQUEST_ID = 64

VIEWER_COMMANDS = frozenset({"chat.send", "react", "deal.claim", "ping"})
HOST_COMMANDS = frozenset({"show.start", "show.end", "product.pin", "product.unpin", "deal.launch",
                           "deal.cancel", "announce", "chat.send", "ping"})
MODERATOR_COMMANDS = frozenset({"chat.delete", "chat.pin", "chat.unpin", "user.timeout", "user.ban",
                                "user.unban", "chat.slow_mode", "chat.filter", "chat.approve",
                                "chat.reject", "chat.send", "ping"})
ALL_COMMANDS = VIEWER_COMMANDS | HOST_COMMANDS | MODERATOR_COMMANDS | {"hello"}
ENDPOINT_COMMANDS = {"viewer": VIEWER_COMMANDS, "host": HOST_COMMANDS, "moderator": MODERATOR_COMMANDS}


def parse_frame(data: str | bytes | None) -> dict[str, Any]:
    """Decode one client frame into a dict with a string `type`, or raise BadRequest."""
    if data is None:
        raise BadRequest("binary frames are not accepted; send JSON text")
    try:
        frame = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise BadRequest("frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise BadRequest("frame must be a JSON object")
    if not isinstance(frame.get("type"), str):
        raise BadRequest("frame needs a string `type`")
    rid = frame.get("id")
    if rid is not None and not (isinstance(rid, str | int) and not isinstance(rid, bool)
                                and len(str(rid)) <= MAX_REQUEST_ID):
        raise BadRequest("`id` must be a short string or integer")
    return frame


def request_id(frame: dict[str, Any]) -> str | int | None:
    rid = frame.get("id") if isinstance(frame, dict) else None
    if isinstance(rid, str | int) and not isinstance(rid, bool) and len(str(rid)) <= MAX_REQUEST_ID:
        return rid
    return None


def req_str(frame: dict[str, Any], name: str, *, max_len: int = 200) -> str:
    value = frame.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"`{name}` must be a non-empty string")
    if len(value) > max_len:
        raise BadRequest(f"`{name}` is too long")
    return value


def req_int(frame: dict[str, Any], name: str, *, lo: int, hi: int, default: int | None = None) -> int:
    value = frame.get(name, default)
    if value is None and default is None:
        raise BadRequest(f"`{name}` is required")
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"`{name}` must be an integer")
    if not lo <= value <= hi:
        raise BadRequest(f"`{name}` must be between {lo} and {hi}")
    return value


def chat_text(frame: dict[str, Any]) -> str:
    text = frame.get("text")
    if not isinstance(text, str):
        raise BadRequest("`text` must be a string")
    text = text.strip()
    if not text:
        raise BadRequest("`text` must not be empty")
    if len(text) > MAX_CHAT:
        raise TooLong(f"messages are at most {MAX_CHAT} characters")
    return text


def emoji(frame: dict[str, Any]) -> str:
    """The reaction in its canonical form: "❤" with or without the emoji
    variation selector (U+FE0F) is the same heart."""
    value = frame.get("emoji")
    if isinstance(value, str) and len(value) <= 8:
        value = _EMOJI_BY_BARE.get(value.replace("\ufe0f", ""), value)
    if not isinstance(value, str) or value not in ALLOWED_EMOJI:
        raise BadRequest("`emoji` must be one of " + " ".join(sorted(ALLOWED_EMOJI)))
    return value


def parse_hello(frame: dict[str, Any]) -> tuple[str | None, int | None, bool]:
    if frame.get("type") != "hello":
        raise BadRequest("the first frame must be hello")
    token = frame.get("token")
    if token is not None and (not isinstance(token, str) or len(token) > 4096):
        raise BadRequest("`token` must be a string or null")
    resume = frame.get("resume_from")
    if resume is not None and (not isinstance(resume, int) or isinstance(resume, bool) or resume < 0):
        raise BadRequest("`resume_from` must be a non-negative integer or null")
    batch = frame.get("batch", True)
    if not isinstance(batch, bool):
        raise BadRequest("`batch` must be a boolean")
    return token or None, resume, batch
