"""Helpers of the reliability suite: dedicated nodes and backends, raw sockets.

Everything here is real: `livecore serve` processes, valkey and PostgreSQL
servers, TCP sockets. Tests that break a backend (restart Redis, stop
PostgreSQL) get backends of their own; the session's shared backends are
never disturbed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets

from livecore.embedded import EmbeddedPostgres, _pg_bin, _pg_user, _wait_port, free_port
from tests.support import ADMIN, ServerProc, server_env
from tests.support import fresh_database as support_fresh_database

AUTH = {"authorization": f"Bearer {ADMIN}"}
# Lines a node writes only when something went wrong that is our bug.
CRASH_MARKERS = ("unhandled error", "Exception in ASGI application", "command failed", "socket session failed",
                 "Traceback")
JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")


# ---- nodes ----------------------------------------------------------------------

def node_env(redis_url: str, database_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = server_env(redis_url, database_url, prefix, **extra)
    env.setdefault("LIVECORE_WS_PING_INTERVAL_S", "0")
    return env


async def start_nodes(*envs: dict[str, str]) -> list[ServerProc]:
    """Start `livecore serve` processes in parallel (each blocks until /readyz is 200)."""
    procs = [ServerProc(free_port(), env) for env in envs]
    started = await asyncio.gather(*[asyncio.to_thread(p.start, 60) for p in procs],
                                   return_exceptions=True)
    failed = [s for s in started if isinstance(s, BaseException)]
    if failed:
        for p in procs:
            p.kill()
        raise failed[0]
    return procs


@contextlib.asynccontextmanager
async def nodes(*envs: dict[str, str]) -> AsyncIterator[list[ServerProc]]:
    procs = await start_nodes(*envs)
    try:
        yield procs
    finally:
        await asyncio.gather(*[asyncio.to_thread(p.stop) for p in procs])


class LogCursor:
    """Reads what a node logged since the cursor was made (or last read)."""

    def __init__(self, node: ServerProc) -> None:
        assert node.log_path is not None
        self.path = node.log_path
        self.offset = self.path.stat().st_size

    def read(self) -> str:
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        self.offset += len(data)
        return data.decode("utf-8", "replace")


def crash_lines(text: str) -> list[str]:
    return [line[:400] for line in text.splitlines() if any(m in line for m in CRASH_MARKERS)]


# ---- databases --------------------------------------------------------------------

async def fresh_database(any_dsn: str) -> str:
    """A new, migrated database for this suite (named so its leftovers are recognisable)."""
    return await support_fresh_database(any_dsn, "livecore_rel")


class RestartablePostgres(EmbeddedPostgres):
    """An embedded PostgreSQL that can be stopped and started again on the same
    port and data directory (EmbeddedPostgres.stop deletes its directory)."""

    def halt(self) -> None:
        """Fast shutdown (SIGINT): open transactions roll back, clients are cut off."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)
        self.proc = None

    def resume(self) -> None:
        args = [str(_pg_bin() / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-h", "127.0.0.1", "-k", str(self.dir), "-c", "max_connections=300",
                "-c", "shared_buffers=64MB"]
        if not self.durable:
            args += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "postgres.log", "ab"),
                                     user=_pg_user(), start_new_session=True)
        _wait_port("127.0.0.1", self.port, self.proc, 30, "postgres")
        self._wait_ready(_pg_bin())


# ---- HTTP -------------------------------------------------------------------------------

async def make_show(client: httpx.AsyncClient, *, stock: int = 100, price: int = 1000,
                    title: str = "Reliability show") -> tuple[str, str]:
    product = await client.post("/api/v1/products", headers=AUTH, json={
        "sku": f"REL-{uuid.uuid4().hex[:12]}", "name": "Reliability product", "price_cents": price,
        "currency": "USD", "image_url": "https://example.test/p.png", "stock": stock})
    assert product.status_code == 201, product.text
    show = await client.post("/api/v1/shows", headers=AUTH, json={"title": title})
    assert show.status_code == 201, show.text
    return show.json()["id"], product.json()["id"]


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"authorization": f"Bearer {token}"}


def assert_error_body(resp: httpx.Response) -> dict[str, Any]:
    """An error answer is `{"error": {"code": str, "message": str}}`, never a trace."""
    assert "Traceback" not in resp.text, resp.text[:500]
    assert resp.headers.get("content-type", "").startswith("application/json"), \
        (resp.status_code, resp.headers.get("content-type"), resp.text[:200])
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), resp.text[:300]
    err: dict[str, Any] = body["error"]
    assert isinstance(err.get("code"), str) and err["code"], resp.text[:300]
    assert isinstance(err.get("message"), str), resp.text[:300]
    return err


# ---- sockets ------------------------------------------------------------------------------

async def ws_connect(url: str, **kwargs: Any) -> websockets.ClientConnection:
    kwargs.setdefault("open_timeout", 20)
    kwargs.setdefault("ping_interval", None)
    kwargs.setdefault("max_size", 2**22)
    kwargs.setdefault("compression", None)
    kwargs.setdefault("proxy", None)
    return await websockets.connect(url, **kwargs)


async def close_code_of(conn: websockets.ClientConnection, timeout: float = 15) -> int:
    """Read until the server closes; returns its close code."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the server did not close the socket")
            await asyncio.wait_for(conn.recv(), left)
    code = conn.close_code
    if code is None:  # closed without a close frame
        return 1006
    return int(code)


def hello(token: str | None = None, resume_from: int | None = None, **extra: Any) -> str:
    return orjson.dumps({"type": "hello", "token": token, "resume_from": resume_from, **extra}).decode()


def raw_ws_handshake(port: int, path: str, headers: Iterable[str] = ()) -> socket.socket:
    """A WebSocket opened by hand, for frames no client library will send."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    key = base64.b64encode(os.urandom(16)).decode()
    extra = "".join(f"{h}\r\n" for h in headers)
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        response += chunk
    assert b" 101 " in response.split(b"\r\n", 1)[0], response[:200]
    return sock


def ws_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One masked client frame."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_close_code(sock: socket.socket, timeout: float = 15) -> int | None:
    """Read server frames until a close frame; returns its code (None: cut without one)."""
    sock.settimeout(timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        while len(buf) >= 2:
            opcode, n, start = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, start = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, start = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < start + n:
                break
            payload, buf = buf[start:start + n], buf[start + n:]
            if opcode == 0x8:
                return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, OSError):
            return None
        if not chunk:
            return None
        buf += chunk
    return None


def log_text(node: ServerProc) -> str:
    assert node.log_path is not None
    return Path(node.log_path).read_text(encoding="utf-8", errors="replace")
