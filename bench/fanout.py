"""Fanout benchmark: one show, N viewers, a host chatting, a live deal ticking.

    python -m bench.fanout                       # 2000 viewers, 20 s, LiveCore then naive
    python -m bench.fanout --viewers 10000
    python -m bench.fanout --viewers 19000 --servers livecore --duration 10
    make bench-fanout ARGS="--viewers 10000 --json reports/fanout.json"

What runs, all on this machine:
- embedded Redis (valkey) and PostgreSQL, migrated (as `livecore up` does);
- the server under test in its own process: `livecore serve` (LiveCore), then
  `python -m bench.naive_server` (a plain Starlette loop of `await send_text`)
  under the same uvicorn settings;
- `--procs` client processes (bench/fanout_client.py), each one event loop
  holding N/procs real WebSocket viewers (anonymous, `hello` with no token);
- in this process, the host: a WebSocket on the host endpoint that sends
  `chat.send` at `--chat-rate` messages/s for `--duration` s. For LiveCore it
  first pins a product, launches a deal (so `deal.tick` flows at 1/s) and
  starts the show; the naive server ticks on its own timer.

What is measured, in the window [t0, t0 + duration):
- delivered frames/s and events/s (a `batch` frame counts as its events),
  summed over all viewers, and the share of the host's chat messages that
  reached every viewer (after a drain of up to `--max-drain` s);
- latency of every `chat.message` the host sent in the window, at 1 viewer
  in --sample (default 10; every viewer still counts its events and chat): the event's
  server `ts` -> the viewer process reading it (and host send -> viewer read);
- server CPU (% of one core, psutil on the server pid) and CPU µs per
  delivered event; Redis+PostgreSQL CPU separately (LiveCore only uses them);
- server RSS before viewers, after N idle viewers (RSS/conn = delta / N) and
  the peak during traffic;
- each client process's CPU and event-loop lag, and the machine's total CPU,
  so the table can say when the clients, not the server, were the limit.

The server and the clients share this machine's cores: on a small machine the
clients' CPU competes with the server's. The notes under the table say so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from array import array
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

from bench.fanout_client import raise_nofile, worker_main

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ results


@dataclass
class Result:
    server: str
    viewers: int
    connected: int = 0
    connect_failed: int = 0
    connect_s: float = 0.0
    duration_s: float = 0.0
    chats_sent: int = 0
    frames_s: float = 0.0
    events_s: float = 0.0
    expected_events_s: float = 0.0
    wire_mb_s: float = 0.0
    chat_delivered_pct: float = 0.0
    lat_p50_ms: float = 0.0
    lat_p99_ms: float = 0.0
    lat_max_ms: float = 0.0
    host_lat_p50_ms: float = 0.0
    host_lat_p99_ms: float = 0.0
    host_lat_max_ms: float = 0.0
    ack_p50_ms: float = 0.0
    ack_p99_ms: float = 0.0
    server_cpu_pct: float = 0.0
    cpu_us_per_event: float = 0.0
    backend_cpu_pct: float = 0.0
    rss_base_mb: float = 0.0
    rss_idle_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_per_conn_kb: float = 0.0
    client_cpu_pct: list[float] = field(default_factory=list)
    client_lag_p99_ms: float = 0.0
    client_lag_max_ms: float = 0.0
    machine_cpu_pct: float = 0.0
    other_cpu_pct: float = 0.0
    lost_after_welcome: int = 0
    close_codes: dict[str, int] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    chat_rate: float = 0.0
    steps: list[dict[str, float]] = field(default_factory=list)


def pct(sorted_values: list[float] | array[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return float(sorted_values[min(len(sorted_values) - 1, int(q * (len(sorted_values) - 1) + 0.5))])


# ------------------------------------------------------------------ servers


class ServerUnderTest:
    name = ""
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def viewer_url(self) -> str:
        raise NotImplementedError

    async def setup_host(self) -> Any:
        raise NotImplementedError

    async def extra_host(self) -> Any:
        """Another host socket on the same show (--hosts)."""
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class LiveCoreServer(ServerUnderTest):
    name = "livecore"

    def __init__(self, redis_url: str, database_url: str) -> None:
        from livecore.embedded import free_port
        from tests.support import ServerProc, server_env

        self.port = free_port()
        # The host's frame budget (20/s x 5) would cap --find-max's chat rate.
        env = server_env(redis_url, database_url, f"bench{uuid.uuid4().hex[:6]}",
                         LIVECORE_LOG_LEVEL="warning", LIVECORE_FRAME_RATE_PER_S="1000")
        self.sp = ServerProc(self.port, env).start(timeout=60)
        assert self.sp.proc is not None and self.sp.log_path is not None
        self.proc, self.log_path = self.sp.proc, self.sp.log_path
        self.show_id = ""

    def viewer_url(self) -> str:
        return self.sp.ws_url("viewer", self.show_id)

    async def setup_host(self) -> Any:
        from tests.support import WS, create_show, mint

        async with httpx.AsyncClient(base_url=self.sp.base_url, timeout=30) as http:
            self.show_id, product_id = await create_show(http, stock=10_000)
        host = await WS.open(self.sp.ws_url("host", self.show_id), mint("host", self.show_id, "host", "Host"))
        for type_, fields in (("product.pin", {"product_id": product_id}),
                              ("deal.launch", {"product_id": product_id, "price_cents": 500,
                                               "quantity": 1000, "duration_s": 3600}),
                              ("show.start", {})):
            reply = await host.request(type_, **fields)
            if reply.get("type") != "ack":
                raise RuntimeError(f"{type_} failed: {reply}")
        return host

    async def extra_host(self) -> Any:
        from tests.support import WS, mint

        return await WS.open(self.sp.ws_url("host", self.show_id), mint("host", self.show_id, "host", "Host"))


class NaiveServer(ServerUnderTest):
    name = "naive"

    def __init__(self) -> None:
        from livecore.embedded import free_port

        self.port = free_port()
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"livecore-naive-{self.port}.log"
        log = open(self.log_path, "wb")  # lives as long as the process
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.naive_server", "--port", str(self.port)],
                                     stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"naive server exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("naive server not ready")

    def viewer_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/viewer/naive"

    async def setup_host(self) -> Any:
        from tests.support import WS

        return await WS.open(f"ws://127.0.0.1:{self.port}/ws/host/naive", None)

    async def extra_host(self) -> Any:
        return await self.setup_host()


# ------------------------------------------------------------------ clients


class Clients:
    """The client processes and the pipes that drive them."""

    def __init__(self, n_procs: int, viewers: int, url: str, deflate: bool, concurrency: int,
                 connect_timeout: float, sample: int = 1, batch: bool = True, nice: int = 0) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        base = random.randint(2, 250)
        for k in range(n_procs):
            n = viewers // n_procs + (1 if k < viewers % n_procs else 0)
            # Own loopback source addresses per process and run: 28k ephemeral ports each.
            cfg = {"url": url, "n": n, "deflate": deflate, "concurrency": concurrency,
                   "connect_timeout": connect_timeout, "sample": sample, "batch": batch, "nice": nice,
                   "src_ips": [f"127.{base}.{k + 1}.{j}" for j in range(1, 9)], "per_ip": 15_000}
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, cfg), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    async def ask(self, msg: tuple[Any, ...] | None, timeout: float = 300) -> list[Any]:
        loop = asyncio.get_running_loop()
        if msg is not None:
            for pipe in self.pipes:
                pipe.send(msg)

        async def one(pipe: Connection) -> Any:
            ready = await loop.run_in_executor(None, pipe.poll, timeout)
            if not ready:
                raise TimeoutError(f"client process did not answer {msg}")
            return pipe.recv()

        return list(await asyncio.gather(*[one(p) for p in self.pipes]))

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()


# ------------------------------------------------------------------ one run


def _cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def _backend_procs(backend_pids: list[int]) -> list[psutil.Process]:
    out = []
    for pid in backend_pids:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            out.append(p)
            out.extend(p.children(recursive=True))
    return out


async def wait_quiet(max_wait: float, busy_pct: float = 30.0) -> float:
    """On a shared machine, wait (bounded) until other work leaves the cores alone.
    Returns the machine's CPU % (of all cores) over the last second."""
    deadline = time.monotonic() + max_wait
    calm = 0
    loop = asyncio.get_running_loop()
    while True:
        busy = await loop.run_in_executor(None, psutil.cpu_percent, 1.0)
        calm = calm + 1 if busy < busy_pct else 0
        if calm >= 3 or time.monotonic() >= deadline:
            return float(busy)


