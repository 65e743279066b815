"""Webhooks: a durable outbox in PostgreSQL and a delivery worker.

Enqueueing. Triggers (migration 0002) call `livecore_enqueue_webhook()` in the
transaction that inserts an order, inserts or ends a deal, or moves a show
to live/ended. The event row and one delivery row per subscribed endpoint
commit with the change, or not at all: a crash between the order's commit
and the HTTP call loses nothing. `enqueue_webhook()` is the same function
for Python callers (custom events, tests).

Delivering. Every node may run a `WebhookWorker`. It claims due deliveries
with `SELECT … FOR UPDATE SKIP LOCKED` and pushes their `next_attempt_at`
forward by a lease in the same statement, then POSTs outside any
transaction. Success is final; a failure schedules the next attempt with
exponential backoff (and jitter) until `max_attempts`. A worker that dies
mid-attempt just lets its lease run out and another worker (or itself,
restarted) tries again. Delivery is therefore at least once: receivers
dedupe on the event id, which is the same on every attempt.

Signing. `X-LiveCore-Signature: sha256=<hex HMAC-SHA256(secret, "<ts>.<body>")>`
with `<ts>` = `X-LiveCore-Timestamp` (ms since the epoch, fresh per attempt).

SSRF. Only http(s) URLs without credentials are accepted. With
`LIVECORE_WEBHOOK_ALLOW_PRIVATE=false`, targets must resolve to public
addresses only, checked at registration (IP literals, localhost) and again
at every attempt, and the connection goes to the address that was checked
(no DNS rebinding between check and connect). Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import random
import secrets
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import orjson
from prometheus_client import Counter
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from livecore.errors import NotFound, ValidationFailed
from livecore.ids import new_id, now_ms

log = logging.getLogger("livecore.webhooks")

EVENTS = ("order.paid", "deal.started", "deal.ended", "show.started", "show.ended")
SIGNATURE_HEADER = "X-LiveCore-Signature"
TIMESTAMP_HEADER = "X-LiveCore-Timestamp"
EVENT_ID_HEADER = "X-LiveCore-Event-Id"
EVENT_TYPE_HEADER = "X-LiveCore-Event"
ATTEMPT_HEADER = "X-LiveCore-Attempt"
USER_AGENT = "LiveCore-Webhooks/1"
MAX_URL = 2048
RESPONSE_EXCERPT = 256
PRUNE_EVERY_S = 600
MAX_CLIENTS = 256
PRUNE_LOCK_ID = 7_340_012

ATTEMPTS = Counter("livecore_webhook_attempts_total", "Webhook delivery attempts", ["outcome"])


class WebhookSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIVECORE_WEBHOOK_", env_file=".env", extra="ignore")

    worker: bool = Field(True, description="Run the delivery worker on this node (any number of nodes may).")
    poll_interval_s: float = Field(0.5, gt=0, description="How often the worker looks for due deliveries.")
    concurrency: int = Field(16, ge=1, le=1000, description="Deliveries in flight per node.")
    timeout_s: float = Field(10.0, gt=0, description="Whole-attempt timeout (resolve, connect, send, response).")
    max_attempts: int = Field(15, ge=1, description="Attempts before a delivery is marked failed.")
    backoff_base_s: float = Field(2.0, gt=0, description="Delay after the first failure; doubles per attempt.")
    backoff_cap_s: float = Field(3600.0, gt=0, description="Longest delay between attempts.")
    allow_private: bool = Field(True, description="Allow targets on loopback, private and link-local addresses (on-prem receivers, local tests). Set false to accept public addresses only (SSRF guard) when admin tokens go to people who must not reach your internal network.")
    lease_margin_s: float = Field(5.0, gt=0, description="A claimed delivery is retried by any node once timeout + this margin has passed without a result (the claiming node died).")
    retention_days: float = Field(7.0, gt=0, description="Finished deliveries and their events are pruned after this.")

    @property
    def lease_ms(self) -> int:
        return int((self.timeout_s + self.lease_margin_s) * 1000)


# ---------------------------------------------------------------- signing

def sign(secret: str, timestamp_ms: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp_ms}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_signature(secret: str, body: bytes, signature: str | None, timestamp: str | None, *,
                     tolerance_ms: int = 300_000, now: int | None = None) -> bool:
    """What a receiver does: recompute, compare in constant time, refuse stale timestamps."""
    if not signature or not timestamp or not timestamp.isdigit():
        return False
    ts = int(timestamp)
    if abs((now_ms() if now is None else now) - ts) > tolerance_ms:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


def backoff_s(attempt: int, base: float, cap: float, rand: float | None = None) -> float:
    """Delay after failed attempt number `attempt` (1-based): base·2^(n-1), capped, ±25 % jitter."""
    r = random.random() if rand is None else rand
    delay = min(cap, base * 2 ** min(attempt - 1, 60))
    return min(cap, delay * (0.75 + 0.5 * r))


# ---------------------------------------------------------------- SSRF guards

def is_public_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return is_public_ip(mapped)
    return ip.is_global and not ip.is_multicast


def validate_url(url: str, *, allow_private: bool) -> str:
    """Refuse anything but an absolute http(s) URL a receiver could be behind."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise ValidationFailed(f"url must be 1-{MAX_URL} characters", field="url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValidationFailed("url is malformed", field="url") from None
    if parts.scheme not in ("http", "https"):
        raise ValidationFailed("url must be http:// or https://", field="url")
    host = parts.hostname
    if not host:
        raise ValidationFailed("url needs a host", field="url")
    if parts.username is not None or parts.password is not None:
        raise ValidationFailed("url must not carry credentials; sign with the secret instead",
                               field="url")
    if parts.fragment:
        raise ValidationFailed("url must not have a #fragment", field="url")
    if port == 0:
        raise ValidationFailed("url has an invalid port", field="url")
    if not allow_private:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        lowered = host.lower().rstrip(".")
        if (ip is not None and not is_public_ip(ip)) or lowered == "localhost" \
                or lowered.endswith((".localhost", ".local", ".internal")):
            raise ValidationFailed(
                "url points to a private or loopback address (set LIVECORE_WEBHOOK_ALLOW_PRIVATE"
                " to allow internal receivers)", field="url")
    return url


