"""The flash-deal reservation engine.

Redis holds the hot counters (one Functions library, see lua/livecore.lua);
PostgreSQL is the record (deals, orders, product stock). The rules:
- launch moves units from product stock into the deal in one PG transaction;
- claims are one atomic Redis function call, micro-batched per node
  (ClaimBatcher; window 0 = adaptive, see docs/engine.md for the numbers);
- confirm = Redis "confirming" lease -> PG order (unique on reservation id,
  guarded by `sold <= quantity`) -> Redis "sold";
- unsold units go back to stock once, in one PG statement guarded by `settled`;
- if Redis loses a deal, it is rebuilt from PG: remaining = quantity - sold,
  per-user counts = units each user bought. Holds Redis forgot are void
  (undersell for at most one TTL, never oversell).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from redis.asyncio import Redis

from livecore.analytics import RECORDER
from livecore.bus import EventBus
from livecore.errors import (
    Conflict,
    DealAlreadyLive,
    DealNotLive,
    Forbidden,
    IdempotencyMismatch,
    InsufficientStock,
    LimitReached,
    LiveCoreError,
    NotFound,
    ReservationExpired,
    ReservationNotActive,
    ShowEnded,
    SoldOut,
    Unavailable,
    ValidationFailed,
)
from livecore.ids import new_id, now_ms
from livecore.keys import Keys
from livecore.metrics import CLAIMS, ORDERS
from livecore.models import DealIn
from livecore.redisfn import RedisFunctions

log = logging.getLogger("livecore.deals")

CONFIRM_LEASE_MS = 60_000
DEAL_KEY_TTL_S = 2 * 86_400  # deal keys (and their idempotency keys) outlive the deal by ≥ 24 h
CLAIM_ERRORS: dict[str, type[LiveCoreError]] = {
    "sold_out": SoldOut, "deal_not_live": DealNotLive, "limit_reached": LimitReached,
    "idempotency_mismatch": IdempotencyMismatch, "invalid_qty": ValidationFailed,
}
STATIC_CACHE_MAX = 10_000
# PostgreSQL errors after which we cannot know whether the order committed.
PG_UNCERTAIN = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, TimeoutError)
DEAL_COLS = ("id, show_id, product_id, price_cents, currency, quantity, per_user_limit, hold_ttl_s,"
             " starts_at, ends_at, status, end_reason, sold, settled")


def deal_dict(row: asyncpg.Record, remaining: int | None = None) -> dict[str, Any]:
    # Redis' remaining may dip below zero for a moment while it repairs a
    # count after data loss (see lc_confirm_finish); viewers never see that.
    if remaining is not None:
        remaining = max(0, remaining)
    return {
        "id": row["id"], "show_id": row["show_id"], "product_id": row["product_id"],
        "price_cents": row["price_cents"], "currency": row["currency"],
        "quantity": row["quantity"],
        "remaining": remaining if remaining is not None else max(0, row["quantity"] - row["sold"]),
        "per_user_limit": row["per_user_limit"], "hold_ttl_s": row["hold_ttl_s"],
        "starts_at": row["starts_at"], "ends_at": row["ends_at"], "status": row["status"],
        "end_reason": row["end_reason"], "sold": row["sold"],
    }


def order_dict(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": row["id"], "reservation_id": row["reservation_id"], "user_id": row["user_id"],
            "deal_id": row["deal_id"], "show_id": row["show_id"], "qty": row["qty"],
            "price_cents": row["price_cents"], "currency": row["currency"],
            "status": row["status"], "payment_ref": row["payment_ref"],
            "created_at": row["created_at"]}


def reservation_id(deal_id: str) -> str:
    return f"r.{deal_id}.{secrets.token_hex(8)}"


def deal_of_reservation(rid: str) -> str:
    parts = rid.split(".")
    if len(parts) != 3 or parts[0] != "r" or not parts[1] or len(rid) > 100:
        raise NotFound("unknown reservation")
    return parts[1]


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def is_redis_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError | ConnectionError | TimeoutError) or \
        type(exc).__module__.startswith("redis")


@contextlib.contextmanager
def store_outage() -> Iterator[None]:
    """A Redis outage inside the block is `unavailable` (clients retry), never `internal`."""
    try:
        yield
    except LiveCoreError:
        raise
    except Exception as exc:
        if is_redis_error(exc):
            raise Unavailable("reservation store unavailable", retry_after_ms=500) from exc
        raise


@dataclass
class _Claim:
    deal_id: str
    args: list[Any]
    future: asyncio.Future[list[Any]]


@dataclass
class ClaimBatcher:
    """Sends claims to Redis in pipelines: one round trip for many buyers.

    window_s > 0: a claim waits up to window_s for others to join it.
    window_s == 0: adaptive. Claims that arrive in the same event-loop pass
      go together, and while `max_in_flight` batches are already waiting on
      Redis, new claims queue up for the next one. Idle, a claim goes at
      once; busy, batches grow with the load and no timer adds latency.
    window_s < 0: no batching, one FCALL per claim (for benchmarks).
    """

    fns: RedisFunctions
    keys: Keys
    window_s: float
    max_in_flight: int = 4
    pending: list[_Claim] = field(default_factory=list)
    scheduled: bool = False
    # The event loop keeps only weak references to tasks: without these a
    # batch in flight could be collected and its claimers would wait forever.
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)

    def submit(self, deal_id: str, args: list[Any]) -> asyncio.Future[list[Any]]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()
        self.pending.append(_Claim(deal_id, args, fut))
        if self.window_s < 0:
            self._flush()
        elif not self.scheduled:
            self.scheduled = True
            if self.window_s > 0:
                loop.call_later(self.window_s, self._flush)
            else:
                loop.call_soon(self._flush_if_free)
        return fut

    def _flush_if_free(self) -> None:
        if len(self.in_flight) < self.max_in_flight:
            self._flush()
        # else: stay scheduled; the next batch to finish sends these (_done).

    def _flush(self) -> None:
        batch, self.pending, self.scheduled = self.pending, [], False
        if not batch:
            return
        task = asyncio.ensure_future(self._send(batch))
        self.in_flight.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.in_flight.discard(task)
        if self.window_s == 0 and self.scheduled:
            self._flush_if_free()

    async def _send(self, batch: list[_Claim]) -> None:
        try:
            if len(batch) == 1:  # a pipeline of one only adds overhead
                c = batch[0]
                results: list[Any] = [await self.fns.call("lc_claim", self.keys.deal_keys(c.deal_id),
                                                          c.args)]
            else:
                results = await self.fns.call_many(
                    [("lc_claim", self.keys.deal_keys(c.deal_id), c.args) for c in batch])
        except Exception as exc:
            for c in batch:
                if not c.future.done():
                    c.future.set_exception(exc)
            return
        for c, res in zip(batch, results, strict=True):
            if c.future.done():
                continue
            if isinstance(res, Exception):
                c.future.set_exception(res)
            else:
                c.future.set_result(res)


class DealEngine:
    def __init__(self, pool: asyncpg.Pool, redis: Redis, fns: RedisFunctions, keys: Keys,
                 bus: EventBus, *, default_hold_ttl_s: int = 120, claim_window_ms: float = 0.0) -> None:
        self.pool = pool
        self.redis = redis
        self.fns = fns
        self.keys = keys
        self.bus = bus
        self.default_hold_ttl_s = default_hold_ttl_s
        self.batcher = ClaimBatcher(fns, keys, claim_window_ms / 1000)
        self._remaining_push: dict[str, int] = {}
        self._push_tasks: dict[str, asyncio.Task[None]] = {}
        self._static: dict[str, dict[str, Any]] = {}
        self._static_loading: dict[str, asyncio.Future[dict[str, Any]]] = {}

    # ---- launch / read --------------------------------------------------

    async def launch(self, show_id: str, data: DealIn) -> dict[str, Any]:
        now = now_ms()
        hold_ttl_s = data.hold_ttl_s or self.default_hold_ttl_s
        deal_id = new_id("d")
        async with self.pool.acquire() as conn, conn.transaction():
            show = await conn.fetchrow("SELECT status FROM shows WHERE id=$1 FOR UPDATE", show_id)
            if show is None:
                raise NotFound("unknown show")
            if show["status"] == "ended":
                raise ShowEnded()
            product = await conn.fetchrow(
                "UPDATE products SET stock = stock - $2 WHERE id=$1 AND stock >= $2"
                " RETURNING currency", data.product_id, data.quantity)
            if product is None:
                exists = await conn.fetchval("SELECT 1 FROM products WHERE id=$1", data.product_id)
                if not exists:
                    raise NotFound("unknown product", field="product_id")
                raise InsufficientStock()
            try:
                row = await conn.fetchrow(
                    f"INSERT INTO deals (id, show_id, product_id, price_cents, currency, quantity,"
                    f" per_user_limit, hold_ttl_s, starts_at, ends_at)"
                    f" VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) RETURNING {DEAL_COLS}",
                    deal_id, show_id, data.product_id, data.price_cents, product["currency"],
                    data.quantity, data.per_user_limit, hold_ttl_s, now, now + data.duration_s * 1000)
            except asyncpg.UniqueViolationError:
                raise DealAlreadyLive() from None
        assert row is not None
        await self._init_redis(row, [], rebuilt=False)
        deal = deal_dict(row)
        await self.bus.publish(show_id, "deal.started", {"deal": public_deal(deal)})
        return deal

    async def _init_redis(self, row: asyncpg.Record, bought: list[asyncpg.Record], *,
                          rebuilt: bool) -> None:
        """Create the deal's Redis state unless it exists. `bought` = units per
        user from PG orders, so the per-user limit survives Redis data loss."""
        now = now_ms()
        live = row["status"] == "live" and now < row["ends_at"]
        fields: dict[str, Any] = {
            "status": "live" if live else "ended",
            "reason": row["end_reason"] or ("" if live else "expired"),
            "remaining": max(0, row["quantity"] - row["sold"]) if live else 0,
            "quantity": row["quantity"], "sold": row["sold"], "limit": row["per_user_limit"],
            "price_cents": row["price_cents"], "currency": row["currency"],
            "show_id": row["show_id"], "product_id": row["product_id"],
            "starts_at": row["starts_at"], "ends_at": row["ends_at"],
            "hold_ttl_ms": row["hold_ttl_s"] * 1000, "rebuilt": int(rebuilt),
            # The PG snapshot `sold` was read from: lc_confirm_finish uses it to
            # tell orders the snapshot counted from orders that committed later.
            "sold_base": row["sold"],
        }
        args: list[Any] = [2 * len(fields)]
        for k, v in fields.items():
            args += [k, v]
        for b in bought:
            args += [b["user_id"], b["units"]]
        if await self.fns.call("lc_init_deal", self.keys.deal_keys(row["id"])[:4], args):
            if rebuilt:
                log.warning("deal %s rebuilt from PostgreSQL (remaining=%s)", row["id"], fields["remaining"])

    async def _deal_row(self, deal_id: str) -> asyncpg.Record:
        row = await self.pool.fetchrow(f"SELECT {DEAL_COLS} FROM deals WHERE id=$1", deal_id)
        if row is None:
            raise NotFound("unknown deal")
        return row

    async def rebuild(self, deal_id: str) -> None:
        """Recreate a deal's Redis state from PostgreSQL (no-op if it exists)."""
        # One snapshot, so that `sold` and the per-user sums agree.
        async with self.pool.acquire() as conn, \
                conn.transaction(isolation="repeatable_read", readonly=True):
            row = await conn.fetchrow(f"SELECT {DEAL_COLS} FROM deals WHERE id=$1", deal_id)
            if row is None:
                raise NotFound("unknown deal")
            bought = await conn.fetch(
                "SELECT user_id, sum(qty)::int AS units FROM orders WHERE deal_id=$1"
                " GROUP BY user_id", deal_id)
        await self._init_redis(row, bought, rebuilt=True)

    async def get(self, deal_id: str) -> dict[str, Any]:
        row = await self._deal_row(deal_id)
        remaining = await self.redis.hget(self.keys.deal(deal_id, "state"), "remaining")
        return deal_dict(row, int(remaining) if remaining is not None and row["status"] == "live" else None)

    async def live_deal(self, show_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(
            f"SELECT {DEAL_COLS} FROM deals WHERE show_id=$1 AND status='live'", show_id)
        if row is None:
            return None
        st = await self.redis.hmget(self.keys.deal(row["id"], "state"), ["remaining", "status"])
        if st[1] == "ended":
            return None
        return deal_dict(row, int(st[0]) if st[0] is not None else None)

    # ---- claim ------------------------------------------------------------

    async def claim(self, show_id: str | None, deal_id: str, user_id: str, qty: int = 1,
                    idempotency_key: str | None = None) -> dict[str, Any]:
        """Hold `qty` units for `user_id`. Raises SoldOut, DealNotLive, LimitReached…"""
        if qty < 1:
            raise ValidationFailed("qty must be at least 1", field="qty")
        # Check the show before touching Redis: a claim through the wrong show
        # must not hold units it then refuses to hand out.
        static = await self._deal_static(deal_id)
        if show_id is not None and static["show_id"] != show_id:
            raise NotFound("unknown deal")
        rid = reservation_id(deal_id)
        ikey = f"{user_id}:{idempotency_key}" if idempotency_key else ""
        fp = fingerprint(deal_id, qty) if idempotency_key else ""
        args: list[Any] = [user_id, qty, rid, ikey, fp]
        res = await self._call_rebuilding(deal_id, lambda: self.batcher.submit(deal_id, args))
        if res[0] == "missing":
            raise NotFound("unknown deal")
        if res[0] == "err":
            code = str(res[1])
            CLAIMS.labels(code).inc()
            RECORDER.count(static["show_id"], f"claims.{code}", dim=deal_id)
            raise CLAIM_ERRORS.get(code, Conflict)()
        CLAIMS.labels("ok").inc()
        _, rid, q, exp, remaining = res[:5]
        if len(res) == 5:
            # A replayed result carries the count of its time: don't push it
            # (nor count it as a new claim).
            self._note_remaining(static["show_id"], deal_id, int(remaining))
            RECORDER.count(static["show_id"], "claims.ok", dim=deal_id)
        return {"id": rid, "deal_id": deal_id, "qty": int(q), "price_cents": static["price_cents"],
                "currency": static["currency"], "expires_at": int(exp), "status": "held"}

    async def _call_rebuilding(self, deal_id: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run a deal script; if Redis no longer has the deal ("missing": data
        lost), rebuild it from PostgreSQL once and run the script again."""
        with store_outage():
            res = await call()
            if res[0] == "missing":
                await self.rebuild(deal_id)
                res = await call()
        return res

    async def _deal_static(self, deal_id: str) -> dict[str, Any]:
        """A deal's immutable fields, cached; concurrent misses share one query
        (a burst of claims on a cold node would otherwise drain the pool)."""
        cached = self._static.get(deal_id)
        if cached is not None:
            return cached
        loading = self._static_loading.get(deal_id)
        if loading is None:
            loading = asyncio.ensure_future(self._load_static(deal_id))
            self._static_loading[deal_id] = loading
            loading.add_done_callback(lambda _f: self._static_loading.pop(deal_id, None))
        # shield: one cancelled claimer must not cancel the others' lookup.
        return await asyncio.shield(loading)

    async def _load_static(self, deal_id: str) -> dict[str, Any]:
        row = await self._deal_row(deal_id)
        static = {"show_id": row["show_id"], "price_cents": row["price_cents"],
                  "currency": row["currency"]}
        if len(self._static) >= STATIC_CACHE_MAX:
            self._static.clear()
        self._static[deal_id] = static
        return static

    def _note_remaining(self, show_id: str, deal_id: str, remaining: int) -> None:
        """Coalesce remaining-count changes into at most ~10 volatile updates/s."""
        self._remaining_push[deal_id] = max(0, remaining)
        if deal_id not in self._push_tasks:
            self._push_tasks[deal_id] = asyncio.ensure_future(self._push_remaining(show_id, deal_id))

    async def _push_remaining(self, show_id: str, deal_id: str) -> None:
        try:
            await asyncio.sleep(0.1)
            value = self._remaining_push.pop(deal_id, None)
            if value is not None:
                await self.bus.publish_volatile(show_id, {"deal_id": deal_id, "remaining": value})
        except Exception:
            log.debug("remaining push failed", exc_info=True)
        finally:
            self._push_tasks.pop(deal_id, None)

    # ---- confirm / release -----------------------------------------------

    async def _order_by_reservation(self, rid: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow("SELECT * FROM orders WHERE reservation_id=$1", rid)

    async def confirm(self, rid: str, user_id: str, payment_ref: str) -> dict[str, Any]:
        deal_id = deal_of_reservation(rid)
        dkeys = self.keys.deal_keys(deal_id)
        res = await self._call_rebuilding(deal_id, lambda: self.fns.call(
            "lc_confirm_begin", dkeys[:4], [rid, user_id, CONFIRM_LEASE_MS]))
        if res[0] == "sold" or (res[0] == "err" and res[1] == "not_found"):
            existing = await self._order_by_reservation(rid)
            if existing is not None:
                if existing["user_id"] != user_id:
                    raise Forbidden("not your reservation")
                return order_dict(existing)
            if res[0] == "err":
                rebuilt = await self.redis.hget(dkeys[0], "rebuilt")
                if rebuilt == "1":
                    raise ReservationExpired("the reservation was lost with the reservation store")
                raise NotFound("unknown reservation")
        if res[0] == "err":
            code = res[1]
            if code == "forbidden":
                raise Forbidden("not your reservation")
            if code == "reservation_expired":
                raise ReservationExpired()
            raise ReservationNotActive()
        qty = int(res[1])
        try:
            order, pg_sold = await self._record_order(rid, deal_id, user_id, qty, payment_ref)
        except ReservationExpired:
            await self.fns.call("lc_expire_stuck", dkeys[:4], [rid])
            raise
        except PG_UNCERTAIN as exc:
            # The commit may or may not have happened, so the hold stays
            # "confirming": a retry of this confirm finds or writes the order,
            # and after the lease the sweeper settles it from PostgreSQL.
            # (Putting it back to "held" could let it expire with an order.)
            raise Unavailable("order store unavailable", retry_after_ms=1000) from exc
        try:
            _sold, _qty, ended = await self.fns.call(
                "lc_confirm_finish", dkeys[:4], [rid, user_id, qty, pg_sold])
        except Exception:
            # The order is durable: answer with it. The hold stays "confirming"
            # and the sweeper finishes it once the lease runs out.
            log.warning("confirm of %s recorded, Redis finish deferred to the sweeper", rid,
                        exc_info=True)
            ended = 0
        ORDERS.inc()
        if ended:
            await self.finalize(deal_id, "sold_out")
        return order

    async def _record_order(self, rid: str, deal_id: str, user_id: str, qty: int,
                            payment_ref: str) -> tuple[dict[str, Any], int]:
        """Insert the order once. Returns it with deals.sold right after our
        insert, or 0 when another confirm of the same reservation wrote it."""
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    existing = await conn.fetchrow("SELECT * FROM orders WHERE reservation_id=$1", rid)
                    if existing is not None:
                        return order_dict(existing), 0
                    deal = await conn.fetchrow(
                        "UPDATE deals SET sold = sold + $2 WHERE id=$1 AND NOT settled"
                        " AND sold + $2 <= quantity RETURNING show_id, price_cents, currency, sold",
                        deal_id, qty)
                    if deal is None:
                        raise ReservationExpired("the deal no longer has this unit")
                    row = await conn.fetchrow(
                        "INSERT INTO orders (id, reservation_id, deal_id, show_id, user_id, qty,"
                        " price_cents, currency, payment_ref, created_at)"
                        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) RETURNING *",
                        new_id("o"), rid, deal_id, deal["show_id"], user_id, qty,
                        deal["price_cents"], deal["currency"], payment_ref, now_ms())
                    assert row is not None
                    return order_dict(row), int(deal["sold"])
            except asyncpg.UniqueViolationError:
                # A concurrent confirm of the same reservation won; ours rolled back.
                existing = await conn.fetchrow("SELECT * FROM orders WHERE reservation_id=$1", rid)
                assert existing is not None
                return order_dict(existing), 0

    async def release(self, rid: str, user_id: str) -> None:
        deal_id = deal_of_reservation(rid)
        dkeys = self.keys.deal_keys(deal_id)
        with store_outage():
            res = await self.fns.call("lc_release", dkeys[:4], [rid, user_id])
        if res[0] == "ok":
            static = await self._deal_static(deal_id)
            self._note_remaining(static["show_id"], deal_id, int(res[1]))
            return
        code = res[1]
        if code == "forbidden":
            raise Forbidden("not your reservation")
        if code == "already_confirmed":
            raise Conflict("the reservation is already confirmed", code_hint="already_confirmed")
        if code == "not_found":
            if await self._order_by_reservation(rid) is not None:
                raise Conflict("the reservation is already confirmed")
            raise NotFound("unknown reservation")
        raise ReservationNotActive()

    # ---- end / sweep / settle -------------------------------------------

    async def cancel(self, show_id: str, deal_id: str) -> dict[str, Any]:
        row = await self._deal_row(deal_id)
        if row["show_id"] != show_id:
            raise NotFound("unknown deal")
        if row["status"] != "live":
            raise DealNotLive("the deal has already ended")
        state = self.keys.deal(deal_id, "state")
        with store_outage():
            # Redis first: from here on no claim succeeds. 0 = already ended
            # there (sold out, time) or the state is gone (rebuild, then end).
            if await self.fns.call("lc_end_deal", [state], ["cancelled"]) == 0 \
                    and not await self.redis.exists(state):
                await self.rebuild(deal_id)
                await self.fns.call("lc_end_deal", [state], ["cancelled"])
        await self.finalize(deal_id, None)
        return await self.get(deal_id)

    async def finalize(self, deal_id: str, reason: str | None) -> None:
        """Record the end in PG; exactly one caller wins and announces it."""
        if reason is None:
            stored = await self.redis.hget(self.keys.deal(deal_id, "state"), "reason")
            reason = str(stored) if stored else "expired"
        row = await self.pool.fetchrow(
            "UPDATE deals SET status='ended', end_reason=$2, ended_at=$3"
            " WHERE id=$1 AND status='live' RETURNING show_id, sold", deal_id, reason, now_ms())
        if row is not None:
            await self.bus.publish(row["show_id"], "deal.ended",
                                   {"deal_id": deal_id, "reason": reason, "sold": row["sold"]})

    async def settle(self, deal_id: str) -> int | None:
        """Return the unsold units to product stock, once. None if already settled."""
        value = await self.pool.fetchval(
            "WITH d AS (UPDATE deals SET settled=true WHERE id=$1 AND status='ended' AND NOT settled"
            " RETURNING product_id, quantity - sold AS unsold)"
            " UPDATE products p SET stock = stock + d.unsold FROM d WHERE p.id = d.product_id"
            " RETURNING d.unsold", deal_id)
        if value is not None:
            for key in self.keys.deal_keys(deal_id):
                await self.redis.expire(key, DEAL_KEY_TTL_S)
        return None if value is None else int(value)

    async def sweep_once(self) -> None:
        rows = await self.pool.fetch("SELECT id, status FROM deals WHERE NOT settled")
        for row in rows:
            try:
                await self._sweep_deal(row["id"], row["status"])
            except Exception:
                log.exception("sweep of deal %s failed", row["id"])

    async def _sweep_deal(self, deal_id: str, pg_status: str) -> None:
        dkeys = self.keys.deal_keys(deal_id)
        res = await self.fns.call("lc_sweep", dkeys[:4], [500])
        if res[4] == "missing":
            await self.rebuild(deal_id)
            return
        ended_now, remaining, holds_left, expired, status = res[:5]
        for rid in res[5:]:
            order = await self._order_by_reservation(rid)
            if order is not None:
                # The hold is still in Redis, so pg_sold (0) is not needed.
                await self.fns.call("lc_confirm_finish", dkeys[:4],
                                    [rid, order["user_id"], order["qty"], 0])
            else:
                await self.fns.call("lc_expire_stuck", dkeys[:4], [rid])
        if expired and status == "live":
            static = await self._deal_static(deal_id)
            self._note_remaining(static["show_id"], deal_id, int(remaining))
        if status == "ended":
            if ended_now or pg_status == "live":
                await self.finalize(deal_id, None)
            if int(holds_left) == 0:
                await self.settle(deal_id)

    async def orders_for_show(self, show_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT * FROM orders WHERE show_id=$1 ORDER BY created_at, id LIMIT $2", show_id, limit)
        return [order_dict(r) for r in rows]

    async def stats(self, show_id: str) -> dict[str, int]:
        row = await self.pool.fetchrow(
            "SELECT count(*) AS orders, coalesce(sum(qty * price_cents), 0) AS gmv"
            " FROM orders WHERE show_id=$1", show_id)
        assert row is not None
        return {"orders": int(row["orders"]), "gmv_cents": int(row["gmv"])}


def public_deal(deal: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "product_id", "price_cents", "currency", "quantity", "remaining",
            "per_user_limit", "starts_at", "ends_at", "hold_ttl_s", "status")
    return {k: deal[k] for k in keys if k in deal}