async def run_one(kind: str, args: argparse.Namespace, backends: dict[str, Any]) -> Result:
    res = Result(server=kind, viewers=args.viewers)
    if args.wait_quiet > 0:
        busy = await wait_quiet(args.wait_quiet)
        print(f"   machine CPU before the run: {busy:.0f}% of all cores", flush=True)
    print(f"\n== {kind}: {args.viewers} viewers, {args.chat_rate:g} chat/s, {args.duration:g} s ==", flush=True)
    server: ServerUnderTest = (LiveCoreServer(backends["redis_url"], backends["database_url"])
                               if kind == "livecore" else NaiveServer())
    sp = psutil.Process(server.proc.pid)
    print(f"   server pid {server.proc.pid}, port {server.port}, log {server.log_path}", flush=True)
    clients: Clients | None = None
    hosts: list[Any] = []
    drains: list[asyncio.Task[None]] = []
    try:
        hosts.append(await server.setup_host())
        for _ in range(args.hosts - 1):
            hosts.append(await server.extra_host())
        acks: dict[str, float] = {}
        sent_at: dict[str, float] = {}

        async def drain_host(host: Any) -> None:
            while True:
                raw = await host.conn.recv()
                now = time.time()
                frame = orjson.loads(raw)
                if frame.get("type") == "ack" and frame.get("re") in sent_at:
                    acks[frame["re"]] = (now - sent_at[frame["re"]]) * 1000

        drains = [asyncio.ensure_future(drain_host(h)) for h in hosts]
        clients = Clients(args.procs, args.viewers, server.viewer_url(), not args.no_deflate, args.concurrency,
                          args.connect_timeout, args.sample, not args.no_batch, args.client_nice)
        await clients.ask(None, 60)  # ready
        await asyncio.sleep(1)
        rss_base = sp.memory_info().rss
        replies = await clients.ask(("connect",), args.connect_timeout + 120)
        res.connected = sum(r[1] for r in replies)
        res.connect_failed = sum(r[2] for r in replies)
        res.connect_s = max(r[3] for r in replies)
        failures = [r[4] for r in replies if r[4]]
        print(f"   connected {res.connected}/{args.viewers} in {res.connect_s:.1f}s"
              + (f"; failures {failures}" if failures else ""), flush=True)
        if res.connected == 0:
            raise RuntimeError(f"no viewer connected; server log: {server.log_path}")
        await asyncio.sleep(args.settle)
        rss_idle = sp.memory_info().rss
        res.rss_base_mb, res.rss_idle_mb = rss_base / 2**20, rss_idle / 2**20
        res.rss_per_conn_kb = (rss_idle - rss_base) / max(1, res.connected) / 1024
        base = res

        async def window(rate: float, tag: str) -> Result:
            res = replace(base, chat_rate=rate)
            # ---- traffic window
            t0 = time.time() + 0.5
            t1 = t0 + args.duration
            await clients.ask(("window", t0, t1), 30)
            backend = _backend_procs(backends["pids"]) if kind == "livecore" else []
            await asyncio.sleep(max(0.0, t0 - time.time()))
            me = psutil.Process()
            cpu0, bcpu0, mcpu0, wall0 = _cpu_s([sp]), _cpu_s(backend), _cpu_s([me]), time.monotonic()
            psutil.cpu_percent(None)
            peak = sp.memory_info().rss

            async def sample() -> None:
                nonlocal peak
                while True:
                    await asyncio.sleep(0.5)
                    peak = max(peak, sp.memory_info().rss)

            sampler = asyncio.ensure_future(sample())
            i = 0
            while True:
                at = t0 + i / rate
                if at >= t1:
                    break
                await asyncio.sleep(max(0.0, at - time.time()))
                now = time.time()
                rid = f"{tag}c{i}"
                sent_at[rid] = now
                await hosts[i % len(hosts)].send({"type": "chat.send", "id": rid, "text": f"bench {i} {now * 1000:.3f}"})
                i += 1
            await asyncio.sleep(max(0.0, t1 - time.time()))
            cpu1, bcpu1, mcpu1, wall1 = _cpu_s([sp]), _cpu_s(backend), _cpu_s([me]), time.monotonic()
            res.machine_cpu_pct = psutil.cpu_percent(None) * psutil.cpu_count()
            sampler.cancel()
            res.chats_sent = i
            res.duration_s = wall1 - wall0
            res.server_cpu_pct = 100 * (cpu1 - cpu0) / res.duration_s
            res.backend_cpu_pct = 100 * (bcpu1 - bcpu0) / res.duration_s
            res.rss_peak_mb = max(peak, sp.memory_info().rss) / 2**20

            # ---- drain: wait (bounded) for the in-window chat to reach everyone
            want = res.connected * res.chats_sent
            deadline = time.monotonic() + args.max_drain
            await asyncio.sleep(1.0)
            reports = [r[1] for r in await clients.ask(("report",))]
            while sum(r["chat_seen"] for r in reports) < want and time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                reports = [r[1] for r in await clients.ask(("report",))]

            res.frames_s = sum(r["frames"] for r in reports) / args.duration
            res.events_s = sum(r["events"] for r in reports) / args.duration
            res.wire_mb_s = sum(r["bytes"] for r in reports) / args.duration / 2**20
            res.expected_events_s = res.connected * (res.chats_sent / args.duration + 1.0)
            res.chat_delivered_pct = 100 * sum(r["chat_seen"] for r in reports) / max(1, want)
            lat_ts: array[float] = array("d")
            lat_host: array[float] = array("d")
            for r in reports:
                lat_ts.frombytes(r["lat_ts"])
                lat_host.frombytes(r["lat_host"])
            s_ts, s_host = sorted(lat_ts), sorted(lat_host)
            res.lat_p50_ms, res.lat_p99_ms, res.lat_max_ms = pct(s_ts, 0.5), pct(s_ts, 0.99), (s_ts[-1] if s_ts else float("nan"))
            res.host_lat_p50_ms, res.host_lat_p99_ms = pct(s_host, 0.5), pct(s_host, 0.99)
            res.host_lat_max_ms = s_host[-1] if s_host else float("nan")
            s_ack = sorted(v for k, v in acks.items() if k.startswith(tag))
            res.ack_p50_ms, res.ack_p99_ms = pct(s_ack, 0.5), pct(s_ack, 0.99)
            res.cpu_us_per_event = 1e6 * (cpu1 - cpu0) / max(1, sum(r["events"] for r in reports))
            res.client_cpu_pct = [round(r["cpu_pct"], 1) for r in reports]
            # Whatever else ran on the machine meanwhile (other jobs distort every number).
            res.other_cpu_pct = max(0.0, res.machine_cpu_pct - res.server_cpu_pct - res.backend_cpu_pct
                                    - sum(res.client_cpu_pct) - 100 * (mcpu1 - mcpu0) / res.duration_s)
            res.client_lag_p99_ms = max(r["lag_p99_ms"] for r in reports)
            res.client_lag_max_ms = max(r["lag_max_ms"] for r in reports)
            res.lost_after_welcome = sum(r["lost"] for r in reports)
            codes: dict[str, int] = {}
            types: dict[str, int] = {}
            for r in reports:
                for c, n in r["close_codes"].items():
                    codes[str(c)] = codes.get(str(c), 0) + n
                for t, n in r["types"].items():
                    types[str(t)] = types.get(str(t), 0) + n
            res.close_codes, res.types = codes, types
            res.notes = diagnose(res)
            print(f"   {res.events_s:,.0f} events/s ({res.frames_s:,.0f} frames/s), chat delivered "
                  f"{res.chat_delivered_pct:.1f}%, latency p50 {res.lat_p50_ms:.1f} / p99 {res.lat_p99_ms:.1f} "
                  f"/ max {res.lat_max_ms:.0f} ms, server CPU {res.server_cpu_pct:.0f}%, "
                  f"clients CPU {res.client_cpu_pct}", flush=True)
            return res

        if not args.find_max:
            res = await window(args.chat_rate, "")
        else:
            # Raise the chat rate (x2 a step) until the window delivers under 95 % of what is
            # offered: the last window's events/s is the most this server delivered.
            rate, steps = args.chat_rate, []
            while True:
                step = await window(rate, f"r{rate:g}-")
                steps.append(step)
                kept_up = step.events_s >= 0.95 * step.expected_events_s
                print(f"   find-max: {rate:g} chat/s -> {step.events_s:,.0f} events/s of "
                      f"{step.expected_events_s:,.0f} offered ({'kept up' if kept_up else 'saturated'})",
                      flush=True)
                if not kept_up or rate >= args.max_rate:
                    break
                rate *= 2
                await asyncio.sleep(2)
            res = max(steps, key=lambda r: r.events_s)
            res.steps = [{"chat_rate": r.chat_rate, "events_s": round(r.events_s),
                          "expected_events_s": round(r.expected_events_s),
                          "lat_p99_ms": round(r.lat_p99_ms, 1), "server_cpu_pct": round(r.server_cpu_pct),
                          "cpu_us_per_event": round(r.cpu_us_per_event, 1),
                          "other_cpu_pct": round(r.other_cpu_pct)} for r in steps]
        await clients.ask(("close",), 60)
        return res
    finally:
        for task in drains:
            task.cancel()
        for host in hosts:
            with contextlib.suppress(Exception):
                await host.close()
        if clients is not None:
            clients.stop()
        server.stop()


