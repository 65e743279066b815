"""Shared helpers of the engine tests: HTTP calls, PostgreSQL checks, a clock."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx

from livecore.ids import new_id, now_ms
from livecore.models import DealIn
from livecore.services import Services
from tests.support import ADMIN, mint

AUTH = {"authorization": f"Bearer {ADMIN}"}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def viewer(show_id: str, sub: str | None = None) -> tuple[str, str]:
    """(user id, token) of a fresh viewer of `show_id`."""
    sub = sub or f"v-{uuid.uuid4().hex[:12]}"
    return sub, mint("viewer", show_id, sub)


async def launch(http: httpx.AsyncClient, show_id: str, product_id: str, *, quantity: int,
                 per_user_limit: int = 1, duration_s: int = 600, hold_ttl_s: int | None = None,
                 price_cents: int = 500) -> dict[str, Any]:
    body: dict[str, Any] = {"product_id": product_id, "price_cents": price_cents,
                            "quantity": quantity, "duration_s": duration_s,
                            "per_user_limit": per_user_limit}
    if hold_ttl_s is not None:
        body["hold_ttl_s"] = hold_ttl_s
    resp = await http.post(f"/api/v1/shows/{show_id}/deals", headers=AUTH, json=body)
    assert resp.status_code == 201, resp.text
    deal: dict[str, Any] = resp.json()
    return deal


async def claim(http: httpx.AsyncClient, show_id: str, deal_id: str, token: str, *,
                key: str | None = None, qty: int | None = None,
                body: Any = None) -> httpx.Response:
    headers = bearer(token)
    if key is not None:
        headers["idempotency-key"] = key
    if body is None:
        body = {} if qty is None else {"qty": qty}
    return await http.post(f"/api/v1/shows/{show_id}/deals/{deal_id}/claims", headers=headers,
                           json=body)


async def confirm(http: httpx.AsyncClient, rid: str, token: str,
                  payment_ref: str = "pay-1") -> httpx.Response:
    return await http.post(f"/api/v1/reservations/{rid}/confirm", headers=bearer(token),
                           json={"payment_ref": payment_ref})


async def release(http: httpx.AsyncClient, rid: str, token: str) -> httpx.Response:
    return await http.delete(f"/api/v1/reservations/{rid}", headers=bearer(token))


def code(resp: httpx.Response) -> str:
    body = resp.json()
    return str(body["error"]["code"]) if "error" in body else "ok"


HANG_GUARD_S = 30.0


async def eventually(check: Callable[[], Awaitable[bool]], what: str = "condition") -> None:
    """Wait for a background actor (the servers' sweeper) to do its job. The
    guard only turns a hang into a failure; it asserts nothing about speed."""
    deadline = time.monotonic() + HANG_GUARD_S
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {HANG_GUARD_S}s")
        await asyncio.sleep(0.05)


async def wait_past(deadline_ms: int) -> None:
    """Sleep until the wall clock (which Redis' TIME shares here) is past it."""
    await asyncio.sleep(max(0.0, (deadline_ms + 20 - now_ms()) / 1000))
    assert now_ms() > deadline_ms


# ---- in-process setup and PostgreSQL checks ---------------------------------

async def make_show(svc: Services, *, stock: int) -> tuple[str, str]:
    """A product with `stock` units and a live show, straight in PostgreSQL."""
    product_id, show_id = new_id("p"), new_id("s")
    async with svc.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO products (id, sku, name, price_cents, currency, stock, created_at)"
            " VALUES ($1,$2,'Engine test',700,'EUR',$3,$4)",
            product_id, f"ENG-{secrets.token_hex(6)}", stock, now_ms())
        await conn.execute("INSERT INTO shows (id, title, status, created_at) VALUES ($1,'t','live',$2)",
                           show_id, now_ms())
    return show_id, product_id


def deal_in(product_id: str, quantity: int, *, limit: int = 1, duration_s: int = 3600,
            hold_ttl_s: int | None = None) -> DealIn:
    return DealIn(product_id=product_id, price_cents=700, quantity=quantity, duration_s=duration_s,
                  per_user_limit=limit, hold_ttl_s=hold_ttl_s)


async def stock_of(pool: asyncpg.Pool, product_id: str) -> int:
    return int(await pool.fetchval("SELECT stock FROM products WHERE id=$1", product_id))


async def deal_row(pool: asyncpg.Pool, deal_id: str) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM deals WHERE id=$1", deal_id)
    assert row is not None
    return row


async def orders_of(pool: asyncpg.Pool, deal_id: str) -> list[asyncpg.Record]:
    return list(await pool.fetch("SELECT * FROM orders WHERE deal_id=$1", deal_id))


async def redis_accounting(svc: Services, deal_id: str) -> dict[str, Any]:
    """Redis' view of a deal: remaining, units held (held/confirming), sold,
    and units per user, read from the engine's keys."""
    state_key, users_key, _, holddata_key, _ = svc.keys.deal_keys(deal_id)
    state = await svc.redis.hgetall(state_key)
    held: dict[str, int] = {}
    for raw in (await svc.redis.hgetall(holddata_key)).values():
        qty, _exp, status, user = str(raw).split("|", 3)
        if status in ("held", "confirming"):
            held[user] = held.get(user, 0) + int(qty)
    users = {str(u): int(n) for u, n in (await svc.redis.hgetall(users_key)).items()}
    return {"state": state, "remaining": int(state.get("remaining", 0)),
            "sold": int(state.get("sold", 0)), "held": sum(held.values()),
            "held_by": held, "users": users}
