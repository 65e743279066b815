"""Viewer load for bench.fanout: one process, one event loop, thousands of sockets.

Each viewer is a bare `asyncio.Protocol` around the `websockets` sans-I/O
`ClientProtocol`: no task, no `recv()` coroutine and no per-message queue per
connection, so one client process can keep up with far more frames than the
same number of `websockets.connect()` clients. It still speaks real
WebSocket (handshake, masking, pings, permessage-deflate when offered).

A process counts, for every viewer it holds:
- frames (WebSocket messages) and events (a `batch` frame counts as its events)
  received inside the measurement window [t0, t1);
- for every `chat.message` the host sent inside the window, the latency from
  the message's server `ts` and from the host's send time (carried in the text
  as `bench <i> <send_ms>`) to the moment the bytes were read here. Same
  machine, same clock.
- its own CPU time and event-loop lag in the window, so the report can tell
  when the client, not the server, was the limit.

Driven by bench.fanout over a multiprocessing pipe; see `worker_main`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import resource
import time
from array import array
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

import orjson
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

HELLO = orjson.dumps({"type": "hello", "token": None, "resume_from": None})
HELLO_NO_BATCH = orjson.dumps({"type": "hello", "token": None, "resume_from": None, "batch": False})


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Stats:
    """Counters shared by every viewer of this process (one loop, no locks)."""

    def __init__(self) -> None:
        self.t0 = float("inf")  # window, wall clock seconds
        self.t1 = float("inf")
        self.frames = 0
        self.events = 0
        self.bytes = 0
        self.types: Counter[str] = Counter()
        self.lat_ts = array("d")  # ms, server ts -> read here
        self.lat_host = array("d")  # ms, host send -> read here
        self.chat_seen = 0  # chat.message events of in-window sends (any time)
        self.lost = 0  # viewers whose socket closed after the welcome
        self.close_codes: Counter[int] = Counter()
        self.batch = True  # say batch:false in hello when not


# The host's chat text is "bench <i> <send_ms>"; JSON never leaves that unescaped.
BENCH_TEXT = re.compile(rb'"text": ?"bench \d+ ([0-9.]+)"')


class Viewer(asyncio.Protocol):
    """One viewer. Until the handshake is done, websockets' sans-I/O client does
    everything. Then, unless permessage-deflate was negotiated, frames are read
    here (`_read_frames`: server frames are unmasked and unfragmented, so this is
    a few slices), because the client must be cheaper per event than the server
    it measures. `sample` viewers (1 in --sample) parse every frame's JSON for
    latency and event types; the rest count events and chat from the raw bytes,
    exactly: `"type":` occurs once per event and never inside a JSON string."""

    __slots__ = ("buf", "closed", "fast", "pre", "proto", "sample", "st", "transport", "welcomed")

    def __init__(self, st: Stats, uri: Any, deflate: bool, welcomed: asyncio.Future[None],
                 sample: bool = True) -> None:
        self.st = st
        self.proto = ClientProtocol(uri, max_size=2**22,
                                    extensions=enable_client_permessage_deflate(None) if deflate else None)
        self.welcomed = welcomed
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.sample = sample
        self.fast = False
        self.pre = bytearray()  # bytes before the end of the handshake response
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.proto.send_request(self.proto.connect())
        self._flush()

    def _flush(self) -> None:
        out = self.proto.data_to_send()
        if out and self.transport is not None:
            data = b"".join(out)
            if data:
                self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.fast:
            self._read_frames(data)
            return
        if self.proto.state is State.CONNECTING:
            self.pre += data
            end = self.pre.find(b"\r\n\r\n")
            if end < 0:
                return
            head, rest = bytes(self.pre[:end + 4]), bytes(self.pre[end + 4:])
            self.pre = bytearray()
            self._via_proto(head)
            if self.proto.state is State.OPEN and not self.proto.extensions:
                self.fast = True
                self._read_frames(rest)
            elif rest:
                self._via_proto(rest)
            return
        self._via_proto(data)

    def _arrived(self, n: int) -> tuple[float, bool]:
        """Now, and whether it is inside the window (then n bytes are counted)."""
        now = time.time()
        st = self.st
        in_window = st.t0 <= now < st.t1
        if in_window:
            st.bytes += n
        return now, in_window

    def _read_frames(self, data: bytes) -> None:
        now, in_window = self._arrived(len(data))
        if self.buf:
            self.buf += data
            data = bytes(self.buf)
            self.buf = bytearray()
        # Counted in place (start/end offsets, no slices): this loop runs for every frame.
        pos, n = 0, len(data)
        while n - pos >= 2:
            b0, length = data[pos], data[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length, head = int.from_bytes(data[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, head = int.from_bytes(data[pos + 2:pos + 10], "big"), 10
            start, end = pos + head, pos + head + length
            if end > n:
                break
            pos = end
            opcode = b0 & 0x0F
            if opcode == 1:
                if not self.welcomed.done():
                    self.welcomed.set_result(None)
                elif self.sample:
                    self._on_text(data[start:end], now, in_window)
                else:
                    self._count(data, start, end, in_window)
            elif opcode == 9:
                self.proto.send_pong(data[start:end])
                self._flush()
            elif opcode == 8:
                self._on_close(data[start:end])
                if self.transport is not None:
                    self.transport.close()
                return
        if pos < n:
            self.buf += data[pos:]

    def _count(self, data: bytes, start: int, end: int, in_window: bool) -> None:
        st = self.st
        if in_window:
            st.frames += 1
            st.events += data.count(b'"type":', start, end) - data.startswith(b'{"type":"batch"', start)
        if data.find(b'"chat.message"', start, end) >= 0:
            t0_ms, t1_ms = st.t0 * 1000, st.t1 * 1000
            for m in BENCH_TEXT.finditer(data, start, end):
                if t0_ms <= float(m.group(1)) < t1_ms:
                    st.chat_seen += 1

    def _via_proto(self, data: bytes) -> None:
        now, in_window = self._arrived(len(data))
        proto = self.proto
        proto.receive_data(data)
        for ev in proto.events_received():
            if type(ev) is Frame:
                if ev.opcode is Opcode.TEXT:
                    if not self.welcomed.done():
                        self.welcomed.set_result(None)  # the first frame is the welcome
                    else:
                        self._on_text(ev.data, now, in_window)
                elif ev.opcode is Opcode.CLOSE:
                    self._on_close(ev.data)
            elif isinstance(ev, Response):
                if proto.state is State.OPEN:
                    proto.send_text(HELLO if self.st.batch else HELLO_NO_BATCH)
                elif not self.welcomed.done():
                    self.welcomed.set_exception(ConnectionError(f"handshake refused: {ev.status_code}"))
        self._flush()

    def _on_text(self, data: bytes | bytearray | memoryview, now: float, in_window: bool) -> None:
        st = self.st
        frame = orjson.loads(data)
        type_ = frame.get("type")
        if type_ == "batch":
            events = frame["events"]
            if in_window:
                st.frames += 1
                st.events += len(events)
                st.types["batch"] += 1
            for event in events:
                etype = event.get("type")
                if in_window:
                    st.types[etype] += 1
                if etype == "chat.message":
                    self._on_chat(event, now)
        else:
            if in_window:
                st.frames += 1
                st.events += 1
                st.types[type_] += 1
            if type_ == "chat.message":
                self._on_chat(frame, now)

    def _on_chat(self, event: dict[str, Any], now: float) -> None:
        st = self.st
        message = event["message"]
        parts = message["text"].split()
        if len(parts) != 3 or parts[0] != "bench":
            return
        sent_ms = float(parts[2])
        if not st.t0 * 1000 <= sent_ms < st.t1 * 1000:
            return
        now_ms = now * 1000
        st.chat_seen += 1
        st.lat_ts.append(now_ms - message["ts"])
        st.lat_host.append(now_ms - sent_ms)

    def _on_close(self, payload: bytes | bytearray | memoryview) -> None:
        code = int.from_bytes(bytes(payload[:2]), "big") if len(payload) >= 2 else 1005
        self.st.close_codes[code] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed and self.welcomed.done() and not self.welcomed.exception():
            self.st.lost += 1
        self.closed = True
        if not self.welcomed.done():
            self.welcomed.set_exception(ConnectionError(f"connection lost: {exc}"))

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Worker:
    def __init__(self, pipe: Connection, cfg: dict[str, Any]) -> None:
        self.pipe = pipe
        self.cfg = cfg
        self.st = Stats()
        self.st.batch = cfg.get("batch", True)
        self.viewers: list[Viewer] = []
        self.lags = array("d")
        self.cpu0 = self.cpu1 = 0.0
        self.wall0 = self.wall1 = 0.0

    async def recv(self) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.pipe.recv)

    async def connect_all(self) -> tuple[int, int, float]:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        uri = parse_uri(cfg["url"])
        sem = asyncio.Semaphore(cfg["concurrency"])
        src_ips: list[str] = cfg["src_ips"]
        per_ip = max(1, cfg["per_ip"])
        started = time.monotonic()
        failures: Counter[str] = Counter()

        deadline = started + cfg.get("connect_timeout", 300.0)

        async def one(i: int) -> bool:
            async with sem:
                for attempt in range(4):
                    if time.monotonic() > deadline:
                        failures["gave up: --connect-timeout reached"] += 1
                        return False
                    fut: asyncio.Future[None] = loop.create_future()
                    viewer = Viewer(self.st, uri, cfg["deflate"], fut, i % cfg.get("sample", 1) == 0)
                    try:
                        await loop.create_connection(
                            lambda v=viewer: v, uri.host, uri.port,  # type: ignore[misc]
                            local_addr=(src_ips[(i // per_ip) % len(src_ips)], 0))
                        await asyncio.wait_for(fut, 20)
                        self.viewers.append(viewer)
                        return True
                    except Exception as exc:
                        failures[type(exc).__name__ + ": " + str(exc)[:80]] += 1
                        viewer.abort()
                        with contextlib.suppress(BaseException):
                            fut.exception() if fut.done() else fut.cancel()
                        await asyncio.sleep(0.2 * (attempt + 1))
                return False

        results = await asyncio.gather(*[one(i) for i in range(cfg["n"])])
        self.failures = dict(failures.most_common(5))
        ok = sum(results)
        return ok, len(results) - ok, time.monotonic() - started

    async def lag_monitor(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.05)
            lag = loop.time() - t - 0.05
            now = time.time()
            if self.st.t0 <= now < self.st.t1:
                self.lags.append(lag * 1000)

    def mark(self, which: int) -> None:
        if which == 0:
            self.cpu0, self.wall0 = time.process_time(), time.monotonic()
        else:
            self.cpu1, self.wall1 = time.process_time(), time.monotonic()

    def report(self) -> dict[str, Any]:
        st = self.st
        lags = sorted(self.lags)
        wall = max(1e-9, self.wall1 - self.wall0)
        open_ = sum(1 for v in self.viewers if not v.closed)
        return {
            "pid": os.getpid(), "frames": st.frames, "events": st.events, "bytes": st.bytes,
            "types": dict(st.types), "chat_seen": st.chat_seen, "lost": st.lost,
            "close_codes": dict(st.close_codes), "open": open_,
            "lat_ts": st.lat_ts.tobytes(), "lat_host": st.lat_host.tobytes(),
            "cpu_pct": 100 * (self.cpu1 - self.cpu0) / wall,
            "lag_p99_ms": lags[int(0.99 * (len(lags) - 1))] if lags else 0.0,
            "lag_max_ms": lags[-1] if lags else 0.0,
        }

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.pipe.send(("ready", raise_nofile()))
        monitor = asyncio.ensure_future(self.lag_monitor())
        try:
            while True:
                cmd = await self.recv()
                if cmd[0] == "connect":
                    ok, failed, secs = await self.connect_all()
                    gc.collect()
                    gc.freeze()  # the viewers live until the end: keep them out of GC passes
                    self.pipe.send(("connected", ok, failed, secs, self.failures))
                elif cmd[0] == "window":
                    # Each window counts from zero (the --find-max mode runs several).
                    st = self.st
                    st.frames = st.events = st.bytes = st.chat_seen = 0
                    st.types.clear()
                    st.lat_ts, st.lat_host, self.lags = array("d"), array("d"), array("d")
                    st.t0, st.t1 = cmd[1], cmd[2]
                    loop.call_later(max(0.0, cmd[1] - time.time()), self.mark, 0)
                    loop.call_later(max(0.0, cmd[2] - time.time()), self.mark, 1)
                    self.pipe.send(("ok",))
                elif cmd[0] == "report":
                    self.pipe.send(("report", self.report()))
                elif cmd[0] == "close":
                    for v in self.viewers:
                        v.abort()
                    await asyncio.sleep(0.1)
                    self.pipe.send(("closed",))
                    return
        finally:
            monitor.cancel()


def worker_main(pipe: Connection, cfg: dict[str, Any]) -> None:
    """Entry point of one client process (multiprocessing, spawn)."""
    import uvloop

    gc.set_threshold(100_000, 50, 100)
    if cfg.get("nice"):
        os.nice(cfg["nice"])
    uvloop.run(Worker(pipe, cfg).run())
