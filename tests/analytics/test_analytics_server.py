"""A scripted show on two gateway nodes; the analytics a third node reports
must match the script exactly. Also: auth, CSV export, the report page.

Needs all the gateway hooks (event recording in the hub, the socket
commands and the reservation engine; routes; the flusher in the lifespan)."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
from typing import Any

import asyncpg
import httpx

from tests.analytics.support import launch_server
from tests.support import ADMIN, WS, Backends, ServerProc, create_show, mint

AUTH = {"authorization": f"Bearer {ADMIN}"}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def confirm(http: httpx.AsyncClient, reservation: dict[str, Any], token: str) -> dict[str, Any]:
    r = await http.post(f"/api/v1/reservations/{reservation['id']}/confirm", headers=bearer(token),
                        json={"payment_ref": "pay"})
    assert r.status_code == 201, r.text
    order: dict[str, Any] = r.json()
    return order


def merged_watch_ms(rows: list[asyncpg.Record]) -> int:
    """Reference computation: per viewer, the length of the union of its sessions."""
    per_viewer: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for r in rows:
        key = ("user", r["user_id"]) if r["user_id"] is not None else ("anon", r["session_id"])
        per_viewer.setdefault(key, []).append((r["joined_at"], r["left_at"]))
    total = 0
    for spans in per_viewer.values():
        spans.sort()
        start, end = spans[0]
        for a, b in spans[1:]:
            if a > end:
                total += end - start
                start, end = a, b
            else:
                end = max(end, b)
        total += end - start
    return total


async def test_scripted_show_analytics_match(backends: Backends, db_url: str,
                                             procs: list[ServerProc]) -> None:
    node_a, node_b, node_c = await asyncio.gather(
        *(launch_server(procs, backends.redis_url, db_url) for _ in range(3)))
    a = httpx.AsyncClient(base_url=node_a.base_url, timeout=30)
    b = httpx.AsyncClient(base_url=node_b.base_url, timeout=30)
    c = httpx.AsyncClient(base_url=node_c.base_url, timeout=30)
    sockets: list[WS] = []
    try:
        show_id, product_id = await create_show(a, stock=20, price=1000, currency="USD")
        host_token = mint("host", show_id, "host-1")
        host = await WS.open(node_a.ws_url("host", show_id), host_token)
        sockets.append(host)
        assert (await host.request("show.start"))["type"] == "ack"

        tokens = {u: mint("viewer", show_id, u) for u in ("v1", "v2", "v3")}
        # Five viewer sessions on two nodes: v1 in two tabs, one anonymous viewer.
        v1a = await WS.open(node_a.ws_url("viewer", show_id), tokens["v1"])
        v1b = await WS.open(node_b.ws_url("viewer", show_id), tokens["v1"])
        v2 = await WS.open(node_b.ws_url("viewer", show_id), tokens["v2"])
        v3 = await WS.open(node_a.ws_url("viewer", show_id), tokens["v3"])
        anon = await WS.open(node_b.ws_url("viewer", show_id), None)
        viewers = [v1a, v1b, v2, v3, anon]
        sockets += viewers
        assert all(v.welcome["type"] == "welcome" for v in viewers)

        for ws, text in ((v1a, "hello"), (v1a, "hi again"), (v2, "hey there")):
            assert (await ws.request("chat.send", text=text))["type"] == "ack"
        for _ in range(4):
            await v2.send({"type": "react", "emoji": "🔥"})
        await anon.send({"type": "react", "emoji": "👏"})
        for ws in (v2, anon):  # frames are handled in order: the pong follows the reactions
            assert (await ws.request("ping"))["type"] == "pong"
        assert (await host.request("product.pin", product_id=product_id))["type"] == "ack"

        # Deal 1: 2 units, sells out; a third claim is refused.
        d1 = (await host.request("deal.launch", product_id=product_id, price_cents=500, quantity=2,
                                 duration_s=600, per_user_limit=1))["deal"]
        r1 = (await v1a.request("deal.claim", deal_id=d1["id"]))["reservation"]
        r2 = (await v2.request("deal.claim", deal_id=d1["id"]))["reservation"]
        refused = await v3.request("deal.claim", deal_id=d1["id"])
        assert refused["type"] == "error" and refused["code"] == "sold_out"
        await confirm(a, r1, tokens["v1"])
        o2 = await confirm(b, r2, tokens["v2"])

        # Deal 2: 3 units; three claims, one released, one bought live, one after the end.
        d2 = (await host.request("deal.launch", product_id=product_id, price_cents=800, quantity=3,
                                 duration_s=600, per_user_limit=1))["deal"]
        r3 = (await v3.request("deal.claim", deal_id=d2["id"]))["reservation"]
        r4 = (await v1b.request("deal.claim", deal_id=d2["id"]))["reservation"]
        r5 = (await v2.request("deal.claim", deal_id=d2["id"]))["reservation"]
        released = await b.delete(f"/api/v1/reservations/{r5['id']}", headers=bearer(tokens["v2"]))
        assert released.status_code == 204
        await confirm(a, r3, tokens["v3"])
        assert (await host.request("show.end"))["type"] == "ack"
        await confirm(b, r4, tokens["v1"])  # post-live: after the show ended

        # While nodes are up: who may read the analytics.
        url = f"/api/v1/shows/{show_id}/analytics"
        assert (await c.get(url)).status_code == 401
        assert (await c.get(url, headers=bearer(tokens["v1"]))).status_code == 403
        other_show, _ = await create_show(c)
        assert (await c.get(url, headers=bearer(mint("host", other_show)))).status_code == 403
        assert (await c.get(url, headers=bearer(mint("moderator", show_id)))).status_code == 403
        assert (await c.get("/api/v1/shows/nope/analytics", headers=AUTH)).status_code == 404
        assert (await c.get(url + "?format=xml", headers=AUTH)).status_code == 422
        assert (await c.get(url + "?format=csv&part=x", headers=AUTH)).status_code == 422
    finally:
        for ws in sockets:
            await ws.close()
    # A graceful stop flushes what the nodes recorded (and closes their sessions).
    await asyncio.gather(asyncio.to_thread(node_a.stop), asyncio.to_thread(node_b.stop))
    await a.aclose()
    await b.aclose()

    try:
        resp = await c.get(url, headers=bearer(host_token))
        assert resp.status_code == 200, resp.text
        assert resp.headers["cache-control"] == "no-store"
        report = resp.json()
        csv_series = await c.get(url + "?format=csv", headers=AUTH)
        csv_deals = await c.get(url + "?format=csv&part=deals", headers=AUTH)
        csv_summary = await c.get(url + "?format=csv&part=summary", headers=AUTH)
        page = await c.get(f"/host/report?show={show_id}")
        script = await c.get("/static/report.js")
    finally:
        await c.aclose()

    conn = await asyncpg.connect(db_url)
    try:
        sessions = await conn.fetch("SELECT * FROM analytics_sessions WHERE show_id=$1", show_id)
        orders = {o["reservation_id"]: o for o in await conn.fetch(
            "SELECT * FROM orders WHERE show_id=$1", show_id)}
    finally:
        await conn.close()
    assert len(sessions) == 5 and all(s["left_at"] is not None for s in sessions)
    assert sorted((s["user_id"] or "") for s in sessions) == ["", "v1", "v1", "v2", "v3"]
    watch = merged_watch_ms(list(sessions))

    assert report["show"]["status"] == "ended"
    assert report["viewers"] == {"peak": 5, "unique": 4, "sessions": 5, "total_watch_ms": watch,
                                 "avg_watch_ms": (2 * watch + 4) // 8}
    assert watch > 0
    assert report["engagement"] == {"chat_messages": 3, "reactions": 5, "product_pins": 1,
                                    "pins_by_product": {product_id: 1}}
    assert report["claims"] == {"total": 6, "ok": 5, "by_outcome": {"ok": 5, "sold_out": 1}}
    sales = report["sales"]
    assert (sales["orders"], sales["units"], sales["buyers"]) == (3, 3, 3)
    assert (sales["currency"], sales["gmv_cents"], sales["aov_cents"]) == ("USD", 1800, 600)
    post = report["post_live"]
    assert (post["orders"], post["buyers"], post["gmv_cents"], post["conversion"]) == (1, 1, 800, 0.25)
    assert post["complete"] is False
    assert report["conversion"] == {"live": 0.75, "post_live": 0.25, "claims_to_orders": 0.8}

    deal1, deal2 = report["deals"]
    assert (deal1["id"], deal1["quantity"], deal1["sold"], deal1["sell_through"]) == (d1["id"], 2, 2, 1.0)
    assert deal1["end_reason"] == "sold_out" and deal1["claims"] == {"ok": 2, "sold_out": 1}
    assert deal1["time_to_sell_out_ms"] == orders[r2["id"]]["created_at"] - d1["starts_at"]
    assert orders[r2["id"]]["id"] == o2["id"]
    assert (deal1["orders"], deal1["gmv_cents"]) == (2, 1000)
    assert (deal2["id"], deal2["sold"], deal2["sell_through"]) == (d2["id"], 2, 0.6667)
    assert deal2["end_reason"] == "cancelled" and deal2["time_to_sell_out_ms"] is None
    assert deal2["claims"] == {"ok": 3} and (deal2["orders"], deal2["gmv_cents"]) == (2, 1600)

    series = report["series"]
    assert series and all(p["minute_at"] % 60_000 == 0 for p in series)
    steps = {q["minute_at"] - p["minute_at"] for p, q in itertools.pairwise(series)}
    assert steps <= {60_000}
    totals = {k: sum(p[k] for p in series) for k in
              ("joins", "chat", "reactions", "claims", "deals_started", "orders", "units", "gmv_cents")}
    assert totals == {"joins": 5, "chat": 3, "reactions": 5, "claims": 5, "deals_started": 2,
                      "orders": 3, "units": 3, "gmv_cents": 1800}
    assert max(p["viewers"] for p in series) == 5

    assert csv_series.status_code == 200
    assert csv_series.headers["content-type"].startswith("text/csv")
    assert "attachment" in csv_series.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(csv_series.text)))
    assert len(rows) == len(series) and sum(int(r["chat"]) for r in rows) == 3
    assert sum(int(r["gmv_cents"]) for r in rows) == 1800
    deal_rows = list(csv.DictReader(io.StringIO(csv_deals.text)))
    assert [(r["id"], r["sold"]) for r in deal_rows] == [(d1["id"], "2"), (d2["id"], "2")]
    summary = dict(csv.reader(io.StringIO(csv_summary.text)))
    assert summary["viewers.unique"] == "4" and summary["sales.gmv_cents"] == "1800"

    assert page.status_code == 200 and '/static/report.js' in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "<script>" not in page.text and "style=" not in page.text
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
