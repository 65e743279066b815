"""Show analytics: cheap event recording on the hot path, exact figures on read.

Recording. `RECORDER` is one per process (like the Prometheus counters in
livecore/metrics.py). Its calls are plain dict updates, no I/O, and no-ops
until the gateway's lifespan starts it. A background task flushes the buffer
every few seconds in one PostgreSQL transaction per flush:
- counters (chat, reactions, pins, claims by outcome) summed per show per
  minute, upserted in key order (`n = n + excluded.n`, no deadlocks between
  nodes);
- viewer sessions (joins and leaves with user id, or the session for
  anonymous viewers), with a node heartbeat that closes the sessions of a
  node that died at its last heartbeat.

Everything already durable elsewhere is read from where it lives: orders
(GMV, buyers, conversion), deals (launches, sell-through, time to sell out).

Reading. `show_analytics()` computes the report from those tables; see
docs/analytics.md for every definition.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import Counter
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from livecore.ids import now_ms

log = logging.getLogger("livecore.analytics")

MINUTE_MS = 60_000
POST_LIVE_WINDOW_MS = 24 * 3600 * 1000
MAX_SERIES_MINUTES = 48 * 60
FLUSHES = Counter("livecore_analytics_flushes_total", "Analytics buffer flushes", ["outcome"])
DROPPED_EVENTS = Counter("livecore_analytics_dropped_total",
                         "Analytics records dropped because PostgreSQL was unreachable too long")


class AnalyticsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIVECORE_ANALYTICS_", env_file=".env",
                                      extra="ignore")

    flush_interval_s: float = Field(2.0, gt=0, description="Seconds between batched writes of the recorded events.")
    max_buffered_sessions: int = Field(200_000, ge=1000, description="Viewer joins/leaves kept in memory while PostgreSQL is unreachable; beyond, the oldest are dropped.")


def minute_of(ts_ms: int) -> int:
    return ts_ms // MINUTE_MS * MINUTE_MS


# ---------------------------------------------------------------- recording

@dataclass
class _Session:
    session_id: str
    show_id: str
    user_id: str | None
    joined_at: int
    left_at: int | None = None
    written: bool = False  # its INSERT is committed or in flight


CounterKey = tuple[str, int, str, str]  # show_id, minute_at, metric, dim


class EventRecorder:
    """Buffers analytics events in memory and flushes them in batches."""

    def __init__(self) -> None:
        self.enabled = False
        self.node_id = ""
        self.pool: asyncpg.Pool | None = None
        # Defaults until start(): importing this module never reads the environment.
        self.settings = AnalyticsSettings.model_construct()
        self._counts: dict[CounterKey, int] = {}
        self._open: dict[int, _Session] = {}
        self._new: list[_Session] = []
        self._left: list[_Session] = []
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # ---- hot path (no I/O) --------------------------------------------------

    def count(self, show_id: str, metric: str, n: int = 1, dim: str = "") -> None:
        """Add `n` to `metric` of `show_id` in the current minute."""
        if not self.enabled:
            return
        key = (show_id, minute_of(now_ms()), metric, dim)
        self._counts[key] = self._counts.get(key, 0) + n

    def claim(self, show_id: str, deal_id: str, result: list[Any]) -> None:
        """Count one claim by outcome from the reservation engine's Redis answer
        (`["ok", …]` or `["err", code]`); idempotent replays are not new claims."""
        if not self.enabled or not result or result[-1] == "replay":
            return
        outcome = "ok" if result[0] == "ok" else str(result[1]) if len(result) > 1 else str(result[0])
        self.count(show_id, f"claims.{outcome}", dim=deal_id)

    def viewer_joined(self, show_id: str, key: int, user_id: str | None, role: str = "viewer") -> None:
        """A socket joined `show_id`. `key` identifies the socket until viewer_left
        (e.g. `id(conn)`); only the viewer role counts as audience."""
        if not self.enabled or role != "viewer":
            return
        now = now_ms()
        previous = self._open.pop(key, None)
        if previous is not None:  # a leave we never heard of
            self._close(previous, now)
        session = _Session(uuid.uuid4().hex, show_id, user_id, now)
        self._open[key] = session
        self._new.append(session)

    def viewer_left(self, key: int) -> None:
        session = self._open.pop(key, None)
        if session is not None:
            self._close(session, now_ms())

    def _close(self, session: _Session, at: int) -> None:
        session.left_at = at
        if session.written:
            self._left.append(session)
        # else: its pending INSERT carries left_at

    # ---- lifecycle ----------------------------------------------------------

    def start(self, pool: asyncpg.Pool, node_id: str = "",
              settings: AnalyticsSettings | None = None) -> None:
        """Begin recording and flushing. The node id gets a per-start suffix so a
        restarted node never extends the sessions its previous process left open."""
        if self._task is not None:  # started twice in one process: one flusher is enough
            self._task.cancel()
        self.pool = pool
        self.settings = settings or AnalyticsSettings()
        self.node_id = f"{node_id or 'node'}-{uuid.uuid4().hex[:8]}"
        self.enabled = True
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        """Close the sessions still open here, flush everything, stop recording."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        now = now_ms()
        for session in self._open.values():
            self._close(session, now)
        self._open.clear()
        try:
            await self.flush()
        except Exception:
            log.warning("final analytics flush failed", exc_info=True)
        self.enabled = False

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_interval_s)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("analytics flush failed; will retry", exc_info=True)

    # ---- flushing -----------------------------------------------------------

    async def flush(self) -> None:
        """Write what is buffered in one transaction; on failure keep it for the next try."""
        if self.pool is None:
            return
        async with self._lock:
            counts, self._counts = self._counts, {}
            new, self._new = self._new, []
            left, self._left = self._left, []
            # Snapshot now, synchronously: a leave that arrives while we await
            # goes to _left and becomes an UPDATE of the next flush.
            for s in new:
                s.written = True
            new_rows = [(s.session_id, s.show_id, self.node_id, s.user_id, s.joined_at, s.left_at)
                        for s in new]
            left_rows = [(s.session_id, s.left_at) for s in left]
            heartbeat = bool(self._open or new or left)
            if not (counts or new_rows or left_rows or heartbeat):
                return
            try:
                await self._write(sorted(counts.items()), new_rows, left_rows, heartbeat)
            except Exception:
                FLUSHES.labels("error").inc()
                self._restore(counts, new, left)
                raise
            FLUSHES.labels("ok").inc()

    def _restore(self, counts: dict[CounterKey, int], new: list[_Session],
                 left: list[_Session]) -> None:
        for key, n in counts.items():
            self._counts[key] = self._counts.get(key, 0) + n
        for s in new:
            s.written = False
        # Sessions that left during the failed flush are in both `new` (with
        # left_at) and `_left`; the later UPDATE is then a harmless no-op.
        self._new = new + self._new
        self._left = left + self._left
        limit = self.settings.max_buffered_sessions
        for name in ("_new", "_left"):
            pending: list[_Session] = getattr(self, name)
            if len(pending) > limit:
                DROPPED_EVENTS.inc(len(pending) - limit)
                setattr(self, name, pending[-limit:])

    async def _write(self, counts: list[tuple[CounterKey, int]],
                     new_rows: list[tuple[str, str, str, str | None, int, int | None]],
                     left_rows: list[tuple[str, int | None]], heartbeat: bool) -> None:
        assert self.pool is not None
        async with self.pool.acquire() as conn, conn.transaction():
            if counts:
                await conn.execute(
                    "INSERT INTO analytics_counters AS c (show_id, minute_at, metric, dim, n)"
                    " SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[])"
                    " ON CONFLICT (show_id, minute_at, metric, dim) DO UPDATE SET n = c.n + EXCLUDED.n",
                    [k[0] for k, _ in counts], [k[1] for k, _ in counts], [k[2] for k, _ in counts],
                    [k[3] for k, _ in counts], [n for _, n in counts])
            if new_rows:
                cols = list(zip(*new_rows, strict=True))
                await conn.execute(
                    "INSERT INTO analytics_sessions AS s (session_id, show_id, node_id, user_id,"
                    " joined_at, left_at)"
                    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
                    " $5::bigint[], $6::bigint[])"
                    " ON CONFLICT (session_id) DO UPDATE SET left_at = coalesce(s.left_at, EXCLUDED.left_at)",
                    *[list(c) for c in cols])
            if left_rows:
                await conn.execute(
                    "UPDATE analytics_sessions s SET left_at = u.left_at"
                    " FROM unnest($1::text[], $2::bigint[]) AS u(session_id, left_at)"
                    " WHERE s.session_id = u.session_id AND s.left_at IS NULL",
                    [r[0] for r in left_rows], [r[1] for r in left_rows])
            if heartbeat:
                await conn.execute(
                    "INSERT INTO analytics_nodes (node_id, seen_at) VALUES ($1, $2)"
                    " ON CONFLICT (node_id) DO UPDATE SET seen_at = EXCLUDED.seen_at",
                    self.node_id, now_ms())


