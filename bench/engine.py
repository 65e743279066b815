"""Claim throughput of the reservation engine, against its own baselines.

    python -m bench.engine                      # 64 concurrent claimers, 4 s per phase
    python -m bench.engine --clients 128 --seconds 3 --json reports/engine.json

Starts its own embedded Redis (valkey) and PostgreSQL, then measures, in one
run and on one hot deal (the flash-sale case: every claim hits one key slot):

(a) raw: the bare `lc_claim` function via FCALL from N redis-py asyncio
    clients (one connection each), no engine code: the baseline for (b);
    and the same with each client pipelining 32 FCALLs per round trip, to
    show what Redis itself takes on one hot deal (redis-benchmark -P style);
(b) engine: `DealEngine.claim` from N concurrent tasks, micro-batching off,
    window 0 (adaptive: same event-loop pass, grows while Redis is busy) and
    a fixed 1 ms window;
(c) HTTP: `POST /api/v1/shows/{show}/deals/{deal}/claims` with a bearer token
    and an Idempotency-Key through a `livecore serve` subprocess, N keep-alive
    connections (a minimal HTTP/1.1 client, so the load generator is cheap),
    for windows 1 ms, 0 and off;
(d) naive PostgreSQL: the textbook reservation, `SELECT … FOR UPDATE` on the
    deal row, per-user check, UPDATE, INSERT hold, COMMIT, on N connections.

Every phase does the same work per claim: a new hold for a user below the
per-user limit on a deal that never sells out during the run (1,000,000
units), with an idempotency key. Latency is per claim, as the caller sees it.
The load generator runs in this process, so the CPU columns say who was busy:
`client` is this process, `server` is Redis (a, b), Redis + the server
process (c) or PostgreSQL (d), in % of one core.

The embedded PostgreSQL runs with fsync off and Redis without persistence:
both are throwaway servers, which flatters (d) more than anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil
from redis.asyncio import Redis

from livecore.auth import TokenService
from livecore.db import migrate
from livecore.deals import DealEngine, fingerprint, reservation_id
from livecore.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from livecore.ids import new_id, now_ms
from livecore.models import DealIn
from livecore.services import Services
from livecore.settings import Settings

SECRET = "bench-engine-secret-0123456789abcdef"
PREFIX = "bench"
UNITS = 1_000_000
PER_USER = 1000  # each worker is one user until it has claimed this many, then the next
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    phase: str
    claims: int
    seconds: float
    p50_ms: float
    p99_ms: float
    client_cpu: float
    server_cpu: float
    errors: int

    @property
    def rate(self) -> float:
        return self.claims / self.seconds if self.seconds else 0.0


class CpuMeter:
    """CPU used by this process and by the server processes, over a phase."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = [psutil.Process(p) for p in pids]
        self.wall = time.perf_counter()
        self.me = time.process_time()
        self.them = self._server_cpu()

    def _server_cpu(self) -> float:
        total = 0.0
        for p in self.procs:
            for proc in [p, *p.children(recursive=True)]:
                try:
                    t = proc.cpu_times()
                except psutil.NoSuchProcess:
                    continue
                total += t.user + t.system
        return total

    def done(self) -> tuple[float, float]:
        wall = time.perf_counter() - self.wall
        return (100 * (time.process_time() - self.me) / wall,
                100 * (self._server_cpu() - self.them) / wall)


# (worker, n) -> ok?, or one ok per claim when a call makes several
Worker = Callable[[int, int], Awaitable[bool]] | Callable[[int, int], Awaitable[list[bool]]]