def diagnose(r: Result) -> list[str]:
    notes = []
    busiest = max(r.client_cpu_pct) if r.client_cpu_pct else 0.0
    if busiest >= 85:
        notes.append(f"client-bound: a client process used {busiest:.0f}% of a core; "
                     "frames/s and latency are lower bounds for the server")
    elif r.client_lag_p99_ms >= 20:
        notes.append(f"client loop lag p99 {r.client_lag_p99_ms:.0f} ms: part of the latency is the client's")
    cores = psutil.cpu_count() or 1
    if r.machine_cpu_pct >= 0.9 * 100 * cores:
        notes.append(f"machine saturated: {r.machine_cpu_pct:.0f}% of {cores * 100}% "
                     "(server, clients, Redis and PostgreSQL share the cores)")
    if r.other_cpu_pct >= 20:
        notes.append(f"other processes on the machine used {r.other_cpu_pct:.0f}% of a core during the "
                     "window: the numbers are disturbed")
    if r.server_cpu_pct >= 90:
        notes.append(f"server-bound: the server process used {r.server_cpu_pct:.0f}% of its one core")
    if r.chat_delivered_pct < 99.9:
        notes.append(f"only {r.chat_delivered_pct:.1f}% of the window's chat reached the viewers "
                     "before the drain ended (server backlog or closed sockets)")
    if r.connect_failed:
        notes.append(f"{r.connect_failed} viewers failed to connect")
    if r.lost_after_welcome:
        notes.append(f"{r.lost_after_welcome} viewers were disconnected during the run "
                     f"(close codes {r.close_codes})")
    return notes