RECORDER = EventRecorder()


# ---------------------------------------------------------------- reading

def ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def div_round(num: int, den: int) -> int | None:
    """num / den rounded half up, in integers (money stays exact)."""
    return (2 * num + den) // (2 * den) if den else None


# Session end: left_at, else the node's last heartbeat (never before the join).
_SESSIONS = """
    SELECT v.session_id, v.user_id, v.joined_at AS a,
           greatest(v.joined_at, coalesce(v.left_at, n.seen_at, v.joined_at)) AS b
    FROM analytics_sessions v LEFT JOIN analytics_nodes n ON n.node_id = v.node_id
    WHERE v.show_id = $1
"""

# Unique viewers and watch time: a viewer's overlapping sessions (two tabs)
# are merged, so watch time is wall-clock time with at least one session open.
_AUDIENCE_SQL = f"""
WITH s AS ({_SESSIONS}),
k AS (SELECT coalesce(user_id, '') AS u, CASE WHEN user_id IS NULL THEN session_id ELSE '' END AS anon,
             a, b FROM s),
o AS (SELECT u, anon, a, b, max(b) OVER (PARTITION BY u, anon ORDER BY a, b
             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_end FROM k),
g AS (SELECT u, anon, a, b, sum(CASE WHEN prev_end IS NULL OR a > prev_end THEN 1 ELSE 0 END)
             OVER (PARTITION BY u, anon ORDER BY a, b ROWS UNBOUNDED PRECEDING) AS grp FROM o),
m AS (SELECT u, anon, max(b) - min(a) AS span FROM g GROUP BY u, anon, grp)
SELECT (SELECT count(*) FROM s)::bigint AS sessions,
       (SELECT count(*) FROM (SELECT DISTINCT u, anon FROM m) d)::bigint AS unique_viewers,
       coalesce((SELECT sum(span) FROM m), 0)::bigint AS watch_ms
"""

