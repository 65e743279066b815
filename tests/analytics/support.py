"""Helpers of the analytics and webhook tests: a real HTTP receiver in a
thread, fresh databases, server processes with the right settings."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from livecore.embedded import free_port
from tests.support import ServerProc, server_env
from tests.support import fresh_database as support_fresh_database

HANG_GUARD_S = 30.0

# Fast retries and flushes for tests; the receiver listens on 127.0.0.1.
WEBHOOK_ENV = {
    "LIVECORE_WEBHOOK_ALLOW_PRIVATE": "true",
    "LIVECORE_WEBHOOK_POLL_INTERVAL_S": "0.1",
    "LIVECORE_WEBHOOK_BACKOFF_BASE_S": "0.2",
    "LIVECORE_WEBHOOK_BACKOFF_CAP_S": "0.5",
    "LIVECORE_WEBHOOK_TIMEOUT_S": "3",
    "LIVECORE_WEBHOOK_LEASE_MARGIN_S": "1",
    "LIVECORE_ANALYTICS_FLUSH_INTERVAL_S": "0.3",
}


async def eventually(check: Callable[[], Awaitable[bool]], what: str = "condition") -> None:
    """Wait for a background actor. The guard only turns a hang into a failure."""
    deadline = time.monotonic() + HANG_GUARD_S
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {HANG_GUARD_S}s")
        await asyncio.sleep(0.05)


async def fresh_database(any_dsn: str) -> str:
    """A new, migrated database for this suite (named so its leftovers are recognisable)."""
    return await support_fresh_database(any_dsn, "livecore_an")


def start_server(redis_url: str, database_url: str, **extra: str) -> ServerProc:
    # Nodes on one database form one cluster: they must share the Redis prefix.
    prefix = "lca" + hashlib.sha256(database_url.encode()).hexdigest()[:8]
    return ServerProc(free_port(), server_env(redis_url, database_url, prefix, **extra)).start()


def expected_signature(secret: str, timestamp: str, body: bytes) -> str:
    """Computed here from the documented recipe, not with livecore's helper."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body,
                                hashlib.sha256).hexdigest()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    signature_ok: bool
    answered: int | None = None  # status we answered with (None: hung / never answered)

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads(self.body)
        return data

    @property
    def event_id(self) -> str:
        return self.headers.get("x-livecore-event-id", "")


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1. Modes: ok (verify signature, 200 or
    400), fail (500), hang (hold the request until released, never 2xx)."""

    secret: str
    port: int = field(default_factory=free_port)
    mode: str = "ok"
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                ok = hmac.compare_digest(
                    expected_signature(receiver.secret, headers.get("x-livecore-timestamp", ""), body),
                    headers.get("x-livecore-signature", ""))
                item = Received(headers, body, ok)
                with receiver._lock:
                    receiver.received.append(item)
                mode = receiver.mode
                if mode == "hang":
                    receiver.release.wait(HANG_GUARD_S)
                    status = 503
                elif mode == "fail":
                    status = 500
                else:
                    status = 200 if ok else 400
                try:
                    self.send_response(status)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                    if mode != "hang":
                        item.answered = status
                except OSError:
                    pass  # the sender is gone (killed)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening: senders now get connection refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def items(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def delivered(self, event_type: str | None = None) -> list[Received]:
        return [r for r in self.items() if r.answered is not None and 200 <= r.answered < 300
                and (event_type is None or r.headers.get("x-livecore-event") == event_type)]


async def launch_server(procs: list[ServerProc], redis_url: str, database_url: str,
                        **extra: str) -> ServerProc:
    """Start a server process (in a thread, so several can boot at once); the
    `procs` fixture stops it whatever happens."""
    proc = await asyncio.to_thread(start_server, redis_url, database_url, **extra)
    procs.append(proc)
    return proc
