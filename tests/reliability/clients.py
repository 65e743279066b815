"""A resumable socket client, as a real app would write one: it reads every
frame in the background, remembers the last `seq`, and when its node goes
away it reconnects to the next node with `resume_from`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import websockets

from tests.reliability.helpers import hello, ws_connect


class Gone(Exception):
    """The socket closed before the reply came."""


@dataclass
class Client:
    urls: list[str]  # preferred node first; failover goes down the list
    token: str | None
    name: str = ""
    batch: bool = True
    node: int = 0
    conn: websockets.ClientConnection | None = None
    last_seq: int = 0
    first_seq: int | None = None
    seqs: list[int] = field(default_factory=list)
    frames: list[dict[str, Any]] = field(default_factory=list)
    welcomes: list[dict[str, Any]] = field(default_factory=list)
    close_codes: list[int | None] = field(default_factory=list)
    reconnected_at: float | None = None
    keep_frames: bool = False
    auto_resume: bool = False  # fail over by itself when the socket drops
    _pending: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _reader: asyncio.Task[None] | None = None
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _closed: asyncio.Event = field(default_factory=asyncio.Event)
    _progress: asyncio.Event = field(default_factory=asyncio.Event)
    _resuming: asyncio.Task[dict[str, Any]] | None = None
    _closing: bool = False

    async def connect(self, node: int | None = None, *, resume: bool = False) -> dict[str, Any]:
        if node is not None:
            self.node = node
        conn = await ws_connect(self.urls[self.node])
        await conn.send(hello(self.token, self.last_seq if resume else None, batch=self.batch))
        welcome = orjson.loads(await asyncio.wait_for(conn.recv(), 30))
        assert welcome["type"] == "welcome", welcome
        self.welcomes.append(welcome)
        if self.first_seq is None:
            self.first_seq = welcome["seq"]
            self.last_seq = welcome["seq"]
        self.conn = conn
        self._closed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read(conn))
        return welcome

    async def _read(self, conn: websockets.ClientConnection) -> None:
        try:
            async for raw in conn:
                frame = orjson.loads(raw)
                for f in frame["events"] if frame.get("type") == "batch" else [frame]:
                    self._on_frame(f)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_codes.append(conn.close_code)
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(Gone(f"{self.name}: closed {conn.close_code}"))
            self._pending.clear()
            self._closed.set()
            if self.auto_resume and not self._closing and self.conn is conn:
                self._resuming = asyncio.ensure_future(self.failover())

    def _on_frame(self, f: dict[str, Any]) -> None:
        re = f.get("re")
        if re is not None and f.get("type") in ("ack", "error", "pong") and re in self._pending:
            fut = self._pending.pop(re)
            if not fut.done():
                fut.set_result(f)
            return
        seq = f.get("seq")
        if isinstance(seq, int):
            if seq > self.last_seq:
                self.seqs.append(seq)
                self.last_seq = seq
                self._progress.set()
            if self.keep_frames:
                self.frames.append(f)

    @property
    def open(self) -> bool:
        return self.conn is not None and not self._closed.is_set()

    async def wait_seq(self, seq: int, timeout: float = 20) -> None:
        """Until a stored event with this seq (or a later one) has arrived."""
        deadline = time.monotonic() + timeout
        while self.last_seq < seq:
            self._progress.clear()
            await asyncio.wait_for(self._progress.wait(), max(0.01, deadline - time.monotonic()))

    async def settle_on(self, node: int, timeout: float = 60) -> None:
        """Until this auto-resuming client is connected to urls[node]."""
        async with asyncio.timeout(timeout):
            while not (self.open and self.node == node):
                if self._resuming is not None and not self._resuming.done():
                    await self._resuming
                elif self.open:
                    await self._closed.wait()
                else:
                    await self.failover()

    async def wait_closed(self, timeout: float = 30) -> int | None:
        await asyncio.wait_for(self._closed.wait(), timeout)
        return self.close_codes[-1] if self.close_codes else None

    async def request(self, type_: str, timeout: float = 30, **fields: Any) -> dict[str, Any]:
        if not self.open:
            raise Gone(f"{self.name}: not connected")
        assert self.conn is not None
        rid = f"{self.name}-{next(self._ids)}"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await self.conn.send(orjson.dumps({"type": type_, "id": rid, **fields}).decode())
        except websockets.ConnectionClosed as exc:
            self._pending.pop(rid, None)
            raise Gone(str(exc)) from exc
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(rid, None)

    async def failover(self, *, deadline_s: float = 60) -> dict[str, Any]:
        """Reconnect to the next node with resume_from, with backoff, as a client should."""
        if self.conn is not None:
            await self._drop_socket()
        deadline = time.monotonic() + deadline_s
        delay = 0.05
        while True:
            self.node = (self.node + 1) % len(self.urls)
            try:
                welcome = await self.connect(resume=True)
                self.reconnected_at = time.monotonic()
                return welcome
            except (OSError, websockets.WebSocketException, TimeoutError, AssertionError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def call(self, type_: str, **fields: Any) -> dict[str, Any]:
        """request(), failing over and retrying while the socket keeps going away."""
        for _ in range(5):
            if self.open:
                try:
                    return await self.request(type_, **fields)
                except Gone:
                    await asyncio.sleep(0)  # let the reader notice and start resuming
            if self._resuming is not None and not self._resuming.done():
                await self._resuming
            elif not self.open:
                await self.failover()
        raise Gone(f"{self.name}: {type_} never answered")

    async def close(self) -> None:
        self._closing = True
        if self._resuming is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._resuming, 30)
        await self._drop_socket()

    async def _drop_socket(self) -> None:
        """Close the socket (if any) and let its reader task finish."""
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)


def gaps(seqs: list[int], first: int, last: int) -> list[int]:
    """Stored-event seqs missing from first+1..last."""
    have = set(seqs)
    return [s for s in range(first + 1, last + 1) if s not in have]