# Concurrent viewers: +1 at each join, -1 at each end, netted per instant;
# per minute the highest level and the level the minute closes at.
_CONCURRENCY_SQL = f"""
WITH s AS ({_SESSIONS}),
ev AS (SELECT t, sum(d)::bigint AS d FROM (SELECT a AS t, 1 AS d FROM s UNION ALL
                                           SELECT b AS t, -1 AS d FROM s) x GROUP BY t),
run AS (SELECT t, sum(d) OVER (ORDER BY t) AS level FROM ev)
SELECT t / {MINUTE_MS} * {MINUTE_MS} AS minute_at, max(level)::bigint AS peak,
       (array_agg(level ORDER BY t DESC))[1]::bigint AS closing
FROM run GROUP BY 1 ORDER BY 1
"""

_JOINS_SQL = f"""
SELECT joined_at / {MINUTE_MS} * {MINUTE_MS} AS minute_at, count(*)::bigint AS n
FROM analytics_sessions WHERE show_id = $1 GROUP BY 1
"""

# Orders by phase: live (up to the show's end, or all while it has not
# ended), post (within the window after the end), late (after that).
_ORDERS_SQL = """
WITH o AS (
    SELECT user_id, qty, price_cents, currency,
           CASE WHEN $2::bigint IS NULL OR created_at <= $2 THEN 'live'
                WHEN created_at <= $2 + $3 THEN 'post' ELSE 'late' END AS phase
    FROM orders WHERE show_id = $1)
SELECT phase, currency, GROUPING(currency) AS all_currencies, GROUPING(phase) AS all_phases,
       count(*)::bigint AS orders,
       coalesce(sum(qty), 0)::bigint AS units, coalesce(sum(qty * price_cents), 0)::bigint AS gmv,
       count(DISTINCT user_id)::bigint AS buyers
FROM o GROUP BY GROUPING SETS ((phase, currency), (phase), ())
"""

