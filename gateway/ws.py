"""Socket sessions (PROTOCOL §4–5): hello, welcome, command dispatch, replies.

The WebSocket mechanics are gateway/socket_protocol.py's; this is the LiveCore
protocol on top, one Session per socket."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson

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

if TYPE_CHECKING:
    from gateway.socket_protocol import SocketProtocol

log = logging.getLogger("gateway.ws")

ENDPOINT_ROLES = {"viewer": ("viewer", "host", "moderator", "admin"),
                  "host": ("host", "admin"), "moderator": ("moderator", "admin")}


def error_frame(exc: LiveCoreError, re: Any) -> str:
    body: dict[str, Any] = {"type": "error", "re": re, "code": exc.code, "message": exc.message}
    for key in ("retry_after_ms", "until", "field"):
        if key in exc.extra:
            body[key] = exc.extra[key]
    return orjson.dumps(body).decode()


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


class Session:
    """The LiveCore protocol on one socket (PROTOCOL §4–5), driven by its frames.

    No task waits on an idle socket: `on_message` handles a frame as it arrives,
    and only work that awaits (the welcome, a command) runs in a task. One runs
    at a time per socket, so replies keep the order of the requests; frames that
    arrive meanwhile wait in `backlog` and the socket stops reading until it drains.
    """

    __slots__ = ("admitted", "backlog", "bucket", "busy", "claims", "cmd", "conn", "ctx", "dead",
                 "endpoint", "hello_timer", "ip", "joined", "show_id", "sock", "strikes", "task")

    def __init__(self, ctx: AppContext, sock: SocketProtocol, endpoint: str, show_id: str, ip: str) -> None:
        self.ctx = ctx
        self.sock = sock
        self.endpoint = endpoint
        self.show_id = show_id
        self.ip = ip
        self.admitted = False
        self.joined = False
        self.dead = False
        self.busy = False
        self.backlog: list[str | None] = []
        self.conn: Conn | None = None
        self.claims: Claims | None = None
        self.cmd: CommandContext | None = None
        self.task: asyncio.Task[None] | None = None
        self.strikes = 0
        settings = ctx.settings
        # Before hello: frames are all mistakes, and a client gets `frame_burst` of them.
        self.bucket = TokenBucket(settings.frame_rate_per_s, settings.frame_burst)
        self.hello_timer: asyncio.TimerHandle | None = None

    # ---- lifecycle (called by the socket) ---------------------------------------

    def opened(self) -> None:
        if self.endpoint not in ENDPOINT_ROLES:
            self.sock.close(4404, "unknown endpoint")
            return
        settings = self.ctx.settings
        refused = admission_of(self.ctx).enter(self.ip, settings.max_connections,
                                               settings.max_connections_per_ip)
        if refused is not None:
            self.sock.close(1013, refused)
            return
        self.admitted = True
        self.hello_timer = asyncio.get_running_loop().call_later(settings.hello_timeout_s, self._no_hello)

    def closed(self) -> None:
        if self.dead:
            return
        self.dead = True
        if self.hello_timer is not None:
            self.hello_timer.cancel()
        conn = self.conn
        if conn is not None:
            conn.gone()
            self.ctx.hub.leave(conn)
            if self.joined:
                RECORDER.viewer_left(id(conn))
        if self.admitted:
            self.admitted = False
            admission_of(self.ctx).leave(self.ip)

    def shutdown(self, code: int, reason: str) -> None:
        if self.conn is not None:
            self.conn.close(code, reason)
        else:
            self.sock.close(code, reason)

    def _no_hello(self) -> None:
        self.hello_timer = None
        if self.conn is None and not self.busy:
            self.sock.close(4408, "no hello in time")

    # ---- frames ----------------------------------------------------------------------

    def on_message(self, raw: str | None) -> None:
        """One text frame (binary as None)."""
        if self.sock.close_timer is not None:
            return  # we are closing it: whatever the client still sends is moot
        if self.busy:
            self.backlog.append(raw)
            self.sock.pause_reading()
            return
        self._handle(raw)

    def _handle(self, raw: str | None) -> None:
        if self.conn is not None:
            self._on_command(raw)
        elif not self.dead:
            self._on_hello(raw)

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        self.busy = True
        self.task = asyncio.ensure_future(self._guard(coro))

    async def _guard(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except Exception:
            log.exception("socket session failed")
            self.shutdown(1011, "internal error")
        finally:
            self.busy = False
            self.task = None
            self._drain()

    def _drain(self) -> None:
        # Runs on after the client went away: what it sent before closing still counts
        # (a chat message, a claim), as it would have had it arrived a moment earlier.
        # Not after we closed the socket ourselves (flooding, 1013, 1012).
        while self.backlog and not self.busy and self.sock.close_timer is None:
            self._handle(self.backlog.pop(0))
        if not self.backlog:
            self.sock.resume_reading()

    def _on_hello(self, raw: str | None) -> None:
        try:
            hello = protocol.parse_hello(protocol.parse_frame(raw))
        except BadRequest as exc:
            if self.bucket.take(time.monotonic()) > 0:
                self.sock.close(4429, "flooding")
                return
            self.sock.write_text(error_frame(exc, None))
            return
        if self.hello_timer is not None:
            self.hello_timer.cancel()
            self.hello_timer = None
        self._run(self._open(*hello))

    def _on_command(self, raw: str | None) -> None:
        conn, settings = self.conn, self.ctx.settings
        assert conn is not None and self.cmd is not None
        rid = None
        try:
            wait = self.bucket.take(time.monotonic())
            if wait > 0:
                self.strikes += 1
                if self.strikes >= settings.flood_strikes:
                    conn.close(4429, "flooding")
                    return
                raise RateLimited("slow down", retry_after_ms=int(wait * 1000) + 1)
            if self.strikes:
                self.strikes -= 1
            frame = protocol.parse_frame(raw)
            rid = protocol.request_id(frame)
            type_ = frame["type"]
            FRAMES_IN.labels(type_ if type_ in protocol.ALL_COMMANDS else "unknown").inc()
            if type_ == "hello":
                raise BadRequest("already said hello")
            if type_ not in protocol.ALL_COMMANDS:
                raise BadRequest(f"unknown frame type {type_[:40]!r}")
            if type_ not in protocol.ENDPOINT_COMMANDS[self.endpoint]:
                raise Forbidden(f"{type_} is not allowed on the {self.endpoint} endpoint")
        except LiveCoreError as exc:
            conn.push(error_frame(exc, rid))
            return
        self._run(self._command(conn, self.cmd, type_, frame, rid))

    async def _command(self, conn: Conn, cmd: CommandContext, type_: str, frame: dict[str, Any],
                       rid: Any) -> None:
        try:
            reply = await run_command(cmd, type_, frame)
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
                return
            log.exception("command failed")
            conn.push(orjson.dumps({"type": "error", "re": rid, "code": "internal",
                                    "message": "internal error"}).decode())

    # ---- hello → welcome ------------------------------------------------------------

    async def _open(self, token: str | None, resume_from: int | None, batch_ok: bool) -> None:
        try:
            await self._welcome(token, resume_from, batch_ok)
        except Exception as exc:
            mapped = as_domain_error(exc)
            if mapped is None:
                raise
            # PostgreSQL or Redis is down while we build the welcome: come back later.
            log.warning("socket handshake failed: %s (%s)", mapped.code, type(exc).__name__)
            self.shutdown(1013, "service unavailable, retry shortly")

    async def _welcome(self, token: str | None, resume_from: int | None, batch_ok: bool) -> None:
        ctx, endpoint, show_id = self.ctx, self.endpoint, self.show_id
        claims: Claims | None = None
        if token is not None:
            try:
                claims = ctx.tokens.verify(token)
            except Unauthenticated as exc:
                self.sock.close(4401, exc.message)
                return
        elif endpoint != "viewer":
            self.sock.close(4401, "a token is required on this endpoint")
            return
        try:
            show = await ctx.shows.get(show_id)
        except asyncpg.DataError:
            show = None  # an id PostgreSQL cannot even store names no show
        if self.dead:
            return
        if show is None:
            self.sock.close(4404, "unknown show")
            return
        if claims is not None and (claims.role not in ENDPOINT_ROLES[endpoint] or not claims.can_act_on(show_id)):
            self.sock.close(4403, "wrong role or show for this endpoint")
            return
        conn = Conn(show_id, endpoint, claims.sub if claims else None, self.sock,
                    ctx.settings.send_queue_max, batch_ok)
        conn.paused = self.sock.paused
        self.conn, self.claims = conn, claims
        hub, services = ctx.hub, ctx.services
        channel = await hub.join(conn)
        if self.dead:
            return  # closed() already left the hub
        self.joined = True
        RECORDER.viewer_joined(show_id, id(conn), conn.user_id, conn.role)
        seq = channel.last_seq
        # Read after `seq` was taken (a change after it arrives as an event), and all
        # at once: a reconnect storm waits one round trip per join, not four.
        deal, pinned, viewers, pinned_message = await asyncio.gather(
            services.deals.live_deal(show_id), services.shows.pinned_product(show_id),
            hub.viewers(show_id), services.moderation.pinned_message(show_id))
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
            replay, recovered = await _history(ctx, show_id, resume_from, seq)
            welcome["recovered"] = recovered
        if conn.staff:
            welcome["moderation"] = await services.moderation.settings_of(show_id)
            welcome["held"] = await services.moderation.held_messages(show_id)
        if self.dead:
            return
        conn.queue.append(orjson.dumps(welcome).decode())
        conn.queue.extend(replay)
        # Hosts and moderators run the show: they get more headroom than viewers.
        scale = 1 if endpoint == "viewer" else 5
        self.bucket = TokenBucket(ctx.settings.frame_rate_per_s * scale, ctx.settings.frame_burst * scale)
        self.cmd = CommandContext(ctx=ctx, conn=conn, claims=claims, endpoint=endpoint)
        hub.go_live(conn, seq)
        conn.start()


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
