"""Reservation edge cases over real HTTP on a real server (PROTOCOL §6)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import asyncpg
import httpx
import pytest

from livecore.ids import now_ms
from livecore.services import Services
from tests.engine.helpers import (
    claim,
    code,
    confirm,
    deal_row,
    eventually,
    launch,
    orders_of,
    release,
    stock_of,
    viewer,
    wait_past,
)
from tests.support import WS, Backends, ServerProc, create_show, mint


async def remaining(http: httpx.AsyncClient, show_id: str, deal_id: str) -> int:
    resp = await http.get(f"/api/v1/shows/{show_id}/deals/{deal_id}")
    assert resp.status_code == 200, resp.text
    return int(resp.json()["remaining"])


async def cancel(server: ServerProc, show_id: str, deal_id: str) -> dict[str, Any]:
    host = await WS.open(server.ws_url("host", show_id), mint("host", show_id))
    try:
        return await host.request("deal.cancel", deal_id=deal_id)
    finally:
        await host.close()


# ---- expiry and confirm ------------------------------------------------------

async def test_confirm_after_expiry_is_409_and_units_come_back(http: httpx.AsyncClient) -> None:
    show_id, product_id = await create_show(http)
    deal = await launch(http, show_id, product_id, quantity=2, hold_ttl_s=1)
    _, token = viewer(show_id)
    hold = await claim(http, show_id, deal["id"], token)
    assert hold.status_code == 201
    assert await remaining(http, show_id, deal["id"]) == 1
    await wait_past(hold.json()["expires_at"])
    late = await confirm(http, hold.json()["id"], token)
    assert (late.status_code, code(late)) == (409, "reservation_expired")
    assert await remaining(http, show_id, deal["id"]) == 2
    again = await confirm(http, hold.json()["id"], token)  # still expired, never an order
    assert (again.status_code, code(again)) == (409, "reservation_expired")


async def test_confirmed_hold_is_never_expired_by_the_sweeper(
        http: httpx.AsyncClient, services: Services) -> None:
    show_id, product_id = await create_show(http)
    deal = await launch(http, show_id, product_id, quantity=2, hold_ttl_s=1)
    (_, t1), (_, t2) = viewer(show_id), viewer(show_id)
    a = (await claim(http, show_id, deal["id"], t1)).json()
    b = (await claim(http, show_id, deal["id"], t2)).json()
    order = await confirm(http, a["id"], t1)
    assert order.status_code == 201
    await wait_past(max(a["expires_at"], b["expires_at"]))

    async def b_expired() -> bool:
        return await remaining(http, show_id, deal["id"]) == 1

    # Once the sweeper has given b back, it has also passed a's deadline.
    await eventually(b_expired, "expiry of the unconfirmed hold")
    again = await confirm(http, a["id"], t1, "other-ref")
    assert again.status_code == 201 and again.json() == order.json()
    row = await deal_row(services.pool, deal["id"])
    assert row["sold"] == 1 and len(await orders_of(services.pool, deal["id"])) == 1


async def test_expiry_vs_confirm_race_is_all_or_nothing(http: httpx.AsyncClient,
                                                        services: Services) -> None:
    """Confirms land just before and just after their holds' deadlines while
    the sweepers run: each ends as an order or as an expiry, never both."""
    n = 16
    show_id, product_id = await create_show(http, stock=n)
    deal = await launch(http, show_id, product_id, quantity=n, hold_ttl_s=1)
    buyers = [viewer(show_id) for _ in range(n)]
    holds = [(await claim(http, show_id, deal["id"], tok)).json() for _, tok in buyers]

    async def confirm_at(i: int) -> httpx.Response:
        # From 80 ms before to 80 ms after the deadline, 10 ms apart.
        await asyncio.sleep(max(0.0, (holds[i]["expires_at"] - 80 + 10 * i - now_ms()) / 1000))
        return await confirm(http, holds[i]["id"], buyers[i][1], f"pay-{i}")

    results = await asyncio.gather(*[confirm_at(i) for i in range(n)])
    outcome = Counter((r.status_code, code(r)) for r in results)
    assert set(outcome) <= {(201, "ok"), (409, "reservation_expired")}, outcome
    paid = {holds[i]["id"] for i, r in enumerate(results) if r.status_code == 201}
    orders = await orders_of(services.pool, deal["id"])
    assert {o["reservation_id"] for o in orders} == paid

    async def all_back() -> bool:
        return await remaining(http, show_id, deal["id"]) == n - len(paid)

    await eventually(all_back, "expired units back in the deal")
    assert (await deal_row(services.pool, deal["id"]))["sold"] == len(paid)
    for i, r in enumerate(results):  # a second attempt agrees with the first
        again = await confirm(http, holds[i]["id"], buyers[i][1], f"pay-{i}")
        assert (again.status_code, code(again)) == (r.status_code, code(r))


async def test_double_confirm_returns_the_same_order(http: httpx.AsyncClient,
                                                     services: Services) -> None:
    show_id, product_id = await create_show(http)
    deal = await launch(http, show_id, product_id, quantity=3)
    _, token = viewer(show_id)
    hold = (await claim(http, show_id, deal["id"], token)).json()
    first = await confirm(http, hold["id"], token, "pay-a")
    assert first.status_code == 201
    body = first.json()
    assert {k: body[k] for k in ("reservation_id", "deal_id", "qty", "price_cents", "status")} == \
        {"reservation_id": hold["id"], "deal_id": deal["id"], "qty": 1, "price_cents": 500,
         "status": "paid"}
    second = await confirm(http, hold["id"], token, "pay-b")
    assert second.status_code == 201 and second.json() == body

    _, twin = viewer(show_id)
    other = (await claim(http, show_id, deal["id"], twin)).json()
    racing = await asyncio.gather(*[confirm(http, other["id"], twin, f"p{i}") for i in range(8)])
    assert {r.status_code for r in racing} == {201}
    assert len({r.json()["id"] for r in racing}) == 1
    orders = await orders_of(services.pool, deal["id"])
    assert Counter(o["reservation_id"] for o in orders) == {hold["id"]: 1, other["id"]: 1}
    assert (await deal_row(services.pool, deal["id"]))["sold"] == 2


async def test_release_rules(http: httpx.AsyncClient) -> None:
    show_id, product_id = await create_show(http)
    deal = await launch(http, show_id, product_id, quantity=2)
    _, token = viewer(show_id)
    hold = (await claim(http, show_id, deal["id"], token)).json()
    assert (await release(http, hold["id"], token)).status_code == 204
    assert await remaining(http, show_id, deal["id"]) == 2
    assert (await release(http, hold["id"], token)).status_code == 204  # idempotent, no extra unit
    assert await remaining(http, show_id, deal["id"]) == 2
    after = await confirm(http, hold["id"], token)
    assert (after.status_code, code(after)) == (409, "reservation_not_active")

    kept = (await claim(http, show_id, deal["id"], token)).json()
    assert (await confirm(http, kept["id"], token)).status_code == 201
    late = await release(http, kept["id"], token)
    assert late.status_code == 409
    assert await remaining(http, show_id, deal["id"]) == 1


# ---- deal state, validation, ownership ----------------------------------------

async def test_claims_on_cancelled_and_ended_deals(http: httpx.AsyncClient, server: ServerProc) -> None:
    show_id, product_id = await create_show(http)
    deal = await launch(http, show_id, product_id, quantity=5)
    ack = await cancel(server, show_id, deal["id"])
    assert ack["type"] == "ack" and ack["deal"]["status"] == "ended", ack
    late = await claim(http, show_id, deal["id"], viewer(show_id)[1])
    assert (late.status_code, code(late)) == (409, "deal_not_live")
    twice = await cancel(server, show_id, deal["id"])
    assert twice["type"] == "error" and twice["code"] == "deal_not_live", twice

    timed = await launch(http, show_id, product_id, quantity=5, duration_s=1)
    await wait_past(timed["ends_at"])
    # The claim function checks the clock itself; the sweeper need not have run.
    after = await claim(http, show_id, timed["id"], viewer(show_id)[1])
    assert (after.status_code, code(after)) == (409, "deal_not_live")


@pytest.mark.parametrize("body", [{"qty": 0}, {"qty": -1}, {"qty": 1001}, {"qty": "1"},
                                  {"qty": 1.5}, {"qty": True}])
async def test_bad_qty_is_422(http: httpx.AsyncClient, body: dict[str, Any]) -> None:
    show_id, product_id = await create_show(http)
    deal = await launch(http, show_id, product_id, quantity=5, per_user_limit=3)
    resp = await claim(http, show_id, deal["id"], viewer(show_id)[1], body=body)
    assert (resp.status_code, code(resp)) == (422, "validation_error"), resp.text
    assert await remaining(http, show_id, deal["id"]) == 5


async def test_per_user_limit(http: httpx.AsyncClient) -> None:
    show_id, product_id = await create_show(http)
    deal = await launch(http, show_id, product_id, quantity=10, per_user_limit=2)
    _, token = viewer(show_id)
    over = await claim(http, show_id, deal["id"], token, qty=3)
    assert (over.status_code, code(over)) == (409, "limit_reached")
    two = await claim(http, show_id, deal["id"], token, qty=2)
    assert two.status_code == 201 and two.json()["qty"] == 2
    more = await claim(http, show_id, deal["id"], token)
    assert (more.status_code, code(more)) == (409, "limit_reached")
    assert (await confirm(http, two.json()["id"], token)).status_code == 201
    bought = await claim(http, show_id, deal["id"], token)  # bought units count too
    assert (bought.status_code, code(bought)) == (409, "limit_reached")
    assert await remaining(http, show_id, deal["id"]) == 8


async def test_unknown_and_foreign_ids(http: httpx.AsyncClient) -> None:
    show_id, product_id = await create_show(http)
    other_show, _ = await create_show(http)
    deal = await launch(http, show_id, product_id, quantity=3)
    _, token = viewer(show_id)
    unknown = await claim(http, show_id, "d_000000000000", token)
    assert (unknown.status_code, code(unknown)) == (404, "not_found")
    # A deal of another show: 404, and no unit may stay held by the attempt.
    foreign = await claim(http, other_show, deal["id"], mint("viewer", other_show))
    assert (foreign.status_code, code(foreign)) == (404, "not_found")
    assert await remaining(http, show_id, deal["id"]) == 3
    for rid in ("nonsense", "r.d_000000000000.0011223344556677", f"r.{deal['id']}.0011223344556677"):
        c = await confirm(http, rid, token)
        assert (c.status_code, code(c)) == (404, "not_found"), (rid, c.text)
        r = await release(http, rid, token)
        assert (r.status_code, code(r)) == (404, "not_found"), (rid, r.text)


async def test_another_users_reservation(http: httpx.AsyncClient) -> None:
    show_id, product_id = await create_show(http)
    deal = await launch(http, show_id, product_id, quantity=3)
    _, owner = viewer(show_id)
    _, thief = viewer(show_id)
    hold = (await claim(http, show_id, deal["id"], owner)).json()
    for attempt in (await confirm(http, hold["id"], thief), await release(http, hold["id"], thief)):
        assert (attempt.status_code, code(attempt)) == (403, "forbidden")
    assert await remaining(http, show_id, deal["id"]) == 2
    assert (await confirm(http, hold["id"], owner)).status_code == 201
    stolen = await confirm(http, hold["id"], thief)
    assert (stolen.status_code, code(stolen)) == (403, "forbidden")


async def test_idempotency_keys(http: httpx.AsyncClient) -> None:
    show_id, product_id = await create_show(http)
    deal = await launch(http, show_id, product_id, quantity=2, per_user_limit=2)
    _, token = viewer(show_id)
    first = await claim(http, show_id, deal["id"], token, key="same", qty=1)
    again = await claim(http, show_id, deal["id"], token, key="same", qty=1)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert await remaining(http, show_id, deal["id"]) == 1  # one hold, not two
    mismatch = await claim(http, show_id, deal["id"], token, key="same", qty=2)
    assert (mismatch.status_code, code(mismatch)) == (422, "idempotency_mismatch")

    _, rival = viewer(show_id)  # keys are per user: the same string is another request
    theirs = await claim(http, show_id, deal["id"], rival, key="same")
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]
    _, late = viewer(show_id)
    sold_out = await claim(http, show_id, deal["id"], late, key="late")
    assert (sold_out.status_code, code(sold_out)) == (409, "sold_out")
    # Errors replay too: the same key answers the same even once a unit is free.
    assert (await release(http, theirs.json()["id"], rival)).status_code == 204
    replay = await claim(http, show_id, deal["id"], late, key="late")
    assert (replay.status_code, replay.json()) == (409, sold_out.json())
    fresh = await claim(http, show_id, deal["id"], late, key="fresh")
    assert fresh.status_code == 201


async def test_user_ids_with_separators_cannot_corrupt_holds(http: httpx.AsyncClient) -> None:
    show_id, product_id = await create_show(http)
    deal = await launch(http, show_id, product_id, quantity=3, per_user_limit=3)
    # Shaped like the pre-fix hold encoding "user|qty|expires_at|status".
    sub = "evil|3|99999999999999|held"
    token = mint("viewer", show_id, sub)
    hold = await claim(http, show_id, deal["id"], token)
    assert hold.status_code == 201
    assert (await release(http, hold.json()["id"], token)).status_code == 204
    assert await remaining(http, show_id, deal["id"]) == 3  # not 5
    kept = (await claim(http, show_id, deal["id"], token, qty=2)).json()
    order = await confirm(http, kept["id"], token)
    assert order.status_code == 201 and order.json()["user_id"] == sub
    assert await remaining(http, show_id, deal["id"]) == 1


# ---- end of a deal -------------------------------------------------------------

async def test_unsold_units_return_to_stock_exactly_once(http: httpx.AsyncClient, server: ServerProc,
                                                         services: Services) -> None:
    show_id, product_id = await create_show(http, stock=20)
    deal = await launch(http, show_id, product_id, quantity=8, per_user_limit=5, hold_ttl_s=1)
    assert await stock_of(services.pool, product_id) == 12
    _, buyer = viewer(show_id)
    hold = (await claim(http, show_id, deal["id"], buyer, qty=3)).json()
    assert (await confirm(http, hold["id"], buyer)).status_code == 201
    _, lazy = viewer(show_id)
    assert (await claim(http, show_id, deal["id"], lazy, qty=2)).status_code == 201  # expires
    assert (await cancel(server, show_id, deal["id"]))["type"] == "ack"

    async def settled() -> bool:
        return bool((await deal_row(services.pool, deal["id"]))["settled"])

    await eventually(settled, "settlement after the last hold expired")
    assert await stock_of(services.pool, product_id) == 17  # 20 - 3 sold
    # Every node's sweeper and any number of direct calls: still once.
    assert await asyncio.gather(*[services.deals.settle(deal["id"]) for _ in range(5)]) == [None] * 5
    assert await stock_of(services.pool, product_id) == 17
    row = await deal_row(services.pool, deal["id"])
    assert (row["status"], row["end_reason"], row["sold"]) == ("ended", "cancelled", 3)


async def test_deal_started_and_ended_events(http: httpx.AsyncClient, server: ServerProc,
                                             server_b: ServerProc) -> None:
    show_id, product_id = await create_show(http)
    watcher = await WS.open(server_b.ws_url("viewer", show_id), mint("viewer", show_id))
    try:
        deal = await launch(http, show_id, product_id, quantity=1)
        started = await watcher.wait_for("deal.started")
        assert started["deal"]["id"] == deal["id"] and started["deal"]["remaining"] == 1
        _, token = viewer(show_id)
        hold = (await claim(http, show_id, deal["id"], token)).json()
        assert (await confirm(http, hold["id"], token)).status_code == 201
        ended = await watcher.wait_for("deal.ended")
        assert (ended["deal_id"], ended["reason"], ended["sold"]) == (deal["id"], "sold_out", 1)

        second = await launch(http, show_id, product_id, quantity=2)
        assert (await watcher.wait_for("deal.started"))["deal"]["id"] == second["id"]
        assert (await cancel(server, show_id, second["id"]))["type"] == "ack"
        ended = await watcher.wait_for("deal.ended")
        assert (ended["deal_id"], ended["reason"]) == (second["id"], "cancelled")
    finally:
        await watcher.close()


async def test_pg_is_the_record(http: httpx.AsyncClient, backends: Backends) -> None:
    """Orders are in PostgreSQL when confirm answers (read with a fresh connection)."""
    show_id, product_id = await create_show(http)
    deal = await launch(http, show_id, product_id, quantity=1)
    _, token = viewer(show_id)
    hold = (await claim(http, show_id, deal["id"], token)).json()
    order = (await confirm(http, hold["id"], token)).json()
    conn = await asyncpg.connect(backends.database_url)
    try:
        row = await conn.fetchrow("SELECT id, qty, status FROM orders WHERE reservation_id=$1", hold["id"])
    finally:
        await conn.close()
    assert row is not None and (row["id"], row["qty"], row["status"]) == (order["id"], 1, "paid")