_ORDER_SERIES_SQL = f"""
SELECT created_at / {MINUTE_MS} * {MINUTE_MS} AS minute_at, count(*)::bigint AS orders,
       sum(qty)::bigint AS units, sum(qty * price_cents)::bigint AS gmv
FROM orders WHERE show_id = $1 AND ($2::bigint IS NULL OR created_at <= $2) GROUP BY 1
"""

_DEALS_SQL = """
SELECT d.id, d.product_id, p.name AS product_name, d.price_cents, d.currency, d.quantity, d.sold,
       d.status, d.end_reason, d.starts_at, d.ends_at, d.ended_at,
       coalesce(o.orders, 0)::bigint AS orders, coalesce(o.units, 0)::bigint AS units,
       coalesce(o.gmv, 0)::bigint AS gmv, o.last_order_at
FROM deals d LEFT JOIN (
    SELECT deal_id, count(*) AS orders, sum(qty) AS units, sum(qty * price_cents) AS gmv,
           max(created_at) AS last_order_at
    FROM orders WHERE show_id = $1 GROUP BY deal_id) o ON o.deal_id = d.id
JOIN products p ON p.id = d.product_id
WHERE d.show_id = $1 ORDER BY d.starts_at, d.id
"""


def _sales(rows: list[asyncpg.Record], phase: str) -> dict[str, Any]:
    by_currency: dict[str, dict[str, Any]] = {}
    total: asyncpg.Record | None = None
    for r in rows:
        if r["all_phases"] or r["phase"] != phase:
            continue
        if r["all_currencies"]:
            total = r
        else:
            cur = str(r["currency"]).strip()
            by_currency[cur] = {"orders": r["orders"], "units": r["units"], "gmv_cents": r["gmv"],
                                "aov_cents": div_round(r["gmv"], r["orders"])}
    orders = int(total["orders"]) if total else 0
    single = len(by_currency) == 1
    currency = next(iter(by_currency)) if single else None
    gmv = by_currency[currency]["gmv_cents"] if currency else (0 if not by_currency else None)
    return {"orders": orders, "units": int(total["units"]) if total else 0,
            "buyers": int(total["buyers"]) if total else 0,
            "currency": currency, "gmv_cents": gmv,
            "aov_cents": div_round(gmv, orders) if gmv is not None else None,
            "by_currency": by_currency}


