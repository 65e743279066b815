"""WebSocket wire details the socket layer needs, as pure functions.

`text_frame` is the point of the whole socket layer: a server-to-client frame
is unmasked, so the bytes of one event are the same for every viewer. The hub
hands the same `str` to thousands of connections in a row; the first call
builds the frame and the rest get the cached bytes (an identity check, no
encode, no copy), and each connection's cost is one `transport.write`.
"""

from __future__ import annotations

import re
import struct
from urllib.parse import unquote

_last_text = ""
_last_frame = b"\x81\x00"

SOCKET_PATH = re.compile(r"/ws/([^/]+)/([^/]+)")


def text_frame(text: str) -> bytes:
    """One final, unmasked text frame (RFC 6455 §5.2) carrying `text`."""
    global _last_text, _last_frame
    if text is _last_text:
        return _last_frame
    payload = text.encode()
    n = len(payload)
    if n < 126:
        head = bytes((0x81, n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 127, n)
    # Holding a reference to `text` keeps its id from being reused by another string.
    _last_text, _last_frame = text, head + payload
    return _last_frame


_last_texts: list[str] = []
_last_frames = b""


def text_frames(texts: list[str]) -> bytes:
    """Several text frames back to back: one write (one syscall) delivers them all.
    Cached by list identity, as text_frame is by string identity."""
    global _last_texts, _last_frames
    if texts is not _last_texts:
        _last_texts, _last_frames = texts, b"".join([text_frame(t) for t in texts])
    return _last_frames


def socket_route(target: str) -> tuple[str, str] | None:
    """(endpoint, show id) of a request target like `/ws/viewer/abc?x=1`, or None."""
    path = unquote(target.partition("?")[0])
    m = SOCKET_PATH.fullmatch(path)
    return (m.group(1), m.group(2)) if m else None
