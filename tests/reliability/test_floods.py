"""Connection floods against a dedicated node with small limits.

- per process: LIVECORE_MAX_CONNECTIONS sockets, counted from accept (a
  socket still waiting for its hello counts), the next one is closed 1013;
- per client IP: LIVECORE_MAX_CONNECTIONS_PER_IP, closed 1013 (the IP is the
  proxy-forwarded one when uvicorn trusts the proxy: tests stand in for many
  clients with X-Forwarded-For from 127.0.0.1, which uvicorn trusts by default);
- slow handshakes: no hello within LIVECORE_HELLO_TIMEOUT_S closes 4408 and
  frees the slot; junk before hello beyond the frame burst closes 4429;
- slowloris: HTTP headers sent a byte at a time (or never) get 408 and the
  connection is closed once the header deadline passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest_asyncio
import websockets

from livecore.settings import Settings
from tests.reliability.helpers import (
    LogCursor,
    close_code_of,
    crash_lines,
    hello,
    make_show,
    node_env,
    nodes,
    ws_connect,
)
from tests.support import Backends, ServerProc, mint

MAX_CONNECTIONS = 12
MAX_PER_IP = 5
HELLO_TIMEOUT_S = 2
HEADER_TIMEOUT_DEFAULT_S: float = Settings.model_fields["header_timeout_s"].default
HEADER_TIMEOUT_S = 2  # LIVECORE_HEADER_TIMEOUT_S on this node


@dataclass
class Slowloris:
    """Raw HTTP connections that trickle (or never send) their headers."""

    port: int
    results: dict[str, Any] = field(default_factory=dict)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for name, trickle in (("byte-by-byte", True), ("silent", False)):
            t = threading.Thread(target=self._run, args=(name, trickle), daemon=True)
            t.start()
            self.threads.append(t)

    def _run(self, name: str, trickle: bool) -> None:
        started = time.monotonic()
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=0.2)
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000 + b"\r\n\r\n"
        answer, sent = b"", 0
        try:
            while time.monotonic() - started < HEADER_TIMEOUT_S + 20:
                if trickle and sent < len(request) - 4:  # never completes the headers
                    try:
                        sock.send(request[sent:sent + 1])
                        sent += 1
                    except OSError:
                        break
                try:
                    chunk = sock.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                answer += chunk
        finally:
            sock.close()
        self.results[name] = {"closed_after_s": round(time.monotonic() - started, 1),
                              "status": answer.split(b"\r\n", 1)[0].decode(errors="replace"), "sent": sent}

    def wait(self) -> dict[str, Any]:
        for t in self.threads:
            t.join(HEADER_TIMEOUT_S + 30)
        return self.results


@dataclass
class Flood:
    node: ServerProc
    show_id: str
    slowloris: Slowloris
    cursor: LogCursor


@pytest_asyncio.fixture(scope="module")
async def flood(backends: Backends, prefix: str) -> AsyncIterator[Flood]:
    env = node_env(backends.redis_url, backends.database_url, prefix,
                   LIVECORE_MAX_CONNECTIONS=str(MAX_CONNECTIONS), LIVECORE_MAX_CONNECTIONS_PER_IP=str(MAX_PER_IP),
                   LIVECORE_HELLO_TIMEOUT_S=str(HELLO_TIMEOUT_S), LIVECORE_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
                   LIVECORE_LOG_LEVEL="info")
    async with nodes(env) as (node,):
        slow = Slowloris(node.port)
        slow.start()  # runs alongside the other tests of this module
        async with httpx.AsyncClient(base_url=node.base_url, timeout=30) as client:
            show_id, _ = await make_show(client)
        yield Flood(node, show_id, slow, LogCursor(node))


async def open_viewer(f: Flood, ip: str, *, say_hello: bool = True) -> tuple[websockets.ClientConnection, Any]:
    """A socket from `ip`; returns it with the welcome, or with the close code if refused."""
    conn = await ws_connect(f.node.ws_url("viewer", f.show_id), additional_headers={"X-Forwarded-For": ip})
    if not say_hello:
        return conn, None
    try:
        await conn.send(hello(mint("viewer", f.show_id)))
        frame = orjson.loads(await asyncio.wait_for(conn.recv(), 15))
        return conn, frame["type"]
    except websockets.ConnectionClosed:
        return conn, conn.close_code


async def eventually_accepted(f: Flood, ip: str, timeout: float = 15) -> websockets.ClientConnection:
    """Slots free up when the server has seen the close; poll until one does."""
    deadline = time.monotonic() + timeout
    while True:
        conn, outcome = await open_viewer(f, ip)
        if outcome == "welcome":
            return conn
        assert outcome == 1013, outcome
        assert time.monotonic() < deadline, "a freed slot never became available"
        await asyncio.sleep(0.1)


async def close_all(conns: list[websockets.ClientConnection]) -> None:
    for c in conns:
        with contextlib.suppress(Exception):
            await c.close()


async def test_per_ip_limit(flood: Flood) -> None:
    mine = [await eventually_accepted(flood, "10.9.0.1") for _ in range(MAX_PER_IP)]
    extra, outcome = await open_viewer(flood, "10.9.0.1")
    assert outcome == 1013 and extra.close_reason == "too many connections from your address"
    # another address is not affected
    other, outcome = await open_viewer(flood, "10.9.0.2")
    assert outcome == "welcome"
    # the refused socket did not take a slot; a closed one gives its slot back
    await mine.pop().close()
    mine.append(await eventually_accepted(flood, "10.9.0.1"))
    # sockets that have not said hello count too
    await close_all([*mine, other])
    silent = []
    for _ in range(MAX_PER_IP):
        conn, _ = await open_viewer(flood, "10.9.0.3", say_hello=False)
        silent.append(conn)
    await asyncio.sleep(0.3)
    _, outcome = await open_viewer(flood, "10.9.0.3")
    assert outcome == 1013
    # ... until the hello timeout closes them (4408) and frees the address
    codes = await asyncio.gather(*[close_code_of(c) for c in silent])
    assert codes == [4408] * MAX_PER_IP
    back = await eventually_accepted(flood, "10.9.0.3")
    await close_all([back])


async def test_process_limit(flood: Flood) -> None:
    conns = [await eventually_accepted(flood, f"10.8.{i}.1") for i in range(MAX_CONNECTIONS)]
    refused, outcome = await open_viewer(flood, "10.8.200.1")
    assert outcome == 1013 and refused.close_reason == "server full, try another node"
    # the connected ones are untouched by the refusals
    for c in conns:
        await c.send('{"type":"ping","id":"p"}')
        while orjson.loads(await asyncio.wait_for(c.recv(), 15))["type"] != "pong":
            pass
    await conns.pop().close()
    conns.append(await eventually_accepted(flood, "10.8.201.1"))
    await close_all(conns)


async def test_slow_handshakes_and_junk_before_hello(flood: Flood) -> None:
    # a crowd of sockets that never say hello: each is closed 4408, none stays
    silent = [(await open_viewer(flood, f"10.7.{i}.1", say_hello=False))[0] for i in range(MAX_CONNECTIONS)]
    # 4408 is only ever sent by the hello deadline; wait_for is a hang guard.
    codes = await asyncio.wait_for(asyncio.gather(*[close_code_of(c) for c in silent]),
                                   HELLO_TIMEOUT_S + 30)
    assert codes == [4408] * MAX_CONNECTIONS
    # junk before hello: error frames up to the frame burst, then 4429
    conn = await eventually_accepted_silent(flood, "10.7.200.1")
    with contextlib.suppress(websockets.ConnectionClosed):
        for _ in range(200):
            await conn.send("junk")
    assert await close_code_of(conn) == 4429
    # and the node still welcomes a polite client
    polite = await eventually_accepted(flood, "10.7.201.1")
    await polite.close()


async def eventually_accepted_silent(f: Flood, ip: str) -> websockets.ClientConnection:
    conn = await eventually_accepted(f, ip)  # proves a slot is free
    await conn.close()
    conn, _ = await open_viewer(f, ip, say_hello=False)
    return conn


async def test_slowloris_headers_are_cut_off(flood: Flood) -> None:
    async with httpx.AsyncClient(base_url=flood.node.base_url, timeout=15) as client:
        # while the slow connections hang on, everybody else is served
        assert (await client.get("/readyz")).status_code == 200
    results = await asyncio.to_thread(flood.slowloris.wait)
    assert set(results) == {"byte-by-byte", "silent"}, results
    for name, r in results.items():
        assert r["status"] == "HTTP/1.1 408 Request Timeout", (name, r)
        # cut off by the configured deadline, not the compiled-in default (no
        # timing claim beyond that: the default is 5x the configured value)
        assert HEADER_TIMEOUT_S <= r["closed_after_s"] < HEADER_TIMEOUT_DEFAULT_S, (name, r)
    assert results["byte-by-byte"]["sent"] > 5
    assert crash_lines(flood.cursor.read()) == []


async def test_http_process_limit(backends: Backends, prefix: str) -> None:
    """HTTP has a per-process ceiling too: uvicorn's limit_concurrency, set to
    LIVECORE_MAX_CONNECTIONS + 1000 (sockets and HTTP share the process; HTTP
    gets that headroom over the socket limit). Connections beyond it get 503
    (uvicorn's own plain-text answer) and the process stays up."""
    env = node_env(backends.redis_url, backends.database_url, prefix, LIVECORE_MAX_CONNECTIONS="1",
                   LIVECORE_HEADER_TIMEOUT_S="120")
    limit = 1 + 1000
    async with nodes(env) as (node,):
        held: list[socket.socket] = []
        try:
            for _ in range(limit):  # connected, silent: each counts until the header deadline
                held.append(socket.create_connection(("127.0.0.1", node.port), timeout=15))
            statuses = []
            async with httpx.AsyncClient(base_url=node.base_url, timeout=15) as client:
                for _ in range(50):  # until the server has accepted every held connection
                    resp = await client.get("/healthz", headers={"connection": "close"})
                    statuses.append(resp.status_code)
                    if resp.status_code == 503:
                        break
                    await asyncio.sleep(0.2)
            assert statuses[-1] == 503, statuses
        finally:
            for s in held:
                s.close()
        async with httpx.AsyncClient(base_url=node.base_url, timeout=15) as client:
            for _ in range(50):  # the freed connections are counted out
                if (await client.get("/healthz")).status_code == 200:
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("the node never served again")