async def show_analytics(pool: asyncpg.Pool, show_id: str, *, now: int | None = None) -> dict[str, Any] | None:
    """The analytics report of one show, or None if the show does not exist."""
    now = now_ms() if now is None else now
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        show = await conn.fetchrow(
            "SELECT id, title, status, scheduled_at, started_at, ended_at FROM shows WHERE id=$1",
            show_id)
        if show is None:
            return None
        ended_at: int | None = show["ended_at"] if show["status"] == "ended" else None
        audience = await conn.fetchrow(_AUDIENCE_SQL, show_id)
        concurrency = await conn.fetch(_CONCURRENCY_SQL, show_id)
        joins = await conn.fetch(_JOINS_SQL, show_id)
        counters = await conn.fetch(
            "SELECT minute_at, metric, dim, n FROM analytics_counters WHERE show_id=$1", show_id)
        order_rows = await conn.fetch(_ORDERS_SQL, show_id, ended_at, POST_LIVE_WINDOW_MS)
        order_series = await conn.fetch(_ORDER_SERIES_SQL, show_id, ended_at)
        deals = await conn.fetch(_DEALS_SQL, show_id)
    assert audience is not None

    totals: dict[str, int] = {}
    claims_by_deal: dict[str, dict[str, int]] = {}
    pins_by_product: dict[str, int] = {}
    per_minute: dict[int, dict[str, int]] = {}
    for r in counters:
        metric, n = r["metric"], int(r["n"])
        totals[metric] = totals.get(metric, 0) + n
        if metric.startswith("claims.") and r["dim"]:
            outcome = metric.removeprefix("claims.")
            per = claims_by_deal.setdefault(r["dim"], {})
            per[outcome] = per.get(outcome, 0) + n
        if metric == "pins" and r["dim"]:
            pins_by_product[r["dim"]] = pins_by_product.get(r["dim"], 0) + n
        bucket = per_minute.setdefault(int(r["minute_at"]), {})
        bucket[metric] = bucket.get(metric, 0) + n

    claims_by_outcome = {m.removeprefix("claims."): n for m, n in sorted(totals.items())
                         if m.startswith("claims.")}
    claims_ok = claims_by_outcome.get("ok", 0)
    unique = int(audience["unique_viewers"])
    watch_ms = int(audience["watch_ms"])
    peak = max((int(r["peak"]) for r in concurrency), default=0)

    live = _sales(order_rows, "live")
    post = _sales(order_rows, "post")
    all_orders = next((int(r["orders"]) for r in order_rows if r["all_phases"]), 0)
    post_complete = ended_at is not None and now > ended_at + POST_LIVE_WINDOW_MS

    deal_items = []
    for d in deals:
        sold_out_at = d["last_order_at"] if d["sold"] >= d["quantity"] and d["last_order_at"] else None
        deal_items.append({
            "id": d["id"], "product_id": d["product_id"], "product_name": d["product_name"],
            "price_cents": d["price_cents"],
            "currency": str(d["currency"]).strip(), "quantity": d["quantity"], "sold": d["sold"],
            "sell_through": ratio(d["sold"], d["quantity"]), "status": d["status"],
            "end_reason": d["end_reason"], "started_at": d["starts_at"], "ends_at": d["ends_at"],
            "ended_at": d["ended_at"],
            "time_to_sell_out_ms": sold_out_at - d["starts_at"] if sold_out_at else None,
            "orders": d["orders"], "units": d["units"], "gmv_cents": d["gmv"],
            "claims": claims_by_deal.get(d["id"], {}),
        })

    series = _series(show, ended_at, now, concurrency, joins, per_minute, order_series, deals)
    return {
        "show": {"id": show["id"], "title": show["title"], "status": show["status"],
                 "scheduled_at": show["scheduled_at"], "started_at": show["started_at"],
                 "ended_at": show["ended_at"]},
        "generated_at": now,
        "viewers": {"peak": peak, "unique": unique, "sessions": int(audience["sessions"]),
                    "total_watch_ms": watch_ms, "avg_watch_ms": div_round(watch_ms, unique) or 0},
        "engagement": {"chat_messages": totals.get("chat", 0), "reactions": totals.get("reactions", 0),
                       "product_pins": totals.get("pins", 0), "pins_by_product": pins_by_product},
        "claims": {"total": sum(claims_by_outcome.values()), "ok": claims_ok,
                   "by_outcome": claims_by_outcome},
        "sales": live,
        "post_live": {**post, "window_ms": POST_LIVE_WINDOW_MS, "complete": post_complete,
                      "conversion": ratio(post["buyers"], unique)},
        "conversion": {"live": ratio(live["buyers"], unique),
                       "post_live": ratio(post["buyers"], unique),
                       "claims_to_orders": ratio(all_orders, claims_ok)},
        "deals": deal_items,
        "series": series,
    }