class BlockedTarget(Exception):
    pass


async def resolve_target(host: str, port: int, *, allow_private: bool) -> str:
    """One address of `host` to connect to; with allow_private off every address
    the name has must be public (a name with one private address is refused)."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    else:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise BlockedTarget(f"{host} has no address")
    if not allow_private:
        for a in addresses:
            if not is_public_ip(ipaddress.ip_address(a.split("%", 1)[0])):
                raise BlockedTarget(f"{host} resolves to a non-public address ({a})")
    # IPv4 first: a name with both families often has the IPv6 path broken.
    return next((a for a in addresses if ":" not in a), addresses[0])


# ---------------------------------------------------------------- enqueue

async def enqueue_webhook(conn: asyncpg.Connection | asyncpg.Pool, event_type: str,
                          data: dict[str, Any], show_id: str | None = None) -> str | None:
    """Enqueue an event for its subscribers in `conn`'s transaction. Returns the
    event id, or None if no active endpoint subscribes to `event_type`."""
    if event_type not in EVENTS:
        raise ValueError(f"unknown webhook event {event_type!r}")
    value: str | None = await conn.fetchval(
        "SELECT livecore_enqueue_webhook($1, $2, $3::jsonb)", event_type, show_id,
        orjson.dumps(data).decode())
    return value


# ---------------------------------------------------------------- endpoints and the log

def endpoint_dict(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": row["id"], "url": row["url"], "events": list(row["events"]),
            "description": row["description"], "active": row["active"],
            "created_at": row["created_at"], "disabled_at": row["disabled_at"]}


ENDPOINT_COLS = "id, url, events, description, active, created_at, disabled_at"


class WebhookStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(self, url: str, events: list[str], secret: str | None,
                     description: str | None, *, allow_private: bool) -> dict[str, Any]:
        validate_url(url, allow_private=allow_private)
        unknown = [e for e in events if e not in EVENTS]
        if unknown or not events:
            raise ValidationFailed(f"events must be a non-empty subset of {', '.join(EVENTS)}",
                                   field="events")
        generated = secret is None
        secret = secret or "whsec_" + secrets.token_urlsafe(32)
        row = await self.pool.fetchrow(
            f"INSERT INTO webhook_endpoints (id, url, events, secret, description, created_at)"
            f" VALUES ($1,$2,$3,$4,$5,$6) RETURNING {ENDPOINT_COLS}",
            new_id("wh"), url, sorted(set(events)), secret, description, now_ms())
        assert row is not None
        out = endpoint_dict(row)
        if generated:
            out["secret"] = secret  # shown once; never returned again
        return out

    async def all(self) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(f"SELECT {ENDPOINT_COLS} FROM webhook_endpoints ORDER BY created_at, id")
        return [endpoint_dict(r) for r in rows]

    async def get(self, endpoint_id: str) -> dict[str, Any]:
        row = await self.pool.fetchrow(f"SELECT {ENDPOINT_COLS} FROM webhook_endpoints WHERE id=$1",
                                       endpoint_id)
        if row is None:
            raise NotFound("unknown webhook")
        return endpoint_dict(row)

    async def disable(self, endpoint_id: str) -> None:
        """Stop sending to an endpoint; its pending deliveries are cancelled, its log is kept."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE webhook_endpoints SET active=false, disabled_at=coalesce(disabled_at, $2)"
                " WHERE id=$1 RETURNING id", endpoint_id, now_ms())
            if row is None:
                raise NotFound("unknown webhook")
            await conn.execute(
                "UPDATE webhook_deliveries SET status='cancelled'"
                " WHERE endpoint_id=$1 AND status='pending'", endpoint_id)

    async def deliveries(self, endpoint_id: str, *, before: int | None = None, limit: int = 50,
                         status: str | None = None) -> tuple[list[dict[str, Any]], int | None]:
        """Newest first, each with its attempts; returns (items, cursor of the next page)."""
        await self.get(endpoint_id)
        rows = await self.pool.fetch(
            "SELECT d.id, d.event_id, e.type, e.show_id, e.created_at AS event_created_at, d.status,"
            " d.attempts, d.next_attempt_at, d.last_attempt_at, d.last_status, d.last_error,"
            " d.delivered_at, d.created_at"
            " FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id"
            " WHERE d.endpoint_id=$1 AND ($2::bigint IS NULL OR d.id < $2)"
            " AND ($3::text IS NULL OR d.status = $3)"
            " ORDER BY d.id DESC LIMIT $4", endpoint_id, before, status, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        attempts = await self.pool.fetch(
            "SELECT delivery_id, attempt, node_id, started_at, duration_ms, status_code, ok, error,"
            " response_excerpt FROM webhook_attempts WHERE delivery_id = ANY($1::bigint[])"
            " ORDER BY delivery_id, id", [r["id"] for r in rows])
        log_of: dict[int, list[dict[str, Any]]] = {}
        for a in attempts:
            log_of.setdefault(a["delivery_id"], []).append({
                "attempt": a["attempt"], "at": a["started_at"], "duration_ms": a["duration_ms"],
                "status_code": a["status_code"], "ok": a["ok"], "error": a["error"],
                "response": a["response_excerpt"], "node": a["node_id"]})
        items = [{
            "id": r["id"], "event_id": r["event_id"], "event": r["type"], "show_id": r["show_id"],
            "event_created_at": r["event_created_at"], "status": r["status"],
            "attempts": r["attempts"],
            "next_attempt_at": r["next_attempt_at"] if r["status"] == "pending" else None,
            "last_attempt_at": r["last_attempt_at"], "last_status_code": r["last_status"],
            "last_error": r["last_error"], "delivered_at": r["delivered_at"],
            "created_at": r["created_at"], "attempt_log": log_of.get(r["id"], []),
        } for r in rows]
        return items, (rows[-1]["id"] if more and rows else None)


# ---------------------------------------------------------------- the worker

_CLAIM_SQL = """
WITH due AS (
    SELECT id FROM webhook_deliveries
    WHERE status = 'pending' AND next_attempt_at <= $1
    ORDER BY next_attempt_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d
SET attempts = d.attempts + 1, next_attempt_at = $1 + $3
FROM due, webhook_endpoints ep, webhook_events ev
WHERE d.id = due.id AND ep.id = d.endpoint_id AND ev.id = d.event_id
RETURNING d.id, d.attempts, d.event_id, ep.url, ep.secret, ev.type, ev.show_id,
          ev.data::text AS data, ev.created_at
"""


@dataclass
class Job:
    delivery_id: int
    attempt: int
    event_id: str
    event_type: str
    show_id: str | None
    url: str
    secret: str
    body: bytes


@dataclass
class Outcome:
    ok: bool
    status_code: int | None
    error: str | None
    excerpt: str | None
    retry_after_s: float | None
    started_at: int
    duration_ms: int


def event_body(event_id: str, event_type: str, show_id: str | None, created_at: int,
               data: dict[str, Any]) -> bytes:
    """The JSON every attempt of one delivery sends, byte for byte."""
    return orjson.dumps({"id": event_id, "type": event_type, "created_at": created_at,
                         "show_id": show_id, "data": data})


class WebhookWorker:
    def __init__(self, pool: asyncpg.Pool, settings: WebhookSettings | None = None,
                 node_id: str = "") -> None:
        self.pool = pool
        self.settings = settings or WebhookSettings()
        self.node_id = node_id or uuid.uuid4().hex[:8]
        # One client per (scheme, host, port): we connect to the vetted IP, so a
        # shared pool could hand a TLS connection made for one host name to
        # another endpoint on the same address.
        self._clients: dict[tuple[str, str, int], httpx.AsyncClient] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._last_prune = 0.0

    def start(self) -> None:
        self._loop_task = asyncio.ensure_future(self._loop())

    def _client(self, key: tuple[str, str, int]) -> httpx.AsyncClient:
        client = self._clients.pop(key, None)
        if client is None:
            if len(self._clients) >= MAX_CLIENTS:  # least recently used goes, once idle
                old = self._clients.pop(next(iter(self._clients)))
                asyncio.get_running_loop().call_later(
                    self.settings.timeout_s + 1, lambda: asyncio.ensure_future(old.aclose()))
            # trust_env off: no proxies from the environment (the address we
            # vetted must be the one we connect to).
            client = httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                       timeout=self.settings.timeout_s,
                                       limits=httpx.Limits(max_connections=self.settings.concurrency))
        self._clients[key] = client  # most recently used last
        return client

    async def stop(self, grace_s: float = 2.0) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
            self._loop_task = None
        if self._inflight:
            # Unfinished attempts keep their lease and are retried when it runs out.
            _, pending = await asyncio.wait(set(self._inflight), timeout=grace_s)
            for task in pending:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*pending, return_exceptions=True)
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _loop(self) -> None:
        while True:
            try:
                started = await self.dispatch()
                if time.monotonic() - self._last_prune > PRUNE_EVERY_S:
                    self._last_prune = time.monotonic()
                    await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("webhook worker pass failed", exc_info=True)
                started = 0
            if started == 0 or len(self._inflight) >= self.settings.concurrency:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval_s)

    async def dispatch(self) -> int:
        """Claim as many due deliveries as there are free slots and start them."""
        free = self.settings.concurrency - len(self._inflight)
        if free <= 0:
            return 0
        jobs = await self.claim(free)
        for job in jobs:
            task = asyncio.ensure_future(self._run(job))
            self._inflight.add(task)
            task.add_done_callback(self._done)
        return len(jobs)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()

    async def run_once(self) -> int:
        """Claim, deliver and record one batch (tests and tools)."""
        jobs = await self.claim(self.settings.concurrency)
        await asyncio.gather(*(self._run(job) for job in jobs))
        return len(jobs)

    async def claim(self, limit: int) -> list[Job]:
        now = now_ms()
        rows = await self.pool.fetch(_CLAIM_SQL, now, limit, self.settings.lease_ms)
        jobs = []
        for r in rows:
            body = event_body(r["event_id"], r["type"], r["show_id"], r["created_at"],
                              orjson.loads(r["data"]))
            jobs.append(Job(r["id"], r["attempts"], r["event_id"], r["type"], r["show_id"],
                            r["url"], r["secret"], body))
        return jobs

    async def _run(self, job: Job) -> None:
        try:
            outcome = await self.attempt(job)
            await self.record(job, outcome)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("recording webhook delivery %s failed; its lease will expire",
                        job.delivery_id, exc_info=True)

    async def attempt(self, job: Job) -> Outcome:
        started = now_ms()
        t0 = time.monotonic()
        status: int | None = None
        excerpt: str | None = None
        retry_after: float | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                status, excerpt, retry_after = await self._post(job, started)
        except TimeoutError:
            error = f"timeout after {self.settings.timeout_s:g}s"
        except BlockedTarget as exc:
            error = f"blocked: {exc}"
        except Exception as exc:  # connection refused, TLS, protocol errors, bad URL…
            error = f"{type(exc).__name__}: {exc}"[:300]
        ok = status is not None and 200 <= status < 300
        if status is not None and not ok:
            error = f"HTTP {status}"
        ATTEMPTS.labels("ok" if ok else "error").inc()
        return Outcome(ok, status, error, excerpt, retry_after, started,
                       int((time.monotonic() - t0) * 1000))

    async def _post(self, job: Job, timestamp: int) -> tuple[int, str, float | None]:
        url = httpx.URL(job.url)
        port = url.port or (443 if url.scheme == "https" else 80)
        ip = await resolve_target(url.host, port, allow_private=self.settings.allow_private)
        headers = {
            "content-type": "application/json", "user-agent": USER_AGENT,
            "host": url.netloc.decode("ascii"),
            SIGNATURE_HEADER: sign(job.secret, timestamp, job.body),
            TIMESTAMP_HEADER: str(timestamp), EVENT_ID_HEADER: job.event_id,
            EVENT_TYPE_HEADER: job.event_type, ATTEMPT_HEADER: str(job.attempt),
        }
        # Connect to the vetted address; TLS still verifies the certificate
        # against the original host name (SNI).
        target = url.copy_with(host=ip)
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        client = self._client((url.scheme, url.host, port))
        request = client.build_request("POST", target, content=job.body, headers=headers,
                                       extensions=extensions)
        response = await client.send(request, stream=True)
        try:
            chunk = b""
            async for part in response.aiter_bytes():
                chunk += part
                if len(chunk) >= RESPONSE_EXCERPT:
                    break
        finally:
            await response.aclose()
        retry_after = None
        header = response.headers.get("retry-after", "")
        if response.status_code in (429, 503) and header.isdigit():
            retry_after = float(header)
        return response.status_code, chunk[:RESPONSE_EXCERPT].decode("utf-8", "replace"), retry_after

    async def record(self, job: Job, outcome: Outcome) -> None:
        s = self.settings
        finished = now_ms()
        async with self.pool.acquire() as conn, conn.transaction():
            if outcome.ok:
                # Success is final whoever holds the lease now.
                await conn.execute(
                    "UPDATE webhook_deliveries SET status='delivered', delivered_at=$2,"
                    " last_attempt_at=$3, last_status=$4, last_error=NULL"
                    " WHERE id=$1 AND status='pending'",
                    job.delivery_id, finished, outcome.started_at, outcome.status_code)
            else:
                delay = backoff_s(job.attempt, s.backoff_base_s, s.backoff_cap_s)
                if outcome.retry_after_s is not None:
                    delay = min(s.backoff_cap_s, max(delay, outcome.retry_after_s))
                # Only while the lease is still ours (attempts unchanged).
                await conn.execute(
                    "UPDATE webhook_deliveries SET"
                    " status = CASE WHEN attempts >= $5 THEN 'failed' ELSE 'pending' END,"
                    " next_attempt_at=$2, last_attempt_at=$3, last_status=$4, last_error=$6"
                    " WHERE id=$1 AND status='pending' AND attempts=$7",
                    job.delivery_id, finished + int(delay * 1000), outcome.started_at,
                    outcome.status_code, s.max_attempts, outcome.error, job.attempt)
            await conn.execute(
                "INSERT INTO webhook_attempts (delivery_id, attempt, node_id, started_at, duration_ms,"
                " status_code, ok, error, response_excerpt) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
                job.delivery_id, job.attempt, self.node_id, outcome.started_at, outcome.duration_ms,
                outcome.status_code, outcome.ok, outcome.error, outcome.excerpt)

    async def prune(self) -> int:
        """Drop events older than the retention whose deliveries are all finished."""
        cutoff = now_ms() - int(self.settings.retention_days * 86_400_000)
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", PRUNE_LOCK_ID):
                return 0
            deleted: int = await conn.fetchval(
                "WITH old AS (SELECT e.id FROM webhook_events e WHERE e.created_at < $1"
                " AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id"
                " AND d.status = 'pending') ORDER BY e.created_at LIMIT 5000)"
                " , gone AS (DELETE FROM webhook_events e USING old WHERE e.id = old.id RETURNING 1)"
                " SELECT count(*) FROM gone", cutoff)
        return deleted
