"""The WebSocket layer: one asyncio Protocol per socket, no ASGI in between.

uvicorn parses the HTTP request and, on `Upgrade: websocket`, hands the
connection to the `ws` protocol class it was configured with: this one (see
`socket_protocol`). It speaks WebSocket with the `websockets` library's
sans-I/O `ServerProtocol` (handshake, parsing, masking, ping/pong, close
handshake, size limit) and runs the LiveCore session (gateway/ws.py) on top.

Why not ASGI (docs/decisions/0008-own-socket-layer.md): under ASGI every
socket holds a task parked in `receive()` through six middleware frames, an
asyncio.Queue, an Event and a copy of the request headers (30 KB of Python
heap per idle viewer, measured with tracemalloc), and every outgoing frame is
a message dict through the same layers, encoded and framed per connection.
Here an idle viewer holds this object, the sans-I/O parser and a Conn; an
event is framed once for all viewers (gateway/wire.py) and each delivery is
one `transport.write`. Flow control comes from the transport itself:
`pause_writing`/`resume_writing` switch the Conn between writing through and
queueing.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from websockets.datastructures import Headers
from websockets.exceptions import InvalidState
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from gateway.wire import socket_route, text_frame, text_frames

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from gateway.ws import Session

log = logging.getLogger("gateway.socket")

# A client that does not answer our close frame within this long is cut off
# (a stalled reader never will: its close frame sits behind a full buffer).
CLOSE_TIMEOUT_S = 5.0
NOT_FOUND = b'{"error":{"code":"not_found","message":"no socket endpoint here; use /ws/{viewer|host|moderator}/{show}"}}'


class SocketProtocol(asyncio.Protocol):
    """One WebSocket connection on /ws/{endpoint}/{show}."""

    __slots__ = (
        "awaiting_pong",
        "close_timer",
        "closed",
        "config",
        "deflate",
        "frags",
        "frags_text",
        "paused",
        "server_state",
        "session",
        "transport",
        "ws",
    )

    # Set by socket_protocol() on the subclass it returns.
    app: Starlette
    ping_interval: float
    max_size: int
    offer_deflate: bool

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.config = config
        self.server_state = server_state
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        extensions = ([ServerPerMessageDeflateFactory(server_max_window_bits=12, client_max_window_bits=12,
                                                      compress_settings={"memLevel": 5})]
                      if self.offer_deflate else None)
        self.ws = ServerProtocol(extensions=extensions, max_size=self.max_size, logger=log)
        self.session: Session | None = None
        self.deflate = False
        self.paused = False
        self.closed = False
        self.awaiting_pong = False
        self.close_timer: asyncio.TimerHandle | None = None
        self.frags: list[bytes] | None = None
        self.frags_text = False

    # ---- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # uvicorn counts these toward limit_concurrency and calls shutdown() on them.
        self.server_state.connections.add(self)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Frame):
                self._on_frame(event)
            elif isinstance(event, Request):
                self._on_request(event)
        self._flush()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server_state.connections.discard(self)  # type: ignore[arg-type]
        _Keepalive.sockets.discard(self)
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        if self.session is not None:
            self.session.closed()

    def pause_writing(self) -> None:
        self.paused = True
        if self.session is not None and self.session.conn is not None:
            self.session.conn.pause()

    def resume_writing(self) -> None:
        self.paused = False
        if self.session is not None and self.session.conn is not None:
            self.session.conn.resume()

    # ---- what the session and the hub call -----------------------------------

    def write_text(self, data: str) -> None:
        if self.closed:
            return
        if self.deflate:
            # Compressed per connection (its own deflate context): no shared bytes.
            try:
                self.ws.send_text(data.encode())
            except InvalidState:
                return
            self._flush()
        else:
            self.transport.write(text_frame(data))

    def raw_writer(self) -> Callable[[bytes], None] | None:
        return None if self.deflate or self.closed else self.transport.write

    def write_texts(self, datas: list[str]) -> None:
        if self.deflate or self.closed:
            for data in datas:
                self.write_text(data)
        else:
            self.transport.write(text_frames(datas))

    def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake; the client has CLOSE_TIMEOUT_S to answer."""
        if self.closed or self.close_timer is not None:
            return
        if self.ws.state is State.OPEN:
            self.ws.send_close(code, reason[:120])
            self._flush()
        self.close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self.transport.abort)

    def pause_reading(self) -> None:
        if not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.closed:
            self.transport.resume_reading()

    def shutdown(self) -> None:
        """uvicorn's SIGTERM path: tell the client to reconnect elsewhere (1012)."""
        if self.session is not None:
            self.session.shutdown(1012, "server restarting")
        elif not self.closed:
            self.transport.close()

    # ---- WebSocket mechanics ------------------------------------------------

    def _flush(self) -> None:
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
            else:
                # websockets asks for EOF: the closing handshake is over (or failed).
                self.transport.close()

    def _on_request(self, request: Request) -> None:
        from gateway.ws import Session

        route = socket_route(request.path)
        response: Response
        if route is None:
            response = Response(404, "Not Found", Headers([("Content-Type", "application/json"),
                                                           ("Content-Length", str(len(NOT_FOUND)))]), NOT_FOUND)
        else:
            response = self.ws.accept(request)
        self.ws.send_response(response)
        self._flush()
        if response.status_code != 101:
            self.transport.close()
            return
        assert route is not None
        self.deflate = bool(self.ws.extensions)
        self.session = Session(self.app.state.ctx, self, route[0], route[1], self._client_ip(request))
        # The sans-I/O parser's generator frame keeps `request` alive as long as the
        # connection: its headers were 2.6 KB of every idle viewer (tracemalloc).
        request.headers.clear()
        if self.ping_interval > 0:
            _Keepalive.watch(self)
        self.session.opened()

    def _client_ip(self, request: Request) -> str:
        peer = self.transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) else "unknown"
        forwarded = request.headers.get("X-Forwarded-For")
        if forwarded and self.config.proxy_headers:
            # The same trust rule uvicorn applies to HTTP requests (FORWARDED_ALLOW_IPS).
            from uvicorn.middleware.proxy_headers import _TrustedHosts

            trusted = _TrustedHosts(self.config.forwarded_allow_ips)
            if host in trusted:
                return trusted.get_trusted_client_address(forwarded)[0] or host
        return host

    def _on_frame(self, frame: Frame) -> None:
        op = frame.opcode
        data = bytes(frame.data)
        if op is Opcode.TEXT or op is Opcode.BINARY:
            if frame.fin:
                self._on_message(data, op is Opcode.TEXT)
            else:
                self.frags, self.frags_text = [data], op is Opcode.TEXT
        elif op is Opcode.CONT:
            if self.frags is not None:
                self.frags.append(data)
                if frame.fin:
                    data, self.frags = b"".join(self.frags), None
                    self._on_message(data, self.frags_text)
        elif op is Opcode.PONG:
            self.awaiting_pong = False
        # PING is answered and CLOSE replied to by ServerProtocol; _flush sends them.

    def _on_message(self, data: bytes, text: bool) -> None:
        if self.session is None or self.close_timer is not None:
            # After our close frame nothing the client sends matters. (A message that
            # came in the same read as the client's own close frame is still handled.)
            return
        if not text:
            self.session.on_message(None)
            return
        try:
            decoded = data.decode()
        except UnicodeDecodeError:
            self.ws.fail(1007, "invalid UTF-8")
            return
        self.session.on_message(decoded)

    def keepalive(self) -> None:
        """Called every ping_interval: a client that did not answer the last ping is gone."""
        if self.closed or self.ws.state is not State.OPEN:
            return
        if self.awaiting_pong:
            self.ws.fail(1011, "keepalive ping timeout")
            self._flush()
            return
        self.awaiting_pong = True
        self.ws.send_ping(os.urandom(4))
        self._flush()


class _Keepalive:
    """One timer per process pings every socket, instead of a timer per socket
    (a TimerHandle and its heap entry were 0.55 KB of every idle viewer)."""

    sockets: ClassVar[set[SocketProtocol]] = set()
    task: asyncio.Task[None] | None = None

    @classmethod
    def watch(cls, sock: SocketProtocol) -> None:
        task = cls.task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            cls.sockets = set()  # a new server (another event loop): start over
            cls.task = asyncio.ensure_future(cls._run(sock.ping_interval))
        cls.sockets.add(sock)

    @classmethod
    async def _run(cls, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            for sock in list(cls.sockets):
                sock.keepalive()


def socket_protocol(app: Starlette, config_ping_interval: float, max_size: int,
                    deflate: bool) -> type[SocketProtocol]:
    """The protocol class to pass to uvicorn as `ws=`, bound to this app."""

    class BoundSocketProtocol(SocketProtocol):
        __slots__ = ()

    BoundSocketProtocol.app = app
    BoundSocketProtocol.ping_interval = config_ping_interval
    BoundSocketProtocol.max_size = max_size
    BoundSocketProtocol.offer_deflate = deflate
    return BoundSocketProtocol