def _series(show: asyncpg.Record, ended_at: int | None, now: int, concurrency: list[asyncpg.Record],
            joins: list[asyncpg.Record], per_minute: dict[int, dict[str, int]],
            order_series: list[asyncpg.Record], deals: list[asyncpg.Record]) -> list[dict[str, Any]]:
    """One point per minute from the first activity (or the start) to the end."""
    peaks = {int(r["minute_at"]): (int(r["peak"]), int(r["closing"])) for r in concurrency}
    join_n = {int(r["minute_at"]): int(r["n"]) for r in joins}
    orders = {int(r["minute_at"]): r for r in order_series}
    launches: dict[int, int] = {}
    for d in deals:
        m = minute_of(int(d["starts_at"]))
        launches[m] = launches.get(m, 0) + 1
    minutes = set(peaks) | set(join_n) | set(per_minute) | set(orders) | set(launches)
    for stamp in (show["started_at"], ended_at):
        if stamp is not None:
            minutes.add(minute_of(int(stamp)))
    if show["status"] == "live":
        minutes.add(minute_of(now))
    if not minutes:
        return []
    lo, hi = min(minutes), max(minutes)
    if ended_at is not None:
        hi = min(hi, max(minute_of(ended_at), lo))
    hi = min(hi, lo + (MAX_SERIES_MINUTES - 1) * MINUTE_MS)
    out: list[dict[str, Any]] = []
    level = 0
    for m in range(lo, hi + MINUTE_MS, MINUTE_MS):
        viewers = level
        if m in peaks:
            viewers = max(level, peaks[m][0])
            level = peaks[m][1]
        c = per_minute.get(m, {})
        o = orders.get(m)
        out.append({
            "minute_at": m, "viewers": viewers, "joins": join_n.get(m, 0),
            "chat": c.get("chat", 0), "reactions": c.get("reactions", 0),
            "claims": c.get("claims.ok", 0), "deals_started": launches.get(m, 0),
            "orders": int(o["orders"]) if o else 0, "units": int(o["units"]) if o else 0,
            "gmv_cents": int(o["gmv"]) if o else 0,
        })
    return out


# ---------------------------------------------------------------- CSV

CSV_PARTS = ("series", "deals", "summary")
SERIES_COLUMNS = ("minute_at", "minute_utc", "viewers", "joins", "chat", "reactions", "claims",
                  "deals_started", "orders", "units", "gmv_cents")
DEAL_COLUMNS = ("id", "product_id", "product_name", "price_cents", "currency", "quantity", "sold", "sell_through",
                "status", "end_reason", "started_at", "ended_at", "time_to_sell_out_ms", "orders",
                "units", "gmv_cents", "claims_ok", "claims_sold_out")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    # Spreadsheet formula injection: text cells never start with = + - @.
    if not isinstance(value, int | float) and text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def _flatten(prefix: str, value: Any, out: list[tuple[str, Any]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif not isinstance(value, list):
        out.append((prefix, value))


def to_csv(report: dict[str, Any], part: str = "series") -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    if part == "series":
        writer.writerow(SERIES_COLUMNS)
        for p in report["series"]:
            utc = datetime.fromtimestamp(p["minute_at"] / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")
            writer.writerow([_cell(p.get(c, utc if c == "minute_utc" else None)) for c in SERIES_COLUMNS])
    elif part == "deals":
        writer.writerow(DEAL_COLUMNS)
        for d in report["deals"]:
            row = {**d, "claims_ok": d["claims"].get("ok", 0),
                   "claims_sold_out": d["claims"].get("sold_out", 0)}
            writer.writerow([_cell(row.get(c)) for c in DEAL_COLUMNS])
    else:
        writer.writerow(("metric", "value"))
        pairs: list[tuple[str, Any]] = []
        for key in ("show", "viewers", "engagement", "claims", "sales", "post_live", "conversion"):
            _flatten(key, report[key], pairs)
        for k, v in pairs:
            writer.writerow((_cell(k), _cell(v)))
    return buf.getvalue()
