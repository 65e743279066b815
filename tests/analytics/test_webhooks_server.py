"""Webhooks through real server processes: the admin API, signed delivery of
order.paid, retries while the receiver is down, and a node killed between the
order's commit and the delivery.

Needs the gateway hooks (routes mounted, worker started in the lifespan)."""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg
import httpx

from tests.analytics.support import WEBHOOK_ENV, Receiver, eventually, launch_server
from tests.support import ADMIN, Backends, ServerProc, create_show, mint

AUTH = {"authorization": f"Bearer {ADMIN}"}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def register(http: httpx.AsyncClient, receiver: Receiver, events: list[str]) -> dict[str, Any]:
    resp = await http.post("/api/v1/webhooks", headers=AUTH,
                           json={"url": receiver.url, "events": events, "secret": receiver.secret})
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def buy(http: httpx.AsyncClient, show_id: str, product_id: str, buyer: str = "buyer-1",
              price_cents: int = 700) -> dict[str, Any]:
    """Launch a one-unit deal, claim and confirm it: returns the order."""
    deal = await http.post(f"/api/v1/shows/{show_id}/deals", headers=AUTH, json={
        "product_id": product_id, "price_cents": price_cents, "quantity": 1, "duration_s": 600})
    assert deal.status_code == 201, deal.text
    token = mint("viewer", show_id, buyer)
    hold = await http.post(f"/api/v1/shows/{show_id}/deals/{deal.json()['id']}/claims",
                           headers={**bearer(token), "idempotency-key": secrets.token_hex(8)})
    assert hold.status_code == 201, hold.text
    order = await http.post(f"/api/v1/reservations/{hold.json()['id']}/confirm", headers=bearer(token),
                            json={"payment_ref": "pay-1"})
    assert order.status_code == 201, order.text
    result: dict[str, Any] = order.json()
    return result


async def deliveries(http: httpx.AsyncClient, webhook_id: str) -> list[dict[str, Any]]:
    resp = await http.get(f"/api/v1/webhooks/{webhook_id}/deliveries", headers=AUTH)
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["deliveries"]
    return items