# ------------------------------------------------------------------ report


def fmt(v: float, digits: int = 1) -> str:
    return "n/a" if v != v else f"{v:,.{digits}f}"


def table(results: list[Result]) -> str:
    lines = [
        "| server | viewers | delivered events/s (frames/s) | expected | chat delivered | "
        "latency p50 / p99 / max ms | host→viewer p50 / p99 ms | server CPU | CPU µs/event | "
        "RSS idle → peak MB | RSS/conn KB | Redis+PG CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.server} | {r.connected:,} | {r.events_s:,.0f} ({r.frames_s:,.0f}) | {r.expected_events_s:,.0f} "
            f"| {r.chat_delivered_pct:.1f}% | {fmt(r.lat_p50_ms)} / {fmt(r.lat_p99_ms)} / {fmt(r.lat_max_ms, 0)} "
            f"| {fmt(r.host_lat_p50_ms)} / {fmt(r.host_lat_p99_ms)} | {r.server_cpu_pct:.0f}% "
            f"| {r.cpu_us_per_event:.1f} | {r.rss_idle_mb:.0f} → {r.rss_peak_mb:.0f} | {r.rss_per_conn_kb:.1f} "
            f"| {r.backend_cpu_pct:.0f}% |")
    lines += ["", "| server | client procs CPU (each, % of a core) | client loop lag p99 / max ms | "
              "machine CPU (of 100%×cores) | other processes' CPU | host chat.send ack p50 / p99 ms | "
              "connect time s | wire MB/s |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.server} | {', '.join(f'{c:.0f}%' for c in r.client_cpu_pct)} "
                     f"| {r.client_lag_p99_ms:.0f} / {r.client_lag_max_ms:.0f} | {r.machine_cpu_pct:.0f}% "
                     f"| {r.other_cpu_pct:.0f}% | {fmt(r.ack_p50_ms, 0)} / {fmt(r.ack_p99_ms, 0)} "
                     f"| {r.connect_s:.1f} | {r.wire_mb_s:.2f} |")
    return "\n".join(lines)


