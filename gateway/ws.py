"""WebSocket sessions (PROTOCOL §4–5): handshake, command dispatch, replies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from typing import Any

import asyncpg
import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.context import AppContext
from gateway.errors import as_domain_error
from gateway.hub import Conn
from gateway.session_commands import CommandContext, run_command
from livecore import protocol
from livecore.analytics import RECORDER
from livecore.auth import Claims
from livecore.deals import public_deal
from livecore.errors import BadRequest, Forbidden, LiveCoreError, RateLimited, Unauthenticated
from livecore.ids import now_ms
from livecore.metrics import FRAMES_IN
from livecore.ratelimit import TokenBucket

log = logging.getLogger("gateway.ws")

ENDPOINT_ROLES = {"viewer": ("viewer", "host", "moderator", "admin"),
                  "host": ("host", "admin"), "moderator": ("moderator", "admin")}


def error_frame(exc: LiveCoreError, re: Any) -> str:
    body: dict[str, Any] = {"type": "error", "re": re, "code": exc.code, "message": exc.message}
    for key in ("retry_after_ms", "until", "field"):
        if key in exc.extra:
            body[key] = exc.extra[key]
    return orjson.dumps(body).decode()


async def _receive(ws: WebSocket) -> str | bytes | None:
    """One frame: text as str, binary as None (refused), disconnect raises."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    if message.get("text") is not None:
        return str(message["text"])
    return None


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        await ws.close(code, reason)


class Admission:
    """This process's sockets, counted from accept on (a socket that has not
    said hello yet holds a task and buffers too), in total and per client IP
    (the proxy-forwarded address when uvicorn trusts the proxy)."""

    def __init__(self) -> None:
        self.total = 0
        self.by_ip: Counter[str] = Counter()

    def enter(self, ip: str, max_total: int, max_per_ip: int) -> str | None:
        """Count the socket in, or return why it is refused."""
        if self.total >= max_total:
            return "server full, try another node"
        if self.by_ip[ip] >= max_per_ip:
            return "too many connections from your address"
        self.total += 1
        self.by_ip[ip] += 1
        return None

    def leave(self, ip: str) -> None:
        self.total -= 1
        self.by_ip[ip] -= 1
        if self.by_ip[ip] <= 0:
            del self.by_ip[ip]


def admission_of(ctx: AppContext) -> Admission:
    admission = ctx.extras.get("admission")
    if admission is None:
        admission = ctx.extras["admission"] = Admission()
    assert isinstance(admission, Admission)
    return admission


async def socket_endpoint(ws: WebSocket) -> None:
    ctx: AppContext = ws.app.state.ctx
    endpoint = ws.path_params["role"]
    await ws.accept()
    if endpoint not in ENDPOINT_ROLES:
        await _close(ws, 4404, "unknown endpoint")
        return
    settings = ctx.settings
    ip = ws.client.host if ws.client else "unknown"
    admission = admission_of(ctx)
    refused = admission.enter(ip, settings.max_connections, settings.max_connections_per_ip)
    if refused is not None:
        await _close(ws, 1013, refused)
        return
    try:
        await _handshake(ctx, ws, endpoint)
    except Exception as exc:
        mapped = as_domain_error(exc)
        if mapped is None:
            raise
        # PostgreSQL or Redis is down while we build the welcome: come back later.
        log.warning("socket handshake failed: %s (%s)", mapped.code, type(exc).__name__)
        await _close(ws, 1013, "service unavailable, retry shortly")
    finally:
        admission.leave(ip)


async def _handshake(ctx: AppContext, ws: WebSocket, endpoint: str) -> None:
    show_id = ws.path_params["show"]
    settings = ctx.settings
    deadline = time.monotonic() + settings.hello_timeout_s
    # Frames before hello are all mistakes: a client gets `frame_burst` of them.
    bucket = TokenBucket(settings.frame_rate_per_s, settings.frame_burst)
    hello: tuple[str | None, int | None, bool] | None = None
    try:
        while hello is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            raw = await asyncio.wait_for(_receive(ws), remaining)
            try:
                hello = protocol.parse_hello(protocol.parse_frame(raw))
            except BadRequest as exc:
                if bucket.take(time.monotonic()) > 0:
                    await _close(ws, 4429, "flooding")
                    return
                await ws.send_text(error_frame(exc, None))
    except TimeoutError:
        await _close(ws, 4408, "no hello in time")
        return
    except WebSocketDisconnect:
        return
    token, resume_from, batch_ok = hello
    claims: Claims | None = None
    if token is not None:
        try:
            claims = ctx.tokens.verify(token)
        except Unauthenticated as exc:
            await _close(ws, 4401, exc.message)
            return
    elif endpoint != "viewer":
        await _close(ws, 4401, "a token is required on this endpoint")
        return
    try:
        show = await ctx.shows.get(show_id)
    except asyncpg.DataError:
        show = None  # an id PostgreSQL cannot even store names no show
    if show is None:
        await _close(ws, 4404, "unknown show")
        return
    if claims is not None and (claims.role not in ENDPOINT_ROLES[endpoint] or not claims.can_act_on(show_id)):
        await _close(ws, 4403, "wrong role or show for this endpoint")
        return
    conn = Conn(show_id, endpoint if endpoint != "viewer" else "viewer",
                claims.sub if claims else None, ws.send_text, ws.close, settings.send_queue_max, batch_ok)
    if endpoint != "viewer":
        conn.staff = True
    try:
        await _session(ctx, ws, conn, claims, show, resume_from, endpoint)
    finally:
        if conn.closing and conn.writer is not None:
            # Let the writer deliver the close code (1013, 4429, 1012) before we let go.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(conn.writer), 2)
        ctx.hub.leave(conn)
        RECORDER.viewer_left(id(conn))


