"""The outbox and the delivery worker in-process, on a real PostgreSQL and a
real HTTP receiver: the domain's own writes (DealEngine, Shows) enqueue the
events through the migration's triggers. No gateway hooks needed."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest_asyncio

from livecore.models import DealIn, ProductIn, ShowIn
from livecore.services import Services
from livecore.settings import Settings
from livecore.webhooks import EVENTS, WebhookSettings, WebhookStore, WebhookWorker, enqueue_webhook
from tests.analytics.support import Receiver, eventually
from tests.support import SECRET, Backends


def fast(**over: object) -> WebhookSettings:
    values: dict[str, object] = {"allow_private": True, "poll_interval_s": 0.05, "backoff_base_s": 0.1,
                                 "backoff_cap_s": 0.3, "timeout_s": 3.0}
    values.update(over)
    return WebhookSettings(**values)  # type: ignore[arg-type]


def new_secret() -> str:
    return "whsec_" + secrets.token_hex(16)


@pytest_asyncio.fixture
async def services(backends: Backends, db_url: str) -> AsyncIterator[Services]:
    svc = await Services.create(Settings(redis_url=backends.redis_url, database_url=db_url,
                                         secret=SECRET, redis_prefix=f"lcw{uuid.uuid4().hex[:6]}"))
    yield svc
    await svc.aclose()


async def delivery_rows(pool: asyncpg.Pool, endpoint_id: str) -> list[asyncpg.Record]:
    return list(await pool.fetch(
        "SELECT d.*, e.type FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id"
        " WHERE d.endpoint_id=$1 ORDER BY d.id", endpoint_id))


async def test_domain_writes_emit_signed_events(services: Services, pool: asyncpg.Pool) -> None:
    everything = Receiver(new_secret()).start()
    shows_only = Receiver(new_secret()).start()
    store = WebhookStore(pool)
    ep = await store.create(everything.url, list(EVENTS), everything.secret, "all",
                            allow_private=True)
    ep2 = await store.create(shows_only.url, ["show.started", "show.ended"], shows_only.secret,
                             None, allow_private=True)
    assert "secret" not in ep and ep["events"] == sorted(EVENTS)
    worker = WebhookWorker(pool, fast(), "w1")
    worker.start()
    try:
        show = await services.shows.create(ShowIn(title="Webhook show"))
        product = await services.catalogue.create_product(ProductIn(
            sku=f"W-{secrets.token_hex(5)}", name="Kettle", price_cents=2500, currency="EUR", stock=3))
        await services.shows.set_status(show["id"], "live")
        deal = await services.deals.launch(show["id"], DealIn(
            product_id=product["id"], price_cents=1999, quantity=1, duration_s=600))
        hold = await services.deals.claim(show["id"], deal["id"], "buyer-1")
        order = await services.deals.confirm(hold["id"], "buyer-1", "pay-42")  # sells out
        await services.shows.set_status(show["id"], "ended")

        async def all_delivered() -> bool:
            return len(everything.delivered()) >= 5 and len(shows_only.delivered()) >= 2

        await eventually(all_delivered, "five + two deliveries")
    finally:
        await worker.stop()
        everything.stop()
        shows_only.stop()

    got = everything.delivered()
    assert all(r.signature_ok for r in got + shows_only.delivered())
    by_type = {r.headers["x-livecore-event"]: r for r in got}
    assert sorted(by_type) == sorted(EVENTS)
    assert len({r.event_id for r in got}) == 5
    for r in got:
        body = r.json
        assert body["id"] == r.event_id and body["type"] == r.headers["x-livecore-event"]
        assert body["show_id"] == show["id"] and r.headers["x-livecore-attempt"] == "1"
        assert r.headers["content-type"] == "application/json"
    paid = by_type["order.paid"].json["data"]["order"]
    assert paid["id"] == order["id"] and paid["reservation_id"] == hold["id"]
    assert (paid["qty"], paid["price_cents"], paid["amount_cents"], paid["currency"]) == (1, 1999, 1999, "EUR")
    assert (paid["user_id"], paid["payment_ref"], paid["status"]) == ("buyer-1", "pay-42", "paid")
    started = by_type["deal.started"].json["data"]["deal"]
    assert started["id"] == deal["id"] and started["remaining"] == 1 and started["quantity"] == 1
    ended = by_type["deal.ended"].json["data"]
    assert (ended["deal_id"], ended["reason"], ended["sold"]) == (deal["id"], "sold_out", 1)
    assert by_type["show.started"].json["data"]["show"]["status"] == "live"
    assert by_type["show.ended"].json["data"]["show"]["ended_at"] is not None
    assert sorted(r.headers["x-livecore-event"] for r in shows_only.delivered()) == \
        ["show.ended", "show.started"]
    for endpoint in (ep, ep2):
        rows = await delivery_rows(pool, endpoint["id"])
        assert {(r["status"], r["attempts"]) for r in rows} == {("delivered", 1)}
    # one event per change, shared by both endpoints
    assert await pool.fetchval("SELECT count(*) FROM webhook_events WHERE show_id=$1", show["id"]) == 5
    # confirming again returns the same order and enqueues nothing new
    again = await services.deals.confirm(hold["id"], "buyer-1", "pay-42")
    assert again["id"] == order["id"]
    assert await pool.fetchval("SELECT count(*) FROM webhook_events WHERE type='order.paid'") == 1


async def test_receiver_down_then_back_is_delivered_once(pool: asyncpg.Pool) -> None:
    receiver = Receiver(new_secret())  # not listening yet: connection refused
    store = WebhookStore(pool)
    ep = await store.create(receiver.url, ["order.paid"], receiver.secret, None, allow_private=True)
    event_id = await enqueue_webhook(pool, "order.paid", {"order": {"id": "o_manual"}}, "s_manual")
    assert event_id is not None and event_id.startswith("evt_")
    worker = WebhookWorker(pool, fast(), "w1")
    worker.start()
    try:
        async def failed_a_few() -> bool:
            rows = await delivery_rows(pool, ep["id"])
            return rows[0]["attempts"] >= 3 and rows[0]["status"] == "pending"

        await eventually(failed_a_few, "three failed attempts")
        receiver.start()

        async def delivered() -> bool:
            return (await delivery_rows(pool, ep["id"]))[0]["status"] == "delivered"

        await eventually(delivered, "delivery after the receiver came back")
    finally:
        await worker.stop()
        receiver.stop()
    ok = receiver.delivered()
    assert len(ok) == 1 and ok[0].event_id == event_id and ok[0].signature_ok
    assert ok[0].json["data"] == {"order": {"id": "o_manual"}}
    items, nxt = await store.deliveries(ep["id"])
    assert nxt is None and len(items) == 1
    item = items[0]
    assert item["status"] == "delivered" and item["event_id"] == event_id
    log = item["attempt_log"]
    assert len(log) == item["attempts"] >= 4
    assert [a["ok"] for a in log] == [False] * (len(log) - 1) + [True]
    assert all("Connect" in (a["error"] or "") for a in log[:-1])
    assert log[-1]["status_code"] == 200 and [a["attempt"] for a in log] == list(range(1, len(log) + 1))
    assert int(ok[0].headers["x-livecore-attempt"]) == len(log)


async def test_gives_up_after_max_attempts_and_disable_cancels(pool: asyncpg.Pool) -> None:
    receiver = Receiver(new_secret(), mode="fail").start()
    store = WebhookStore(pool)
    ep = await store.create(receiver.url, ["deal.started"], receiver.secret, None, allow_private=True)
    event_id = await enqueue_webhook(pool, "deal.started", {"deal": {"id": "d_x"}})
    worker = WebhookWorker(pool, fast(max_attempts=2), "w1")
    worker.start()
    try:
        async def failed() -> bool:
            return (await delivery_rows(pool, ep["id"]))[0]["status"] == "failed"

        await eventually(failed, "the delivery to give up")
    finally:
        await worker.stop()
        receiver.stop()
    got = receiver.items()
    assert [r.event_id for r in got] == [event_id, event_id]
    assert [r.headers["x-livecore-attempt"] for r in got] == ["1", "2"]
    row = (await delivery_rows(pool, ep["id"]))[0]
    assert (row["attempts"], row["last_status"], row["last_error"]) == (2, 500, "HTTP 500")

    # disabling cancels what is pending and stops new events for that endpoint
    await enqueue_webhook(pool, "deal.started", {"deal": {"id": "d_y"}})
    await store.disable(ep["id"])
    assert [r["status"] for r in await delivery_rows(pool, ep["id"])] == ["failed", "cancelled"]
    assert await enqueue_webhook(pool, "deal.started", {"deal": {"id": "d_z"}}) is None
    assert (await store.get(ep["id"]))["active"] is False


async def test_two_nodes_deliver_each_event_once(pool: asyncpg.Pool, db_url: str) -> None:
    receiver = Receiver(new_secret()).start()
    store = WebhookStore(pool)
    ep = await store.create(receiver.url, ["order.paid"], receiver.secret, None, allow_private=True)
    ids = [await enqueue_webhook(pool, "order.paid", {"order": {"id": f"o_{i}"}}) for i in range(40)]
    assert all(isinstance(i, str) for i in ids)
    other_pool = await asyncpg.create_pool(db_url, min_size=1, max_size=5)
    assert other_pool is not None
    a = WebhookWorker(pool, fast(concurrency=4), "node-a")
    b = WebhookWorker(other_pool, fast(concurrency=4), "node-b")
    a.start()
    b.start()
    try:
        async def all_done() -> bool:
            rows = await delivery_rows(pool, ep["id"])
            return all(r["status"] == "delivered" for r in rows)

        await eventually(all_done, "40 deliveries")
    finally:
        await a.stop()
        await b.stop()
        await other_pool.close()
        receiver.stop()
    got = [r.event_id for r in receiver.items()]
    assert sorted(got) == sorted(str(i) for i in ids)  # each event exactly once, none twice
    nodes = await pool.fetch("SELECT DISTINCT node_id FROM webhook_attempts a JOIN webhook_deliveries d"
                             " ON d.id = a.delivery_id WHERE d.endpoint_id=$1", ep["id"])
    assert {r["node_id"] for r in nodes} <= {"node-a", "node-b"}
    assert {r["attempts"] for r in await delivery_rows(pool, ep["id"])} == {1}


async def test_a_lost_lease_is_retried_with_the_same_event_id(pool: asyncpg.Pool) -> None:
    receiver = Receiver(new_secret()).start()
    store = WebhookStore(pool)
    ep = await store.create(receiver.url, ["order.paid"], receiver.secret, None, allow_private=True)
    event_id = await enqueue_webhook(pool, "order.paid", {"order": {"id": "o_lease"}})
    settings = fast(timeout_s=0.5, lease_margin_s=0.5)
    crashed = WebhookWorker(pool, settings, "crashed")
    claimed = await crashed.claim(10)  # claims, then "dies" before sending anything
    assert [j.event_id for j in claimed] == [event_id]
    survivor = WebhookWorker(pool, settings, "survivor")
    try:
        assert await survivor.run_once() == 0  # the lease still holds

        async def delivered() -> bool:
            await survivor.run_once()
            return (await delivery_rows(pool, ep["id"]))[0]["status"] == "delivered"

        await eventually(delivered, "delivery after the lease ran out")
    finally:
        await survivor.stop()
        await crashed.stop()
        receiver.stop()
    got = receiver.items()
    assert [r.event_id for r in got] == [event_id]
    assert got[0].headers["x-livecore-attempt"] == "2" and got[0].signature_ok
    row = (await delivery_rows(pool, ep["id"]))[0]
    assert row["attempts"] == 2