def steps_table(results: list[Result]) -> str:
    lines = ["| server | chat msg/s | offered events/s | delivered events/s | latency p99 ms | server CPU "
             "| CPU µs/event | other CPU |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        for st in r.steps:
            lines.append(f"| {r.server} | {st['chat_rate']:g} | {st['expected_events_s']:,.0f} "
                         f"| {st['events_s']:,.0f} | {fmt(st['lat_p99_ms'])} | {st['server_cpu_pct']:.0f}% "
                         f"| {st['cpu_us_per_event']:.1f} | {st['other_cpu_pct']:.0f}% |")
    return "\n".join(lines)


def ratios(results: list[Result]) -> str:
    by = {r.server: r for r in results}
    if "livecore" not in by or "naive" not in by:
        return ""
    lc, nv = by["livecore"], by["naive"]

    def ratio(a: float, b: float) -> str:
        return "n/a" if not b or a != a or b != b else f"{a / b:.2f}×"

    return ("LiveCore / naive: delivered events/s " + ratio(lc.events_s, nv.events_s)
            + ", latency p50 " + ratio(lc.lat_p50_ms, nv.lat_p50_ms)
            + ", p99 " + ratio(lc.lat_p99_ms, nv.lat_p99_ms)
            + ", server CPU µs/event " + ratio(lc.cpu_us_per_event, nv.cpu_us_per_event)
            + ", RSS/conn " + ratio(lc.rss_per_conn_kb, nv.rss_per_conn_kb))


# ------------------------------------------------------------------ main


async def amain(args: argparse.Namespace) -> list[Result]:
    from livecore.db import migrate
    from livecore.embedded import EmbeddedPostgres, EmbeddedRedis

    owned: list[Any] = []
    results: list[Result] = []
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    try:
        backends: dict[str, Any] = {"pids": []}
        if "livecore" in servers:
            redis, pg = EmbeddedRedis().start(), EmbeddedPostgres().start()
            owned += [redis, pg]
            await migrate(pg.url)
            backends.update(redis_url=redis.url, database_url=pg.url,
                            pids=[redis.proc.pid, pg.proc.pid] if redis.proc and pg.proc else [])
        for kind in servers:
            results.append(await run_one(kind, args, backends))
    finally:
        for server in reversed(owned):
            with contextlib.suppress(Exception):
                server.stop()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=20.0, help="measurement window, seconds")
    parser.add_argument("--chat-rate", type=float, default=5.0, help="host chat messages per second")
    parser.add_argument("--procs", type=int, default=max(2, os.cpu_count() or 2),
                        help="client processes (default: number of cores, at least 2)")
    parser.add_argument("--servers", default="livecore,naive", help="comma list: livecore, naive")
    parser.add_argument("--no-deflate", action="store_true",
                        help="clients don't offer permessage-deflate (browsers do; default offers it)")
    parser.add_argument("--concurrency", type=int, default=200, help="connects in flight per client process")
    parser.add_argument("--connect-timeout", type=float, default=300.0, metavar="S",
                        help="stop opening viewers after S s and measure those that got in")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds idle before measuring RSS")
    parser.add_argument("--max-drain", type=float, default=15.0, help="max seconds to wait for late chat")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                        help="before each server's run, wait up to S s for the machine to be idle "
                             "(shared machines); 0 = don't wait")
    parser.add_argument("--hosts", type=int, default=1,
                        help="host sockets sending the chat, round robin (one host's commands run one after "
                             "another, so at high rates one socket caps the rate)")
    parser.add_argument("--find-max", action="store_true",
                        help="after connecting, run windows at --chat-rate, then x2 each step, until a "
                             "window delivers under 95%% of the offered events: reports each server's maximum")
    parser.add_argument("--max-rate", type=float, default=640.0, help="--find-max stops at this chat rate")
    parser.add_argument("--no-batch", action="store_true",
                        help="viewers say batch:false: one frame per event (compares frames/s like with like)")
    parser.add_argument("--client-nice", type=int, default=0, metavar="N",
                        help="run the client processes at nice N: when the machine saturates, the server "
                             "under test keeps its core, as it would with the clients on other machines")
    parser.add_argument("--sample", type=int, default=10, metavar="K",
                        help="1 viewer in K parses every frame (latency, event types); the others count "
                             "events and chat from the raw bytes, so the clients stay cheaper than the server")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    limit = raise_nofile()
    per_proc = -(-args.viewers // args.procs)
    if args.viewers + 200 > limit or per_proc + 200 > limit:
        raise SystemExit(f"error: open-file limit is {limit}; the server needs {args.viewers + 200} "
                         f"(raise `ulimit -Hn` or use fewer viewers)")
    started = time.monotonic()
    results = asyncio.run(amain(args))
    print(f"\n## Fanout: {args.viewers} viewers, {args.chat_rate:g} chat msg/s"
          f"{' (find-max: raised until saturated)' if args.find_max else ''} + deal.tick 1/s, "
          f"{args.duration:g} s window, {args.hosts} host socket(s), {args.procs} client processes, "
          f"permessage-deflate {'off' if args.no_deflate else 'offered'}, "
          f"batch frames {'off (batch:false)' if args.no_batch else 'on'}, "
          f"clients at nice {args.client_nice}, "
          f"{psutil.cpu_count()} cores\n")
    print(table(results))
    if args.find_max:
        print("\n" + steps_table(results))
    line = ratios(results)
    if line:
        print("\n" + line)
    for r in results:
        for note in r.notes:
            print(f"- {r.server}: {note}")
    print(f"\n(total {time.monotonic() - started:.0f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "results": [asdict(r) for r in results]}, indent=2))


if __name__ == "__main__":
    main()
