"""Redis data loss, on a Redis of our own: the engine rebuilds from
PostgreSQL and never oversells. Also the repair paths of lc_confirm_finish,
driven step by step through the engine's own calls."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from livecore.deals import CONFIRM_LEASE_MS, DealEngine
from livecore.errors import LimitReached, LiveCoreError, ReservationExpired, SoldOut
from livecore.services import Services
from tests.engine.helpers import (
    deal_in,
    deal_row,
    make_show,
    orders_of,
    redis_accounting,
    stock_of,
)


async def try_claim(engine: DealEngine, show_id: str, deal_id: str, user: str,
                    qty: int = 1) -> dict[str, object] | LiveCoreError:
    try:
        return await engine.claim(show_id, deal_id, user, qty)
    except LiveCoreError as exc:
        return exc


def outcome(results: list[dict[str, object] | LiveCoreError]) -> Counter[str]:
    return Counter(r.code if isinstance(r, LiveCoreError) else "ok" for r in results)


async def check_accounting(svc: Services, deal_id: str) -> None:
    """Redis and PostgreSQL agree, and nothing is oversold."""
    row = await deal_row(svc.pool, deal_id)
    orders = await orders_of(svc.pool, deal_id)
    assert row["sold"] == sum(o["qty"] for o in orders) <= row["quantity"]
    await svc.deals.rebuild(deal_id)  # what the next claim would do if Redis lost it
    acc = await redis_accounting(svc, deal_id)
    assert acc["sold"] == row["sold"]
    if acc["state"]["status"] == "live":
        assert acc["remaining"] + acc["held"] + acc["sold"] == row["quantity"], acc
    assert acc["held"] + acc["sold"] <= row["quantity"]
    bought = Counter[str]()
    for o in orders:
        bought[o["user_id"]] += o["qty"]
    for user in set(bought) | set(acc["held_by"]) | set(acc["users"]):
        units = bought[user] + acc["held_by"].get(user, 0)
        assert acc["users"].get(user, 0) == units <= row["per_user_limit"], (user, acc)


async def test_flushall_mid_deal_rebuilds_without_overselling(iso_services: Services) -> None:
    svc, engine = iso_services, iso_services.deals
    show_id, product_id = await make_show(svc, stock=12)
    deal = await engine.launch(show_id, deal_in(product_id, 10, limit=2))
    a = await engine.claim(show_id, deal["id"], "alice", 2)
    await engine.confirm(a["id"], "alice", "pay-a")
    b = await engine.claim(show_id, deal["id"], "bob", 2)
    await engine.confirm(b["id"], "bob", "pay-b")
    lost = [await engine.claim(show_id, deal["id"], f"u{i}") for i in range(3)]
    await check_accounting(svc, deal["id"])

    await svc.redis.flushall()

    burst = await asyncio.gather(*[try_claim(engine, show_id, deal["id"], f"n{i}") for i in range(40)])
    assert outcome(burst) == {"ok": 6, "sold_out": 34}  # 10 - 4 sold; lost holds are void
    with pytest.raises(LimitReached):  # per-user counts came back from the orders
        await engine.claim(show_id, deal["id"], "alice")
    for hold, user in zip(lost, ("u0", "u1", "u2"), strict=True):
        with pytest.raises(ReservationExpired):
            await engine.confirm(str(hold["id"]), user, "pay")
    await check_accounting(svc, deal["id"])
    winners = [(r, f"n{i}") for i, r in enumerate(burst) if not isinstance(r, LiveCoreError)]
    for hold, user in winners:
        await engine.confirm(str(hold["id"]), user, "pay")
    row = await deal_row(svc.pool, deal["id"])
    assert (row["sold"], row["status"], row["end_reason"]) == (10, "ended", "sold_out")
    await engine.sweep_once()
    assert (await deal_row(svc.pool, deal["id"]))["settled"]
    assert await stock_of(svc.pool, product_id) == 2


async def test_flushall_during_a_burst_never_oversells(iso_services: Services) -> None:
    svc, engine = iso_services, iso_services.deals
    show_id, product_id = await make_show(svc, stock=30)
    deal = await engine.launch(show_id, deal_in(product_id, 30))

    confirmed = 0
    reached = {5: asyncio.Event(), 15: asyncio.Event()}  # flush after this many orders

    async def buy(i: int) -> None:
        nonlocal confirmed
        try:
            hold = await engine.claim(show_id, deal["id"], f"b{i}")
            await engine.confirm(str(hold["id"]), f"b{i}", f"pay-{i}")
            confirmed += 1
            for threshold, event in reached.items():
                if confirmed >= threshold:
                    event.set()
        except (SoldOut, ReservationExpired):
            pass

    async def buyers() -> None:
        await asyncio.gather(*[buy(i) for i in range(200)])
        for event in reached.values():  # never leave a flusher waiting
            event.set()

    flushes = 0

    async def flush_at(threshold: int) -> None:
        nonlocal flushes
        await reached[threshold].wait()
        await svc.redis.flushall()
        flushes += 1

    await asyncio.gather(buyers(), flush_at(5), flush_at(15))
    assert flushes == 2
    await check_accounting(svc, deal["id"])
    row = await deal_row(svc.pool, deal["id"])
    assert row["sold"] <= 30
    # Whatever was lost in flight comes back for later buyers: exactly 30 in the end.
    more = await asyncio.gather(*[try_claim(engine, show_id, deal["id"], f"c{i}") for i in range(60)])
    assert outcome(more)["ok"] == 30 - row["sold"]
    for i, hold in enumerate(more):
        if not isinstance(hold, LiveCoreError):
            await engine.confirm(str(hold["id"]), f"c{i}", "pay")
    assert (await deal_row(svc.pool, deal["id"]))["sold"] == 30
    assert len(await orders_of(svc.pool, deal["id"])) == 30


async def test_order_committed_after_a_rebuild_is_counted(iso_services: Services) -> None:
    """Redis loses a hold between confirm_begin and the order's commit, and
    the rebuild's PostgreSQL snapshot misses the order: lc_confirm_finish
    must take the units out of `remaining`, or one unit too many is held."""
    svc, engine = iso_services, iso_services.deals
    show_id, product_id = await make_show(svc, stock=5)
    deal = await engine.launch(show_id, deal_in(product_id, 5, limit=2))
    dkeys = svc.keys.deal_keys(deal["id"])
    hold = await engine.claim(show_id, deal["id"], "carol", 2)
    rid = str(hold["id"])
    assert (await svc.fns.call("lc_confirm_begin", dkeys[:4], [rid, "carol", CONFIRM_LEASE_MS]))[0] == "go"
    await svc.redis.flushall()
    await engine.rebuild(deal["id"])  # snapshot: sold = 0
    _order, pg_sold = await engine._record_order(rid, deal["id"], "carol", 2, "pay")
    assert pg_sold == 2
    await svc.fns.call("lc_confirm_finish", dkeys[:4], [rid, "carol", 2, pg_sold])
    await svc.fns.call("lc_confirm_finish", dkeys[:4], [rid, "carol", 2, pg_sold])  # retried: once
    await check_accounting(svc, deal["id"])
    burst = await asyncio.gather(*[try_claim(engine, show_id, deal["id"], f"d{i}") for i in range(10)])
    assert outcome(burst) == {"ok": 3, "sold_out": 7}
    with pytest.raises(LimitReached):
        await engine.claim(show_id, deal["id"], "carol")


async def test_order_committed_before_a_rebuild_is_not_counted_twice(iso_services: Services) -> None:
    svc, engine = iso_services, iso_services.deals
    show_id, product_id = await make_show(svc, stock=5)
    deal = await engine.launch(show_id, deal_in(product_id, 5))
    dkeys = svc.keys.deal_keys(deal["id"])
    rid = str((await engine.claim(show_id, deal["id"], "dan"))["id"])
    await svc.fns.call("lc_confirm_begin", dkeys[:4], [rid, "dan", CONFIRM_LEASE_MS])
    _order, pg_sold = await engine._record_order(rid, deal["id"], "dan", 1, "pay")
    await svc.redis.flushall()
    await engine.rebuild(deal["id"])  # snapshot: sold = 1, already counted
    await svc.fns.call("lc_confirm_finish", dkeys[:4], [rid, "dan", 1, pg_sold])
    await check_accounting(svc, deal["id"])
    assert (await redis_accounting(svc, deal["id"]))["remaining"] == 4


async def test_order_committed_after_its_lease_ran_out(iso_services: Services) -> None:
    """PostgreSQL was slower than the confirm lease: the sweeper gave the units
    back, then the order committed. The units must be taken again."""
    svc, engine = iso_services, iso_services.deals
    show_id, product_id = await make_show(svc, stock=3)
    deal = await engine.launch(show_id, deal_in(product_id, 3))
    dkeys = svc.keys.deal_keys(deal["id"])
    rid = str((await engine.claim(show_id, deal["id"], "erin"))["id"])
    await svc.fns.call("lc_confirm_begin", dkeys[:4], [rid, "erin", CONFIRM_LEASE_MS])
    assert await svc.fns.call("lc_expire_stuck", dkeys[:4], [rid]) == 1  # what the sweeper does
    assert (await redis_accounting(svc, deal["id"]))["remaining"] == 3
    _order, pg_sold = await engine._record_order(rid, deal["id"], "erin", 1, "pay")
    await svc.fns.call("lc_confirm_finish", dkeys[:4], [rid, "erin", 1, pg_sold])
    await check_accounting(svc, deal["id"])
    burst = await asyncio.gather(*[try_claim(engine, show_id, deal["id"], f"e{i}") for i in range(5)])
    assert outcome(burst) == {"ok": 2, "sold_out": 3}


async def test_function_library_lost_mid_deal(iso_services: Services) -> None:
    """A Redis restart without persistence also loses the functions: the next
    batch reloads them and each claim still runs exactly once."""
    svc, engine = iso_services, iso_services.deals
    show_id, product_id = await make_show(svc, stock=5)
    deal = await engine.launch(show_id, deal_in(product_id, 5))
    await svc.redis.function_flush()
    burst = await asyncio.gather(*[try_claim(engine, show_id, deal["id"], f"f{i}") for i in range(20)])
    assert outcome(burst) == {"ok": 5, "sold_out": 15}
    await check_accounting(svc, deal["id"])


async def test_negative_qty_is_refused_below_the_api(iso_services: Services) -> None:
    """The claim function itself refuses qty < 1 (a negative claim would mint units)."""
    svc, engine = iso_services, iso_services.deals
    show_id, product_id = await make_show(svc, stock=2)
    deal = await engine.launch(show_id, deal_in(product_id, 2))
    for qty in (0, -3):
        with pytest.raises(LiveCoreError) as err:
            await engine.claim(show_id, deal["id"], "gus", qty)
        assert err.value.code == "validation_error"
        raw = await svc.fns.call("lc_claim", svc.keys.deal_keys(deal["id"]), ["gus", qty, "r.x.y", "", ""])
        assert raw == ["err", "invalid_qty"]
    assert (await redis_accounting(svc, deal["id"]))["remaining"] == 2
