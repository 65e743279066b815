"""Hostile input on every WebSocket endpoint: fuzzed frames, protocol abuse.

The node must answer every bad frame with a well-formed `error` (never
`internal`), keep the connection open unless the protocol says otherwise
(1007, 1009, 1002, 4408), and keep serving everyone else: /readyz stays 200
and observers on the same and on another show still get broadcast events.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livecore import protocol
from tests.reliability.helpers import (
    LogCursor,
    close_code_of,
    crash_lines,
    hello,
    make_show,
    raw_ws_handshake,
    read_close_code,
    ws_connect,
    ws_frame,
)
from tests.reliability.strategies import frame_or_bytes, raw_text
from tests.support import WS, ServerProc, mint

ENDPOINT_OF = {"viewer": "viewer", "anon": "viewer", "host": "host", "moderator": "moderator",
               "admin": "host"}
# RELIABILITY_FUZZ_EXAMPLES raises the budget for a deep run (the default keeps the suite quick).
FUZZ = settings(max_examples=int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "150")), deadline=None, derandomize=False, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@dataclass
class Arena:
    node: ServerProc = field(repr=False)
    show_id: str
    other_show: str
    sessions: dict[str, websockets.ClientConnection]
    observers: list[WS]
    host: WS
    cursor: LogCursor
    known: dict[str, list[Any]] = field(default_factory=dict)
    sent: int = 0
    errors: dict[str, int] = field(default_factory=dict)


async def exchange(conn: websockets.ClientConnection, frames: list[str | bytes]) -> list[dict[str, Any]]:
    """Send frames, then a ping; return every frame received before its pong."""
    for f in frames:
        await conn.send(f)
    marker = f"fz-{uuid.uuid4().hex[:10]}"
    await conn.send(orjson.dumps({"type": "ping", "id": marker}).decode())
    out: list[dict[str, Any]] = []
    while True:
        frame = orjson.loads(await asyncio.wait_for(conn.recv(), 30))
        assert isinstance(frame, dict) and isinstance(frame.get("type"), str), frame
        if frame["type"] == "pong" and frame.get("re") == marker:
            return out
        out.extend(frame["events"] if frame["type"] == "batch" else [frame])


def check_replies(replies: list[dict[str, Any]], arena: Arena) -> None:
    for r in replies:
        if r["type"] != "error":
            continue
        assert r.get("code") != "internal", r
        assert isinstance(r.get("code"), str) and isinstance(r.get("message"), str), r
        arena.errors[r["code"]] = arena.errors.get(r["code"], 0) + 1


async def assert_alive(arena: Arena, cursor: LogCursor) -> None:
    async with httpx.AsyncClient(base_url=arena.node.base_url, timeout=15) as client:
        assert (await client.get("/readyz")).status_code == 200
    text = f"still here {uuid.uuid4().hex[:6]}"
    ack = await arena.host.request("announce", text=text)
    assert ack["type"] == "ack", ack
    for obs in arena.observers[:1]:
        got = await obs.wait_for(lambda f: f.get("type") == "announcement" and f.get("text") == text, 20)
        assert got["seq"] > 0
    # The observer of another show still gets that show's events.
    other = arena.observers[1]
    other_host = await WS.open(arena.node.ws_url("host", arena.other_show), mint("host", arena.other_show))
    await other_host.request("announce", text=text)
    await other.wait_for(lambda f: f.get("type") == "announcement" and f.get("text") == text, 20)
    await other_host.close()
    assert crash_lines(cursor.read()) == []


@pytest_asyncio.fixture(scope="module")
async def arena(edge: ServerProc) -> Any:
    cursor = LogCursor(edge)
    async with httpx.AsyncClient(base_url=edge.base_url, timeout=30) as client:
        show_id, product_id = await make_show(client, stock=10_000)
        other_show, other_product = await make_show(client)
    host = await WS.open(edge.ws_url("host", show_id), mint("host", show_id, "fz-host"))
    deal = await host.request("deal.launch", product_id=product_id, price_cents=10, quantity=50, duration_s=600)
    assert deal["type"] == "ack", deal
    viewer_tok = mint("viewer", show_id, "fz-viewer")
    talker = await WS.open(edge.ws_url("viewer", show_id), mint("viewer", show_id, "fz-talker"))
    said = await talker.request("chat.send", text="hello there")
    await talker.close()  # a socket nobody reads would make its own close wait out the timeout
    sessions: dict[str, websockets.ClientConnection] = {}
    for name, role, token in (("viewer", "viewer", viewer_tok), ("anon", "viewer", None),
                              ("host", "host", mint("host", show_id, "fz-host2")),
                              ("moderator", "moderator", mint("moderator", show_id, "fz-mod")),
                              ("admin", "host", mint("admin", "*", "fz-admin"))):
        conn = await ws_connect(edge.ws_url(role, show_id))
        await conn.send(hello(token, batch=name != "viewer"))
        welcome = orjson.loads(await conn.recv())
        assert welcome["type"] == "welcome", welcome
        sessions[name] = conn
    observers = [await WS.open(edge.ws_url("viewer", show_id), None),
                 await WS.open(edge.ws_url("viewer", other_show), None)]
    known = {"show": [show_id, other_show], "product": [product_id, other_product],
             "deal": [deal["deal"]["id"]], "message": [said.get("message_id", "m_x")],
             "user": ["fz-viewer", "fz-talker", "fz-host"]}
    yield Arena(edge, show_id, other_show, sessions, observers, host, cursor, known)
    for conn in sessions.values():
        await conn.close()
    for ws in [*observers, host]:
        await ws.close()


@FUZZ
@given(data=st.data())
async def test_fuzzed_frames_on_every_endpoint(arena: Arena, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(arena.sessions)), label="session")
    allowed = protocol.ENDPOINT_COMMANDS[ENDPOINT_OF[name]]
    frames = data.draw(st.lists(frame_or_bytes(arena.known, allowed), min_size=1, max_size=12), label="frames")
    conn = arena.sessions[name]
    try:
        replies = await exchange(conn, frames)
    except websockets.ConnectionClosed as exc:
        pytest.fail(f"{name} socket closed by the server ({exc}) after frames {frames!r}")
    check_replies(replies, arena)
    arena.sent += len(frames)


async def test_fuzz_left_everything_serving(arena: Arena) -> None:
    """Runs after the fuzzing above: nothing crashed, everyone is still served."""
    assert arena.sent > 0
    for conn in arena.sessions.values():
        assert (await exchange(conn, [])) is not None
    await assert_alive(arena, arena.cursor)
    # bad input was refused with the documented codes, not accepted silently
    assert arena.errors.get("bad_request", 0) > 0


@settings(max_examples=max(25, int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "150")) // 6), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(junk=st.lists(raw_text | st.binary(max_size=50), max_size=4), batch=st.booleans())
async def test_fuzzed_frames_before_hello(arena: Arena, junk: list[str | bytes], batch: bool) -> None:
    """Anything before hello is refused with an error frame; a real hello still gets its welcome."""
    conn = await ws_connect(arena.node.ws_url("viewer", arena.show_id))
    try:
        for f in junk:
            await conn.send(f)
        await conn.send(hello(mint("viewer", arena.show_id), batch=batch))
        while True:
            frame = orjson.loads(await asyncio.wait_for(conn.recv(), 20))
            if frame["type"] == "welcome":
                break
            assert frame["type"] == "error" and frame["code"] == "bad_request", frame
    finally:
        await conn.close()


async def test_protocol_abuse_closes_only_the_abuser(arena: Arena) -> None:
    cursor = LogCursor(arena.node)
    node, show = arena.node, arena.show_id
    url = node.ws_url("viewer", show)
    token = mint("viewer", show)
    outcomes: dict[str, Any] = {}

    # no hello at all: 4408 after the (1 s) hello timeout
    conn = await ws_connect(url)
    outcomes["no hello"] = await close_code_of(conn)
    # a frame over 64 KiB: 1009
    conn = await ws_connect(url)
    await conn.send(hello(token))
    await conn.recv()
    await conn.send('{"type":"chat.send","id":"big","text":"' + "a" * 70_000 + '"}')
    outcomes["oversized"] = await close_code_of(conn)
    # exactly at the limit: an ordinary error, the socket stays
    conn = await ws_connect(url)
    await conn.send(hello(token))
    await conn.recv()
    edge_frame = '{"type":"chat.send","id":"edge","text":"' + "a" * (65536 - 42) + '"}'
    assert len(edge_frame.encode()) == 65536
    await conn.send(edge_frame)
    reply = orjson.loads(await asyncio.wait_for(conn.recv(), 15))
    outcomes["at the limit"] = reply.get("code")
    # a fragmented message is reassembled
    await conn.send(['{"type":', '"ping","id":"frag"}'])
    outcomes["fragmented"] = orjson.loads(await asyncio.wait_for(conn.recv(), 15))["type"]
    # hello twice
    await conn.send(hello(token))
    outcomes["hello twice"] = orjson.loads(await asyncio.wait_for(conn.recv(), 15))["code"]
    await conn.close()
    # unknown endpoint, unknown show, a show id PostgreSQL cannot store
    for label, path in (("unknown endpoint", ("admin", show)), ("unknown show", ("viewer", "s_nope")),
                        ("NUL show id", ("viewer", "s%00x"))):
        conn = await ws_connect(node.ws_url(*path))
        with contextlib.suppress(websockets.ConnectionClosed):
            await conn.send(hello(None))
        outcomes[label] = await close_code_of(conn)

    def raw(frame: bytes, *, after_hello: bool = True) -> int | None:
        sock = raw_ws_handshake(node.port, f"/ws/viewer/{show}")
        try:
            if after_hello:
                sock.sendall(ws_frame(0x1, hello(token).encode()))
            sock.sendall(frame)
            return read_close_code(sock)
        finally:
            sock.close()

    raw_cases = {
        "invalid UTF-8 text": ws_frame(0x1, b'{"type":"ping","id":"\xff\xfe"}'),
        "invalid UTF-8 hello": ws_frame(0x1, b"\xc3\x28"),
        "ping over 125 bytes": ws_frame(0x9, b"p" * 200),
        "reserved opcode": ws_frame(0x3, b"{}"),
        "unmasked frame": bytes([0x81, 2]) + b"{}",
        "fragmented control": ws_frame(0x9, b"x", fin=False),
        "continuation first": ws_frame(0x0, b"{}"),
        "close with bad code": ws_frame(0x8, (999).to_bytes(2, "big")),
    }
    for label, frame in raw_cases.items():
        outcomes[label] = await asyncio.to_thread(raw, frame, after_hello=label != "invalid UTF-8 hello")
    # a client that disconnects mid-frame
    sock = raw_ws_handshake(node.port, f"/ws/viewer/{show}")
    sock.sendall(ws_frame(0x1, hello(token).encode()) + ws_frame(0x1, b"x" * 1000)[:300])
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()

    assert outcomes == {
        "no hello": 4408, "oversized": 1009, "at the limit": "too_long", "fragmented": "pong",
        "hello twice": "bad_request", "unknown endpoint": 4404, "unknown show": 4404, "NUL show id": 4404,
        "invalid UTF-8 text": 1007, "invalid UTF-8 hello": 1007, "ping over 125 bytes": 1002,
        "reserved opcode": 1002, "unmasked frame": 1002, "fragmented control": 1002,
        "continuation first": 1002, "close with bad code": 1002,
    }, outcomes
    await assert_alive(arena, cursor)


async def test_binary_and_deeply_nested_frames(arena: Arena) -> None:
    conn = arena.sessions["viewer"]
    replies = await exchange(conn, [b"\x00\x01\x02", "[" * 60_000, '{"a":' * 10_000 + "1" + "}" * 10_000,
                                    "1" * 60_000, "-" + "9" * 400, '"' + "\\u0000" * 5000 + '"'])
    errors = [r.get("code") for r in replies if r["type"] == "error"]
    assert errors == ["bad_request"] * 6, replies