async def test_webhook_admin_api(backends: Backends, db_url: str, procs: list[ServerProc]) -> None:
    # Public-only mode (the SSRF guard; the default allows private targets).
    node = await launch_server(procs, backends.redis_url, db_url, LIVECORE_WEBHOOK_ALLOW_PRIVATE="false")
    async with httpx.AsyncClient(base_url=node.base_url, timeout=30) as http:
        created = await http.post("/api/v1/webhooks", headers=AUTH, json={
            "url": "https://hooks.example.com/livecore", "events": ["show.ended", "order.paid"],
            "secret": "s" * 24, "description": "ERP"})
        assert created.status_code == 201, created.text
        ep = created.json()
        assert ep["id"] and ep["active"] is True and ep["events"] == ["order.paid", "show.ended"]
        assert "secret" not in ep and ep["description"] == "ERP"
        generated = await http.post("/api/v1/webhooks", headers=AUTH, json={
            "url": "https://hooks.example.com/other", "events": ["deal.started"]})
        assert generated.status_code == 201
        assert generated.json()["secret"].startswith("whsec_")  # shown once

        bad_bodies: list[Any] = [
            {"url": "ftp://hooks.example.com/x", "events": ["order.paid"]},
            {"url": "http://127.0.0.1:9/x", "events": ["order.paid"]},
            {"url": "http://localhost:9/x", "events": ["order.paid"]},
            {"url": "http://169.254.169.254/latest", "events": ["order.paid"]},
            {"url": "https://u:p@hooks.example.com/x", "events": ["order.paid"]},
            {"url": "https://hooks.example.com/x", "events": ["order.refunded"]},
            {"url": "https://hooks.example.com/x", "events": []},
            {"url": "https://hooks.example.com/x", "events": ["order.paid"], "secret": "short"},
            {"url": 5, "events": ["order.paid"]},
            {"events": ["order.paid"]},
            ["not", "an", "object"],
        ]
        for body in bad_bodies:
            r = await http.post("/api/v1/webhooks", headers=AUTH, json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.json()["error"]["code"] == "validation_error"

        show_id, _ = await create_show(http)
        body = {"url": "https://hooks.example.com/x", "events": ["order.paid"]}
        assert (await http.post("/api/v1/webhooks", json=body)).status_code == 401
        for token in (mint("host", show_id), mint("viewer", show_id), mint("moderator", show_id),
                      mint("admin", show_id)):  # an admin of one show only
            for method, path in (("POST", "/api/v1/webhooks"), ("GET", "/api/v1/webhooks"),
                                 ("GET", f"/api/v1/webhooks/{ep['id']}/deliveries"),
                                 ("DELETE", f"/api/v1/webhooks/{ep['id']}")):
                r = await http.request(method, path, headers=bearer(token),
                                       json=body if method == "POST" else None)
                assert r.status_code == 403, (method, path, r.text)

        listed = (await http.get("/api/v1/webhooks", headers=AUTH)).json()["webhooks"]
        assert [w["id"] for w in listed] == [ep["id"], generated.json()["id"]]
        assert all("secret" not in w for w in listed)
        assert (await http.get(f"/api/v1/webhooks/{ep['id']}", headers=AUTH)).json()["url"] == \
            "https://hooks.example.com/livecore"
        assert (await http.get("/api/v1/webhooks/nope", headers=AUTH)).status_code == 404
        assert (await http.get("/api/v1/webhooks/nope/deliveries", headers=AUTH)).status_code == 404
        empty = await http.get(f"/api/v1/webhooks/{ep['id']}/deliveries", headers=AUTH)
        assert empty.json() == {"deliveries": [], "next": None}
        for query in ("status=weird", "limit=0", "limit=x", "before=-1"):
            r = await http.get(f"/api/v1/webhooks/{ep['id']}/deliveries?{query}", headers=AUTH)
            assert r.status_code == 422, query

        assert (await http.delete(f"/api/v1/webhooks/{ep['id']}", headers=AUTH)).status_code == 204
        assert (await http.get(f"/api/v1/webhooks/{ep['id']}", headers=AUTH)).json()["active"] is False
        assert (await http.delete("/api/v1/webhooks/nope", headers=AUTH)).status_code == 404


async def test_order_paid_is_delivered_signed(backends: Backends, db_url: str,
                                              procs: list[ServerProc]) -> None:
    receiver = Receiver("whsec_" + secrets.token_hex(16)).start()
    try:
        node = await launch_server(procs, backends.redis_url, db_url, **WEBHOOK_ENV)
        async with httpx.AsyncClient(base_url=node.base_url, timeout=30) as http:
            ep = await register(http, receiver, ["order.paid"])
            show_id, product_id = await create_show(http)
            order = await buy(http, show_id, product_id, price_cents=1234)

            async def arrived() -> bool:
                return len(receiver.delivered("order.paid")) >= 1

            await eventually(arrived, "order.paid delivery")

            async def logged() -> bool:
                items = await deliveries(http, ep["id"])
                return bool(items) and items[0]["status"] == "delivered"

            await eventually(logged, "delivery log update")
            log = await deliveries(http, ep["id"])
    finally:
        receiver.stop()
    [got] = receiver.delivered("order.paid")
    assert got.signature_ok
    body = got.json
    assert body["id"] == got.event_id and body["type"] == "order.paid" and body["show_id"] == show_id
    paid = body["data"]["order"]
    assert (paid["id"], paid["user_id"], paid["price_cents"], paid["qty"]) == \
        (order["id"], "buyer-1", 1234, 1)
    assert abs(int(got.headers["x-livecore-timestamp"]) - body["created_at"]) < 3_600_000
    # only order.paid was subscribed: deal.started/ended were not sent
    assert {r.headers["x-livecore-event"] for r in receiver.items()} == {"order.paid"}
    [item] = log
    assert item["event_id"] == got.event_id and item["event"] == "order.paid"
    assert item["attempts"] == 1 and item["delivered_at"] and item["show_id"] == show_id
    assert [(a["ok"], a["status_code"]) for a in item["attempt_log"]] == [(True, 200)]


async def test_receiver_down_then_delivered_once(backends: Backends, db_url: str,
                                                 procs: list[ServerProc]) -> None:
    receiver = Receiver("whsec_" + secrets.token_hex(16))  # not listening yet
    try:
        node = await launch_server(procs, backends.redis_url, db_url, **WEBHOOK_ENV)
        async with httpx.AsyncClient(base_url=node.base_url, timeout=30) as http:
            ep = await register(http, receiver, ["order.paid"])
            show_id, product_id = await create_show(http)
            order = await buy(http, show_id, product_id)

            async def retried() -> bool:
                items = await deliveries(http, ep["id"])
                return bool(items) and items[0]["attempts"] >= 3 and items[0]["status"] == "pending"

            await eventually(retried, "three failed attempts")
            receiver.start()

            async def delivered() -> bool:
                items = await deliveries(http, ep["id"])
                return items[0]["status"] == "delivered"

            await eventually(delivered, "delivery once the receiver is back")
            [item] = await deliveries(http, ep["id"])
    finally:
        receiver.stop()
    ok = receiver.delivered("order.paid")
    assert len(ok) == 1 and ok[0].signature_ok and ok[0].event_id == item["event_id"]
    assert ok[0].json["data"]["order"]["id"] == order["id"]
    attempts = item["attempt_log"]
    assert len(attempts) == item["attempts"] >= 4
    assert [a["ok"] for a in attempts] == [False] * (len(attempts) - 1) + [True]
    assert all(a["status_code"] is None and a["error"] for a in attempts[:-1])
    assert item["last_status_code"] == 200 and item["last_error"] is None


async def test_node_killed_between_commit_and_delivery(backends: Backends, db_url: str,
                                                       procs: list[ServerProc]) -> None:
    # The receiver holds the first attempt open, so the node dies mid-delivery.
    receiver = Receiver("whsec_" + secrets.token_hex(16), mode="hang").start()
    try:
        first = await launch_server(procs, backends.redis_url, db_url, **WEBHOOK_ENV)
        async with httpx.AsyncClient(base_url=first.base_url, timeout=30) as http:
            ep = await register(http, receiver, ["order.paid"])
            show_id, product_id = await create_show(http)
            order = await buy(http, show_id, product_id)

        async def in_flight() -> bool:
            return any(r.headers.get("x-livecore-event") == "order.paid" for r in receiver.items())

        await eventually(in_flight, "the first attempt to reach the receiver")
        first.kill()
        receiver.mode = "ok"
        receiver.release.set()
        second = await launch_server(procs, backends.redis_url, db_url, **WEBHOOK_ENV)

        async def delivered() -> bool:
            return len(receiver.delivered("order.paid")) >= 1

        await eventually(delivered, "delivery by the restarted node")
        async with httpx.AsyncClient(base_url=second.base_url, timeout=30) as http:
            async def logged() -> bool:
                items = await deliveries(http, ep["id"])
                return items[0]["status"] == "delivered"

            await eventually(logged, "delivery log update")
            [item] = await deliveries(http, ep["id"])
    finally:
        receiver.stop()
    seen = [r for r in receiver.items() if r.headers.get("x-livecore-event") == "order.paid"]
    assert len(seen) >= 2  # the attempt the dead node left hanging, then the retry
    assert {r.event_id for r in seen} == {item["event_id"]}  # exactly one event id
    assert all(r.json["data"]["order"]["id"] == order["id"] and r.signature_ok for r in seen)
    assert len(receiver.delivered("order.paid")) == 1
    assert item["attempts"] >= 2 and item["attempt_log"][-1]["ok"] is True
    conn = await asyncpg.connect(db_url)
    try:
        events = await conn.fetch("SELECT id FROM webhook_events WHERE type='order.paid'"
                                  " AND data->'order'->>'id' = $1", order["id"])
        assert [e["id"] for e in events] == [item["event_id"]]
        assert await conn.fetchval("SELECT count(*) FROM orders WHERE id=$1", order["id"]) == 1
    finally:
        await conn.close()
