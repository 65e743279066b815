"""Test support: real backends, real server processes, real socket clients."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import websockets

from livecore.auth import TokenService
from livecore.db import migrate

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-" + "x" * 32
TOKENS = TokenService(SECRET)


def mint(role: str, show: str, sub: str | None = None, name: str | None = None, ttl_s: int = 3600) -> str:
    sub = sub or f"{role}-{uuid.uuid4().hex[:8]}"
    token, _ = TOKENS.mint(sub=sub, name=name or sub, role=role, show=show, ttl_s=ttl_s)
    return token


ADMIN = mint("admin", "*", "admin", "Admin")


@dataclass
class ServerProc:
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, role: str, show: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/{role}/{show}"

    def start(self, timeout: float = 30) -> ServerProc:
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"livecore-test-{self.port}.log"
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "livecore.cli", "serve", "--port", str(self.port)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"server not ready: {self.log_path.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def server_env(redis_url: str, database_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECORE_")}
    env.update(LIVECORE_REDIS_URL=redis_url, LIVECORE_DATABASE_URL=database_url,
               LIVECORE_SECRET=SECRET, LIVECORE_REDIS_PREFIX=prefix, LIVECORE_LOG_LEVEL="warning",
               LIVECORE_SWEEP_INTERVAL_S="0.2")
    env.update(extra)
    return env


class WS:
    """A small protocol client over a real WebSocket."""

    def __init__(self, conn: websockets.ClientConnection) -> None:
        self.conn = conn
        self.events: list[dict[str, Any]] = []
        self.welcome: dict[str, Any] = {}
        self.seen: list[dict[str, Any]] = []  # every frame ever received, batches unpacked
        self.raw: list[dict[str, Any]] = []  # every frame as it came (batches whole)
        self._n = 0

    @classmethod
    async def open(cls, url: str, token: str | None = None, resume_from: int | None = None,
                   batch: bool = True, **hello: Any) -> WS:
        conn = await websockets.connect(url, max_size=2**22, open_timeout=10, ping_interval=None)
        client = cls(conn)
        await client.send({"type": "hello", "token": token, "resume_from": resume_from,
                           "batch": batch, **hello})
        client.welcome = await client.recv_frame()
        return client

    async def send(self, frame: dict[str, Any]) -> None:
        await self.conn.send(orjson.dumps(frame).decode())

    async def recv_frame(self, timeout: float = 10) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.conn.recv(), timeout)
        frame: dict[str, Any] = orjson.loads(raw)
        self.raw.append(frame)
        return frame

    async def recv(self, timeout: float = 10) -> dict[str, Any]:
        """Next frame, unpacking batches into self.events order."""
        while not self.events:
            frame = await self.recv_frame(timeout)
            frames = frame["events"] if frame.get("type") == "batch" else [frame]
            self.events.extend(frames)
            self.seen.extend(frames)
        return self.events.pop(0)

    async def wait_for(self, pred: Any, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("frame not received")
            frame = await self.recv(left)
            if (pred(frame) if callable(pred) else frame.get("type") == pred):
                return frame

    async def request(self, type_: str, timeout: float = 10, **fields: Any) -> dict[str, Any]:
        self._n += 1
        rid = f"r{self._n}"
        await self.send({"type": type_, "id": rid, **fields})
        return await self.wait_for(lambda f: f.get("re") == rid and f.get("type") in ("ack", "error", "pong"),
                                   timeout)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.conn.close()


async def fresh_database(any_dsn: str, prefix: str = "livecore_t") -> str:
    """A new, migrated database on the PostgreSQL server of `any_dsn`: no other test's
    server (and so no other webhook worker or sweeper) ever touches it."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(any_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, _ = any_dsn.rpartition("/")
    url = f"{base}/{name}"
    await migrate(url)
    return url


async def create_show(client: httpx.AsyncClient, *, stock: int = 100, price: int = 1000,
                      currency: str = "USD") -> tuple[str, str]:
    auth = {"authorization": f"Bearer {ADMIN}"}
    product = await client.post("/api/v1/products", headers=auth, json={
        "sku": f"SKU-{secrets.token_hex(6)}", "name": "Test product", "price_cents": price,
        "currency": currency, "image_url": "https://example.test/p.png", "stock": stock})
    assert product.status_code == 201, product.text
    show = await client.post("/api/v1/shows", headers=auth, json={"title": "Test show"})
    assert show.status_code == 201, show.text
    return show.json()["id"], product.json()["id"]


@dataclass
class Backends:
    redis_url: str
    database_url: str
    owned: list[Any] = field(default_factory=list)
