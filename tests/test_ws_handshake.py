"""Socket handshake, refusals and bad frames against a real server."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
import websockets

from livecore.embedded import free_port
from tests.support import WS, ServerProc, create_show, mint, server_env
from tests.test_ws_fanout import stalled_socket


async def close_code(conn: websockets.ClientConnection, timeout: float = 10) -> int:
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(conn.recv(), timeout)
    assert conn.close_code is not None
    return conn.close_code


async def hello_close(url: str, hello: dict[str, object] | None) -> int:
    conn = await websockets.connect(url)
    if hello is not None:
        await conn.send(orjson.dumps(hello).decode())
    return await close_code(conn)


async def test_welcome_snapshot(http: httpx.AsyncClient, server: ServerProc) -> None:
    show_id, _ = await create_show(http)
    token = mint("viewer", show_id, "alice", "Alice")
    ws = await WS.open(server.ws_url("viewer", show_id), token)
    w = ws.welcome
    assert w["type"] == "welcome"
    assert w["user"] == {"id": "alice", "name": "Alice", "role": "viewer"}
    assert w["show"]["id"] == show_id and w["show"]["status"] == "scheduled"
    assert w["pinned"] is None and w["deal"] is None
    assert isinstance(w["seq"], int) and isinstance(w["server_time"], int)
    assert w["recovered"] is False and isinstance(w["viewers"], int) and w["session_id"]
    pong = await ws.request("ping")
    assert pong["type"] == "pong"
    await ws.close()


async def test_refusal_close_codes(http: httpx.AsyncClient, server: ServerProc) -> None:
    show_id, _ = await create_show(http)
    other_show, _ = await create_show(http)
    url = server.ws_url
    assert await hello_close(url("viewer", show_id), {"type": "hello", "token": "bad", "resume_from": None}) == 4401
    expired = mint("viewer", show_id, ttl_s=-5)
    assert await hello_close(url("viewer", show_id), {"type": "hello", "token": expired}) == 4401
    assert await hello_close(url("host", show_id), {"type": "hello", "token": None}) == 4401
    assert await hello_close(url("host", show_id), {"type": "hello", "token": mint("viewer", show_id)}) == 4403
    assert await hello_close(url("moderator", show_id), {"type": "hello", "token": mint("host", show_id)}) == 4403
    assert await hello_close(url("viewer", show_id), {"type": "hello", "token": mint("viewer", other_show)}) == 4403
    assert await hello_close(url("viewer", "no-such-show"), {"type": "hello", "token": None}) == 4404


async def test_no_hello_times_out_4408(http: httpx.AsyncClient, server: ServerProc) -> None:
    show_id, _ = await create_show(http)
    assert await hello_close(server.ws_url("viewer", show_id), None) == 4408


async def test_oversized_frame_1009(http: httpx.AsyncClient, server: ServerProc) -> None:
    show_id, _ = await create_show(http)
    ws = await WS.open(server.ws_url("viewer", show_id), mint("viewer", show_id))
    await ws.conn.send('{"type":"chat.send","text":"' + "a" * 70_000 + '"}')
    assert await close_code(ws.conn) == 1009


async def test_bad_frames_keep_connection(http: httpx.AsyncClient, server: ServerProc) -> None:
    show_id, _ = await create_show(http)
    ws = await WS.open(server.ws_url("viewer", show_id), mint("viewer", show_id))
    bad = ["not json", "[1,2]", '"str"', "{}", '{"type":42}', '{"type":"nope","id":"x"}',
           '{"type":"chat.send","id":"t","text":5}', '{"type":"deal.claim","id":"q","deal_id":"d","qty":"1"}',
           '{"type":"hello","token":null}', '{"type":"react","emoji":"<script>"}']
    for raw in bad:
        await ws.conn.send(raw)
        frame = await ws.wait_for("error")
        assert frame["code"] == "bad_request", (raw, frame)
    await ws.conn.send(b"\x00\x01binary")
    assert (await ws.wait_for("error"))["code"] == "bad_request"
    assert (await ws.request("ping"))["type"] == "pong"
    # a viewer may not use host or moderator commands
    denied = await ws.request("show.start")
    assert denied["type"] == "error" and denied["code"] == "forbidden"
    denied = await ws.request("user.ban", user_id="x")
    assert denied["code"] == "forbidden"
    long = await ws.request("chat.send", text="x" * 501)
    assert long["code"] == "too_long"
    await ws.close()


async def test_anonymous_viewer_is_read_only(http: httpx.AsyncClient, server: ServerProc) -> None:
    show_id, _ = await create_show(http)
    ws = await WS.open(server.ws_url("viewer", show_id), None)
    assert ws.welcome["user"]["role"] == "viewer"
    assert (await ws.request("chat.send", text="hi"))["code"] == "unauthenticated"
    assert (await ws.request("deal.claim", deal_id="d_x"))["code"] == "unauthenticated"
    await ws.close()


async def test_flooding_closes_4429(http: httpx.AsyncClient, server: ServerProc) -> None:
    show_id, _ = await create_show(http)
    ws = await WS.open(server.ws_url("viewer", show_id), mint("viewer", show_id))
    for _ in range(300):
        try:
            await ws.conn.send('{"type":"ping"}')
        except websockets.ConnectionClosed:
            break
    assert await close_code(ws.conn) == 4429


async def test_keepalive_closes_a_client_that_stops_answering_pings(http: httpx.AsyncClient,
                                                                    backends: Any, prefix: str) -> None:
    node = ServerProc(free_port(), server_env(backends.redis_url, backends.database_url, prefix,
                                              LIVECORE_WS_PING_INTERVAL_S="0.5")).start()
    try:
        async with httpx.AsyncClient(base_url=node.base_url) as client:
            show_id, _ = await create_show(client)
        # A client that answers pings (websockets does, on its own) stays connected...
        alive = await WS.open(node.ws_url("viewer", show_id), None)
        # ...one that never reads (so never pongs) gets pings, then 1011 and EOF.
        raw = stalled_socket(node.port, f"/ws/viewer/{show_id}")
        raw.settimeout(30)  # hang guard, not a deadline: the server closes after ~2 intervals
        data = b""
        while chunk := await asyncio.to_thread(raw.recv, 65536):
            data += chunk
        raw.close()
        opcodes, close_payload, pos = [], b"", 0
        while pos + 2 <= len(data):
            op, length = data[pos] & 0x0F, data[pos + 1] & 0x7F
            head = 2 if length < 126 else 4
            if length == 126:
                length = int.from_bytes(data[pos + 2:pos + 4], "big")
            opcodes.append(op)
            if op == 0x8:
                close_payload = data[pos + head:pos + head + length]
            pos += head + length
        assert opcodes[0] == 0x1 and 0x9 in opcodes and opcodes[-1] == 0x8  # welcome, ping(s), close
        assert int.from_bytes(close_payload[:2], "big") == 1011
        assert (await alive.request("ping"))["type"] == "pong"
        await alive.close()
    finally:
        node.stop()


async def test_upgrade_on_a_path_that_is_not_a_socket_is_refused(server: ServerProc) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(f"ws://127.0.0.1:{server.port}/ws/viewer")
    assert refused.value.response.status_code == 404
    assert orjson.loads(refused.value.response.body)["error"]["code"] == "not_found"
