"""PostgreSQL stopped (fast shutdown) while buyers confirm, then started
again on the same port and data directory.

Held: every confirm answers 201 or 503 `unavailable` with retry_after_ms
(never 500); nothing is half-written (each order row has its `deals.sold`
increment, in one transaction); after PostgreSQL returns, the node's pool
reconnects by itself and retrying each confirm gives exactly one order per
reservation, the same order a 201 already named. Sockets stay up meanwhile and
chat, which needs no PostgreSQL, keeps working.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis

from livecore.db import migrate
from tests.reliability.clients import Client
from tests.reliability.helpers import (
    AUTH,
    RestartablePostgres,
    assert_error_body,
    make_show,
    node_env,
    nodes,
)
from tests.support import Backends, mint

QUANTITY = 50
BUYERS = 30
CONFIRMED_BEFORE = 10
IN_FLIGHT = 5  # confirms sent as the fast shutdown starts: 201 or 503, never anything else


async def test_postgres_stopped_during_confirms(backends: Backends) -> None:
    pg = RestartablePostgres().start()
    prefix = f"pg{uuid.uuid4().hex[:6]}"
    try:
        await migrate(pg.url)
        env = node_env(backends.redis_url, pg.url, prefix, LIVECORE_LOG_LEVEL="warning")
        async with nodes(env) as (node,), httpx.AsyncClient(base_url=node.base_url, timeout=30) as http:
            show_id, product_id = await make_show(http, stock=500)
            deal = await http.post(f"/api/v1/shows/{show_id}/deals", headers=AUTH, json={
                "product_id": product_id, "price_cents": 700, "quantity": QUANTITY, "duration_s": 600,
                "hold_ttl_s": 300})
            deal_id = deal.json()["id"]
            viewer = Client([node.ws_url("viewer", show_id)], mint("viewer", show_id, "pg-chatter"), name="chat")
            watcher = Client([node.ws_url("viewer", show_id)], None, name="watch")
            await viewer.connect()
            await watcher.connect()

            def auth(i: int) -> dict[str, str]:
                return {"authorization": f"Bearer {mint('viewer', show_id, f'pg-buyer-{i}')}"}

            async def confirm(i: int, rid: str) -> httpx.Response:
                # a retry is the same request: same reservation, same idempotency key
                return await http.post(f"/api/v1/reservations/{rid}/confirm",
                                       headers={**auth(i), "idempotency-key": f"confirm-{i}"},
                                       json={"payment_ref": f"pay-{i}"})

            holds: dict[int, str] = {}
            for i in range(BUYERS):
                r = await http.post(f"/api/v1/shows/{show_id}/deals/{deal_id}/claims", headers=auth(i), json={})
                assert r.status_code == 201, r.text
                holds[i] = r.json()["id"]
            first: dict[int, dict[str, Any]] = {}
            for i in range(CONFIRMED_BEFORE):
                r = await confirm(i, holds[i])
                assert r.status_code == 201, r.text
                first[i] = r.json()

            # ---- confirms in flight while PostgreSQL goes down, then more while it is down ----
            answers: dict[int, int] = {}

            async def confirm_and_check(i: int) -> None:
                r = await confirm(i, holds[i])
                answers[i] = r.status_code
                if r.status_code == 201:
                    first[i] = r.json()
                else:
                    assert r.status_code == 503, r.text
                    err = assert_error_body(r)
                    assert err["code"] == "unavailable" and err["retry_after_ms"] > 0, err
                    assert int(r.headers["retry-after"]) >= 1

            down_at: list[float] = []

            async def halt() -> None:
                down_at.append(time.monotonic())
                await asyncio.to_thread(pg.halt)

            in_flight = range(CONFIRMED_BEFORE, CONFIRMED_BEFORE + IN_FLIGHT)
            await asyncio.gather(halt(), *[confirm_and_check(i) for i in in_flight])
            for i in range(CONFIRMED_BEFORE + IN_FLIGHT, BUYERS):  # PostgreSQL is down now
                await confirm_and_check(i)
            assert [answers[i] for i in range(CONFIRMED_BEFORE + IN_FLIGHT, BUYERS)] == \
                [503] * (BUYERS - CONFIRMED_BEFORE - IN_FLIGHT), answers
            # while it is down: /readyz says so, reads answer 503, sockets and chat live on
            assert (await http.get("/readyz")).status_code == 503
            show = await http.get(f"/api/v1/shows/{show_id}")
            assert show.status_code == 503 and assert_error_body(show)["code"] == "unavailable"
            before = watcher.last_seq
            said = await viewer.request("chat.send", text="is the sale still on?")
            assert said["type"] == "ack", said
            await watcher.wait_seq(before + 1)  # delivered once, and acknowledged

            # ---- PostgreSQL back, same data: the same confirms succeed, once --------------
            await asyncio.to_thread(pg.resume)
            down_s = time.monotonic() - down_at[0]
            retries = 0
            for i in range(BUYERS):
                for _ in range(60):
                    r = await confirm(i, holds[i])
                    if r.status_code != 503:
                        break
                    retries += 1
                    await asyncio.sleep(r.json()["error"]["retry_after_ms"] / 1000)
                assert r.status_code == 201, r.text
                if i in first:
                    assert r.json()["id"] == first[i]["id"]  # the order a 201 named, not a second one
                first[i] = r.json()
            assert (await http.get("/readyz")).status_code == 200

            conn = await asyncpg.connect(pg.url)
            try:
                rows = await conn.fetch("SELECT reservation_id, count(*) AS n, sum(qty) AS q FROM orders"
                                        " WHERE deal_id=$1 GROUP BY reservation_id", deal_id)
                sold = await conn.fetchval("SELECT sold FROM deals WHERE id=$1", deal_id)
            finally:
                await conn.close()
            assert sorted(r["reservation_id"] for r in rows) == sorted(holds.values())
            assert all(r["n"] == 1 for r in rows)
            assert sold == sum(r["q"] for r in rows) == BUYERS  # no order without its sold, nor the reverse
            redis = aioredis.Redis.from_url(backends.redis_url, decode_responses=True)
            try:
                state = await redis.hgetall(f"{prefix}:{{deal:{deal_id}}}:state")
            finally:
                await redis.aclose()
            assert int(state["sold"]) == BUYERS and int(state["remaining"]) == QUANTITY - BUYERS
            print(f"\nPostgreSQL stop figures: in_flight={IN_FLIGHT} confirms_while_down={len(answers) - IN_FLIGHT} "
                  f"answered_201={list(answers.values()).count(201)} answered_503={list(answers.values()).count(503)} "
                  f"retries_after_restart={retries} orders={len(rows)} sold={sold} down_s={down_s:.2f}")
            await viewer.close()
            await watcher.close()
    finally:
        pg.stop()