async def drive(phase: str, clients: int, seconds: float, pids: list[int],
                claim: Worker, per_call: int = 1) -> Result:
    """N workers claim in a loop until the deadline; each claim is timed (a
    pipelined claim takes as long as its pipeline)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal errors
        n = 0
        lat = latencies[w]
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            ok = await claim(w, n)
            oks = ok if isinstance(ok, list) else [ok]
            lat.extend([time.perf_counter() - t0] * per_call)
            errors += oks.count(False)
            n += 1

    meter = CpuMeter(pids)
    start = time.perf_counter()
    await asyncio.gather(*[worker(w) for w in range(clients)])
    elapsed = time.perf_counter() - start
    client_cpu, server_cpu = meter.done()
    flat = sorted(x for lat in latencies for x in lat)
    q = statistics.quantiles(flat, n=100) if len(flat) > 1 else [0.0] * 99
    return Result(phase, len(flat), elapsed, q[49] * 1000, q[98] * 1000, client_cpu, server_cpu,
                  errors)


def user_of(w: int, n: int) -> str:
    return f"w{w}-{n // PER_USER}"


async def new_deal(svc: Services) -> tuple[str, str]:
    """A show and a product with stock for one deal of UNITS units; returns (show, deal)."""
    product_id, show_id = new_id("p"), new_id("s")
    await svc.pool.execute(
        "INSERT INTO products (id, sku, name, price_cents, currency, stock, created_at)"
        " VALUES ($1,$1,'Bench',900,'EUR',$2,$3)", product_id, UNITS, now_ms())
    await svc.pool.execute("INSERT INTO shows (id, title, status, created_at) VALUES ($1,'b','live',$2)",
                           show_id, now_ms())
    deal = await svc.deals.launch(show_id, DealIn(product_id=product_id, price_cents=900, quantity=UNITS,
                                                  duration_s=3600, per_user_limit=PER_USER,
                                                  hold_ttl_s=3600))
    return show_id, deal["id"]


async def check_books(svc: Services, deal_id: str, held: int) -> None:
    """The bench must not measure a broken engine: every claim it counted as
    a success is exactly one unit out of `remaining`."""
    remaining = int(await svc.redis.hget(svc.keys.deal(deal_id, "state"), "remaining") or -1)
    if remaining != UNITS - held:
        raise SystemExit(f"books do not balance on {deal_id}: remaining={remaining}, held={held}")


# ---- (a) raw FCALL --------------------------------------------------------------

async def phase_raw(svc: Services, redis_url: str, clients: int, seconds: float,
                    pids: list[int], pipeline: int = 1) -> Result:
    _show_id, deal_id = await new_deal(svc)
    keys = svc.keys.deal_keys(deal_id)
    fp = fingerprint(deal_id, 1)
    conns = [Redis.from_url(redis_url, decode_responses=True, max_connections=1)
             for _ in range(clients)]
    ok_count = 0

    def args(w: int, n: int) -> list[object]:
        user = user_of(w, n)
        return [*keys, user, 1, reservation_id(deal_id), f"{user}:k{n}", fp]

    async def claim(w: int, n: int) -> bool:
        nonlocal ok_count
        res = await conns[w].fcall("lc_claim", len(keys), *args(w, n))
        ok = res[0] == "ok"
        ok_count += ok
        return bool(ok)

    async def claim_pipelined(w: int, n: int) -> list[bool]:
        nonlocal ok_count
        pipe = conns[w].pipeline(transaction=False)
        for i in range(pipeline):
            pipe.fcall("lc_claim", len(keys), *args(w, n * pipeline + i))
        oks = [r[0] == "ok" for r in await pipe.execute()]
        ok_count += sum(oks)
        return oks

    try:
        await asyncio.gather(*[c.ping() for c in conns])  # connect before the clock starts
        if pipeline == 1:
            result = await drive(f"(a) raw FCALL lc_claim, {clients} redis-py clients", clients,
                                 seconds, pids, claim)
        else:
            result = await drive(f"(a) raw FCALL lc_claim, {clients} clients, pipelined x{pipeline}",
                                 clients, seconds, pids, claim_pipelined, per_call=pipeline)
    finally:
        await asyncio.gather(*[c.aclose() for c in conns])
    await check_books(svc, deal_id, ok_count)
    return result


# ---- (b) engine -----------------------------------------------------------------

def window_label(window_ms: float) -> str:
    return "off" if window_ms < 0 else f"{window_ms:g} ms"


async def phase_engine(svc: Services, window_ms: float, clients: int, seconds: float,
                       pids: list[int]) -> Result:
    engine = DealEngine(svc.pool, svc.redis, svc.fns, svc.keys, svc.bus, claim_window_ms=window_ms)
    show_id, deal_id = await new_deal(svc)
    ok_count = 0

    async def claim(w: int, n: int) -> bool:
        nonlocal ok_count
        user = user_of(w, n)
        try:
            await engine.claim(show_id, deal_id, user, 1, f"k{n}")
        except Exception:
            return False
        ok_count += 1
        return True

    await engine.claim(show_id, deal_id, "warm-up", 1)  # the static-field cache, like a warm node
    result = await drive(f"(b) DealEngine.claim, window {window_label(window_ms)}", clients,
                         seconds, pids, claim)
    await check_books(svc, deal_id, ok_count + 1)
    return result


# ---- (c) HTTP through livecore serve --------------------------------------------

class HttpConn:
    """One keep-alive HTTP/1.1 connection: just enough client for this bench
    (httpx costs ~1 ms of CPU per request, more than the server does)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> HttpConn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def post(self, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(f"POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-length: 0\r\n{head}\r\n"
                          .encode())
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        return int(status_line.split()[1]), body

    def close(self) -> None:
        self.writer.close()


def start_server(redis_url: str, database_url: str, window_ms: float) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECORE_")}
    env.update(LIVECORE_REDIS_URL=redis_url, LIVECORE_DATABASE_URL=database_url,
               LIVECORE_SECRET=SECRET, LIVECORE_REDIS_PREFIX=PREFIX, LIVECORE_LOG_LEVEL="warning",
               LIVECORE_CLAIM_BATCH_WINDOW_MS=str(window_ms))
    proc = subprocess.Popen([sys.executable, "-m", "livecore.cli", "serve", "--port", str(port)],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"livecore serve exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc, port
        except Exception:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("livecore serve did not become ready")


async def phase_http(svc: Services, redis_url: str, database_url: str, window_ms: float,
                     clients: int, seconds: float, redis_pid: int) -> Result:
    proc, port = start_server(redis_url, database_url, window_ms)
    try:
        show_id, deal_id = await new_deal(svc)
        tokens = TokenService(SECRET)
        minted: dict[str, str] = {}

        def token(user: str) -> str:
            if user not in minted:
                minted[user] = tokens.mint(sub=user, name=user, role="viewer", show=show_id,
                                           ttl_s=3600)[0]
            return minted[user]

        conns = await asyncio.gather(*[HttpConn.open(port) for _ in range(clients)])
        path = f"/api/v1/shows/{show_id}/deals/{deal_id}/claims"
        for w in range(clients):
            token(user_of(w, 0))
        # Warm the node (static-field cache, PG pool) like a node that has run a while.
        status, body = await conns[0].post(path, {"authorization": f"Bearer {token('warm-up')}",
                                                  "idempotency-key": "warm-up"})
        if status != 201:
            raise SystemExit(f"warm-up claim failed: {status} {body[:300]!r}")
        ok_count = 1

        async def claim(w: int, n: int) -> bool:
            nonlocal ok_count
            status, _ = await conns[w].post(path, {"authorization": f"Bearer {token(user_of(w, n))}",
                                                   "idempotency-key": f"k{n}"})
            ok_count += status == 201
            return status == 201

        try:
            result = await drive(f"(c) HTTP claims via livecore serve, window {window_label(window_ms)}",
                                 clients, seconds, [redis_pid, proc.pid], claim)
        finally:
            for c in conns:
                c.close()
        await check_books(svc, deal_id, ok_count)
        return result
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


# ---- (d) naive PostgreSQL -------------------------------------------------------

NAIVE_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS bench_naive;
CREATE TABLE IF NOT EXISTS bench_naive.deals (
    id text PRIMARY KEY, remaining integer NOT NULL CHECK (remaining >= 0),
    per_user_limit integer NOT NULL);
CREATE TABLE IF NOT EXISTS bench_naive.holds (
    id text PRIMARY KEY, deal_id text NOT NULL, user_id text NOT NULL, qty integer NOT NULL,
    expires_at bigint NOT NULL, idem_key text NOT NULL, UNIQUE (deal_id, user_id, idem_key));
CREATE INDEX IF NOT EXISTS holds_user ON bench_naive.holds (deal_id, user_id);
"""


async def phase_pg(svc: Services, database_url: str, clients: int, seconds: float,
                   pg_pid: int) -> Result:
    import asyncpg

    pool = await asyncpg.create_pool(database_url, min_size=clients, max_size=clients)
    assert pool is not None
    await pool.execute(NAIVE_SCHEMA)
    deal_id = new_id("nd")
    await pool.execute("INSERT INTO bench_naive.deals VALUES ($1, $2, $3)", deal_id, UNITS, PER_USER)

    async def claim(w: int, n: int) -> bool:
        user = user_of(w, n)
        async with pool.acquire() as conn, conn.transaction():
            # The hot row lock: every buyer of the deal queues here.
            deal = await conn.fetchrow(
                "SELECT remaining, per_user_limit FROM bench_naive.deals WHERE id=$1 FOR UPDATE", deal_id)
            used = await conn.fetchval(
                "SELECT coalesce(sum(qty), 0) FROM bench_naive.holds WHERE deal_id=$1 AND user_id=$2",
                deal_id, user)
            if deal["remaining"] < 1 or used + 1 > deal["per_user_limit"]:
                return False
            await conn.execute("UPDATE bench_naive.deals SET remaining = remaining - 1 WHERE id=$1", deal_id)
            await conn.execute("INSERT INTO bench_naive.holds VALUES ($1,$2,$3,1,$4,$5)",
                               reservation_id(deal_id), deal_id, user, now_ms() + 120_000, f"k{n}")
        return True

    try:
        return await drive(f"(d) naive PostgreSQL SELECT … FOR UPDATE, {clients} connections",
                           clients, seconds, [pg_pid], claim)
    finally:
        await pool.close()


# ---- main -----------------------------------------------------------------------

def table(results: list[Result]) -> str:
    lines = ["| phase | claims/s | p50 ms | p99 ms | claims | client CPU % | server CPU % |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.phase} | {r.rate:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.claims:,}"
                     f" | {r.client_cpu:.0f} | {r.server_cpu:.0f} |")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> list[Result]:
    redis, pg = EmbeddedRedis().start(), EmbeddedPostgres().start()
    try:
        await migrate(pg.url)
        assert redis.proc is not None and pg.proc is not None
        settings = Settings(redis_url=redis.url, database_url=pg.url, secret=SECRET,
                            redis_prefix=PREFIX)
        svc = await Services.create(settings)
        n, s = args.clients, args.seconds
        results: list[Result] = []
        try:
            results.append(await phase_raw(svc, redis.url, n, s, [redis.proc.pid]))
            results.append(await phase_raw(svc, redis.url, n, s, [redis.proc.pid], pipeline=32))
            for window in (0.0, 1.0, -1.0):
                results.append(await phase_engine(svc, window, n, s, [redis.proc.pid]))
            for window in (0.0, 1.0, -1.0):
                results.append(await phase_http(svc, redis.url, pg.url, window, n, s, redis.proc.pid))
            results.append(await phase_pg(svc, pg.url, n, s, pg.proc.pid))
        finally:
            await svc.aclose()
        return results
    finally:
        redis.stop()
        pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64, help="concurrent claimers per phase")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per phase")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not 1 <= args.clients <= 250:
        parser.error("--clients must be 1-250 (PostgreSQL allows 300 connections)")
    started = time.perf_counter()
    load = os.getloadavg()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results = asyncio.run(run(args))
    by = {r.phase: r for r in results}
    raw = results[0]
    pg = results[-1]
    print(f"\n{os.cpu_count()} CPUs, load average before the run {load[0]:.2f}; "
          f"{args.clients} concurrent claimers, {args.seconds:g} s per phase\n")
    print(table(results))
    print()
    for window in ("0 ms", "1 ms", "off"):
        engine = by[f"(b) DealEngine.claim, window {window}"]
        print(f"engine/raw = {engine.rate / raw.rate:.2f}   (window {window})")
    for kind, name in (("engine", "(b) DealEngine.claim"), ("HTTP", "(c) HTTP claims via livecore serve")):
        zero, one, off = (by[f"{name}, window {w}"].rate for w in ("0 ms", "1 ms", "off"))
        print(f"{kind}: window 0 / off = {zero / off:.2f}, window 1 ms / off = {one / off:.2f}")
    for window in ("0 ms", "1 ms"):
        http = by[f"(c) HTTP claims via livecore serve, window {window}"]
        print(f"HTTP/PG = {http.rate / pg.rate:.2f}   (HTTP window {window} vs naive PostgreSQL)")
    print(f"\ntotal run time {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) | {"claims_per_s": r.rate} for r in results],
                                        indent=2))


if __name__ == "__main__":
    main()
