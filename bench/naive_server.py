"""The naive fanout baseline for bench.fanout: what a first version usually looks like.

A plain Starlette app under the same uvicorn configuration as `livecore serve`
(uvloop, ws="websockets-sansio", the same ping and frame limits, uvicorn's
default permessage-deflate). Every broadcast is

    for ws in connections:
        await ws.send_text(data)

run inline in the host's socket handler (chat) or in a 1 s timer (deal.tick).
The event is JSON-encoded once per broadcast, so the difference to LiveCore is
the delivery path, not the encoding: no Redis, no per-connection queue or
writer task, no backpressure, no slow-client policy, a single process-local
show. It speaks just enough of PROTOCOL.md for bench.fanout's clients:
hello -> welcome, `chat.send` from the host -> `chat.message` to everyone
(with `seq` and `ts`), `deal.tick` once a second.

    python -m bench.naive_server --port 8765
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

VIEWERS: set[WebSocket] = set()
STATE = {"seq": 0}
DEAL = {"id": "naive-deal", "remaining": 1000, "ends_at": 0}


def now_ms() -> int:
    return int(time.time() * 1000)


async def broadcast(data: str) -> None:
    for ws in list(VIEWERS):
        try:
            await ws.send_text(data)
        except Exception:
            VIEWERS.discard(ws)


async def _hello(ws: WebSocket, role: str) -> None:
    await ws.accept()
    await asyncio.wait_for(ws.receive_text(), 5)
    await ws.send_text(json.dumps({
        "type": "welcome", "session_id": uuid.uuid4().hex,
        "user": {"id": None, "name": "anonymous", "role": role}, "server_time": now_ms(),
        "show": {"id": ws.path_params["show"], "title": "naive", "status": "live"},
        "pinned": None, "deal": None, "viewers": len(VIEWERS), "seq": STATE["seq"],
        "recovered": False}))


async def viewer(ws: WebSocket) -> None:
    await _hello(ws, "viewer")
    VIEWERS.add(ws)
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
    except WebSocketDisconnect:
        return
    finally:
        VIEWERS.discard(ws)


async def host(ws: WebSocket) -> None:
    await _hello(ws, "host")
    try:
        while True:
            frame = json.loads(await ws.receive_text())
            if frame.get("type") != "chat.send":
                continue
            STATE["seq"] += 1
            ts = now_ms()
            message = {"id": uuid.uuid4().hex[:12], "user": {"id": "host", "name": "Host", "role": "host"},
                       "text": frame["text"], "ts": ts}
            await broadcast(json.dumps({"type": "chat.message", "message": message,
                                        "seq": STATE["seq"], "ts": ts}))
            await ws.send_text(json.dumps({"type": "ack", "re": frame.get("id"),
                                           "message_id": message["id"]}))
    except WebSocketDisconnect:
        return


async def ticks() -> None:
    DEAL["ends_at"] = now_ms() + 3_600_000
    while True:
        await asyncio.sleep(1)
        await broadcast(json.dumps({"type": "deal.tick", "deal_id": DEAL["id"],
                                    "remaining": DEAL["remaining"], "ends_at": DEAL["ends_at"],
                                    "server_time": now_ms()}))


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok", "viewers": len(VIEWERS)})


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    task = asyncio.ensure_future(ticks())
    try:
        yield
    finally:
        task.cancel()


app = Starlette(routes=[Route("/healthz", healthz), WebSocketRoute("/ws/viewer/{show}", viewer),
                        WebSocketRoute("/ws/host/{show}", host)], lifespan=lifespan)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    # The same transport settings as livecore.cli._run_server.
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", ws="websockets-sansio",
                ws_max_size=65536, ws_ping_interval=20, ws_ping_timeout=20, lifespan="on",
                timeout_keep_alive=5, log_level="warning", access_log=False, backlog=4096,
                limit_concurrency=51_000)


if __name__ == "__main__":
    main()