async def _session(ctx: AppContext, ws: WebSocket, conn: Conn, claims: Claims | None,
                   show: dict[str, Any], resume_from: int | None, endpoint: str) -> None:
    hub = ctx.hub
    services = ctx.services
    channel = await hub.join(conn)
    RECORDER.viewer_joined(conn.show_id, id(conn), conn.user_id, conn.role)
    seq = channel.last_seq
    # Read after `seq` was taken (a change after it arrives as an event), and all
    # at once: a reconnect storm waits one round trip per join, not four.
    deal, pinned, viewers, pinned_message = await asyncio.gather(
        services.deals.live_deal(conn.show_id), services.shows.pinned_product(conn.show_id),
        hub.viewers(conn.show_id), services.moderation.pinned_message(conn.show_id))
    welcome: dict[str, Any] = {
        "type": "welcome", "session_id": uuid.uuid4().hex,
        "user": ({"id": claims.sub, "name": claims.name, "role": claims.role} if claims
                 else {"id": None, "name": "anonymous", "role": "viewer"}),
        "server_time": now_ms(),
        "show": {"id": show["id"], "title": show["title"], "status": show["status"]},
        "pinned": pinned,
        "deal": public_deal(deal) if deal else None,
        "viewers": viewers,
        "seq": seq, "recovered": False,
        "node": ctx.node_id,
        "pinned_message": pinned_message,
    }
    replay: list[str] = []
    if resume_from is not None:
        replay, recovered = await _history(ctx, conn.show_id, resume_from, seq)
        welcome["recovered"] = recovered
    if conn.staff:
        welcome["moderation"] = await services.moderation.settings_of(conn.show_id)
        welcome["held"] = await services.moderation.held_messages(conn.show_id)
    conn.queue.append(orjson.dumps(welcome).decode())
    conn.queue.extend(replay)
    hub.go_live(conn, seq)
    conn.start()
    # The snapshot is queued: don't keep it alive for the connection's lifetime.
    del welcome, replay
    await _read_frames(ctx, ws, conn, claims, endpoint)


async def _history(ctx: AppContext, show_id: str, resume_from: int, upto: int) -> tuple[list[str], bool]:
    """Events with resume_from < seq <= upto, and whether history reached back.

    A chat message deleted since is replayed as a `chat.deleted` under the
    message's own seq: the replay stays gap-free and the text never comes back."""
    if resume_from >= upto:
        # Ahead of the server (it lost its history): not a recovery.
        return [], resume_from == upto
    key = ctx.services.keys.show(show_id, "events")
    entries: Any = await ctx.services.redis.xrange(key, min=f"{resume_from + 1}-0", max=f"{upto}-0")
    if not entries or int(entries[0][0].split("-")[0]) != resume_from + 1:
        return [], False
    deleted = await ctx.services.moderation.deleted_ids(show_id)
    out: list[str] = []
    for _, fields in entries:
        data = fields["d"]
        if deleted and '"chat.message"' in data:
            event = orjson.loads(data)
            msg_id = event.get("message", {}).get("id")
            if msg_id in deleted:
                data = orjson.dumps({"type": "chat.deleted", "seq": event.get("seq"),
                                     "ts": event.get("ts"), "message_id": msg_id}).decode()
        out.append(data)
    return out, True


async def _read_frames(ctx: AppContext, ws: WebSocket, conn: Conn, claims: Claims | None,
                       endpoint: str) -> None:
    settings = ctx.settings
    # Hosts and moderators run the show: they get more headroom than viewers.
    scale = 1 if endpoint == "viewer" else 5
    bucket = TokenBucket(settings.frame_rate_per_s * scale, settings.frame_burst * scale)
    strikes = 0
    cmd_ctx = CommandContext(ctx=ctx, conn=conn, claims=claims, endpoint=endpoint)
    allowed = protocol.ENDPOINT_COMMANDS[endpoint]
    while not conn.closing:
        try:
            raw = await _receive(ws)
        except WebSocketDisconnect:
            return
        rid = None
        try:
            wait = bucket.take(time.monotonic())
            if wait > 0:
                strikes += 1
                if strikes >= settings.flood_strikes:
                    conn.close(4429, "flooding")
                    return
                raise RateLimited("slow down", retry_after_ms=int(wait * 1000) + 1)
            strikes = max(0, strikes - 1) if strikes else 0
            frame = protocol.parse_frame(raw)
            rid = protocol.request_id(frame)
            type_ = frame["type"]
            FRAMES_IN.labels(type_ if type_ in protocol.ALL_COMMANDS else "unknown").inc()
            if type_ == "hello":
                raise BadRequest("already said hello")
            if type_ not in protocol.ALL_COMMANDS:
                raise BadRequest(f"unknown frame type {type_[:40]!r}")
            if type_ not in allowed:
                raise Forbidden(f"{type_} is not allowed on the {endpoint} endpoint")
            reply = await run_command(cmd_ctx, type_, frame)
            if reply is not None:
                conn.push(orjson.dumps({"type": "ack", "re": rid, **reply}).decode()
                          if reply.get("type") is None else orjson.dumps({**reply, "re": rid}).decode())
        except LiveCoreError as exc:
            conn.push(error_frame(exc, rid))
        except Exception as exc:
            mapped = as_domain_error(exc)
            if mapped is not None:
                # An outage (unavailable, retry) or input PostgreSQL refuses (bad_request).
                log.warning("command %s failed: %s (%s)", rid, mapped.code, type(exc).__name__)
                conn.push(error_frame(mapped, rid))
                continue
            log.exception("command failed")
            conn.push(orjson.dumps({"type": "error", "re": rid, "code": "internal",
                                    "message": "internal error"}).decode())
