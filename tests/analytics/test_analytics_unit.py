"""livecore/analytics.py straight against PostgreSQL: the report computed from
rows with known numbers, the recorder's batched writes, the CSV export.
No server process and no gateway hooks needed."""

from __future__ import annotations

import csv
import io
import secrets

import asyncpg

from livecore.analytics import (
    MINUTE_MS,
    POST_LIVE_WINDOW_MS,
    AnalyticsSettings,
    EventRecorder,
    show_analytics,
    to_csv,
)
from livecore.ids import new_id

BASE = 1_700_000_000_000 // MINUTE_MS * MINUTE_MS  # minute-aligned
S = 1000


async def insert_show(conn: asyncpg.Connection, *, status: str = "ended",
                      started_at: int | None = None, ended_at: int | None = None) -> str:
    show_id = new_id("s")
    await conn.execute(
        "INSERT INTO shows (id, title, status, started_at, ended_at, created_at)"
        " VALUES ($1, 'Unit show', $2, $3, $4, $5)", show_id, status, started_at, ended_at, BASE)
    return show_id


async def insert_product(conn: asyncpg.Connection, currency: str = "USD") -> str:
    product_id = new_id("p")
    await conn.execute(
        "INSERT INTO products (id, sku, name, price_cents, currency, stock, created_at)"
        " VALUES ($1, $2, 'Lamp', 1000, $3, 100, $4)", product_id, f"U-{secrets.token_hex(6)}",
        currency, BASE)
    return product_id


async def insert_deal(conn: asyncpg.Connection, show_id: str, product_id: str, *, price: int,
                      quantity: int, sold: int, starts_at: int, ended_at: int, reason: str,
                      currency: str = "USD") -> str:
    deal_id = new_id("d")
    await conn.execute(
        "INSERT INTO deals (id, show_id, product_id, price_cents, currency, quantity, per_user_limit,"
        " hold_ttl_s, starts_at, ends_at, status, end_reason, ended_at, sold, settled)"
        " VALUES ($1,$2,$3,$4,$5,$6,1,120,$7,$8,'ended',$9,$10,$11,true)",
        deal_id, show_id, product_id, price, currency, quantity, starts_at, starts_at + 600 * S,
        reason, ended_at, sold)
    return deal_id


async def insert_order(conn: asyncpg.Connection, show_id: str, deal_id: str, user_id: str, *,
                       price: int, at: int, qty: int = 1, currency: str = "USD") -> None:
    await conn.execute(
        "INSERT INTO orders (id, reservation_id, deal_id, show_id, user_id, qty, price_cents,"
        " currency, payment_ref, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,'pay',$9)",
        new_id("o"), f"r.{deal_id}.{secrets.token_hex(8)}", deal_id, show_id, user_id, qty, price,
        currency, at)


async def insert_session(conn: asyncpg.Connection, show_id: str, node: str, user_id: str | None,
                         joined: int, left: int | None) -> None:
    await conn.execute(
        "INSERT INTO analytics_sessions (session_id, show_id, node_id, user_id, joined_at, left_at)"
        " VALUES ($1,$2,$3,$4,$5,$6)", secrets.token_hex(16), show_id, node, user_id, joined, left)


async def insert_counter(conn: asyncpg.Connection, show_id: str, minute: int, metric: str, n: int,
                         dim: str = "") -> None:
    await conn.execute(
        "INSERT INTO analytics_counters (show_id, minute_at, metric, dim, n) VALUES ($1,$2,$3,$4,$5)",
        show_id, BASE + minute * MINUTE_MS, metric, dim, n)


async def scripted_show(pool: asyncpg.Pool) -> tuple[str, dict[str, str]]:
    """A show with hand-computed figures (see the expectations in the test)."""
    ended_at = BASE + 210 * S
    async with pool.acquire() as conn, conn.transaction():
        show_id = await insert_show(conn, started_at=BASE + 10 * S, ended_at=ended_at)
        product = await insert_product(conn)
        node_crashed = f"crashed-{secrets.token_hex(4)}"
        await conn.execute("INSERT INTO analytics_nodes (node_id, seen_at) VALUES ($1, $2)",
                           node_crashed, BASE + 200 * S)
        node_ok = f"ok-{secrets.token_hex(4)}"
        await conn.execute("INSERT INTO analytics_nodes (node_id, seen_at) VALUES ($1, $2)",
                           node_ok, BASE + 900 * S)
        # u1: two overlapping tabs 10-70 s and 40-130 s -> 120 s watched
        await insert_session(conn, show_id, node_ok, "u1", BASE + 10 * S, BASE + 70 * S)
        await insert_session(conn, show_id, node_ok, "u1", BASE + 40 * S, BASE + 130 * S)
        # u2: 20-50 s and 100-160 s -> 90 s
        await insert_session(conn, show_id, node_ok, "u2", BASE + 20 * S, BASE + 50 * S)
        await insert_session(conn, show_id, node_ok, "u2", BASE + 100 * S, BASE + 160 * S)
        # anonymous on a node that crashed: still open, ends at its last heartbeat (200 s) -> 170 s
        await insert_session(conn, show_id, node_crashed, None, BASE + 30 * S, None)
        # anonymous, zero length (a bounce) -> a unique viewer with 0 s
        await insert_session(conn, show_id, node_ok, None, BASE + 65 * S, BASE + 65 * S)

        await insert_counter(conn, show_id, 0, "chat", 2)
        await insert_counter(conn, show_id, 1, "chat", 3)
        await insert_counter(conn, show_id, 2, "reactions", 7)
        await insert_counter(conn, show_id, 0, "pins", 1, product)

        d1 = await insert_deal(conn, show_id, product, price=500, quantity=2, sold=2,
                               starts_at=BASE + 60 * S, ended_at=BASE + 90 * S, reason="sold_out")
        d2 = await insert_deal(conn, show_id, product, price=800, quantity=5, sold=3,
                               starts_at=BASE + 120 * S, ended_at=ended_at, reason="cancelled")
        await insert_counter(conn, show_id, 1, "claims.ok", 3, d1)
        await insert_counter(conn, show_id, 1, "claims.sold_out", 2, d1)
        await insert_counter(conn, show_id, 2, "claims.ok", 3, d2)
        await insert_counter(conn, show_id, 2, "claims.limit_reached", 1, d2)
        await insert_order(conn, show_id, d1, "u1", price=500, at=BASE + 75 * S)
        await insert_order(conn, show_id, d1, "u2", price=500, at=BASE + 90 * S)
        await insert_order(conn, show_id, d2, "u1", price=800, at=BASE + 150 * S)
        # post-live (1 h after the end) and too late (25 h after)
        await insert_order(conn, show_id, d2, "u3", price=800, at=ended_at + 3600 * S)
        await insert_order(conn, show_id, d2, "u4", price=800, at=ended_at + 25 * 3600 * S)
    return show_id, {"d1": d1, "d2": d2, "product": product}


async def test_report_from_known_rows(pool: asyncpg.Pool) -> None:
    show_id, ids = await scripted_show(pool)
    now = BASE + 210 * S + 2 * 3600 * S
    r = await show_analytics(pool, show_id, now=now)
    assert r is not None
    assert r["show"]["status"] == "ended" and r["generated_at"] == now

    assert r["viewers"] == {"peak": 4, "unique": 4, "sessions": 6,
                            "total_watch_ms": 380 * S, "avg_watch_ms": 95 * S}
    assert r["engagement"] == {"chat_messages": 5, "reactions": 7, "product_pins": 1,
                               "pins_by_product": {ids["product"]: 1}}
    assert r["claims"] == {"total": 9, "ok": 6,
                           "by_outcome": {"limit_reached": 1, "ok": 6, "sold_out": 2}}
    assert r["sales"] == {"orders": 3, "units": 3, "buyers": 2, "currency": "USD",
                          "gmv_cents": 1800, "aov_cents": 600,
                          "by_currency": {"USD": {"orders": 3, "units": 3, "gmv_cents": 1800,
                                                  "aov_cents": 600}}}
    post = r["post_live"]
    assert (post["orders"], post["buyers"], post["gmv_cents"], post["units"]) == (1, 1, 800, 1)
    assert post["window_ms"] == POST_LIVE_WINDOW_MS and post["complete"] is False
    assert post["conversion"] == 0.25
    assert r["conversion"] == {"live": 0.5, "post_live": 0.25, "claims_to_orders": 0.8333}

    d1, d2 = r["deals"]
    assert (d1["id"], d1["sold"], d1["quantity"], d1["sell_through"]) == (ids["d1"], 2, 2, 1.0)
    assert d1["time_to_sell_out_ms"] == 30 * S and d1["end_reason"] == "sold_out"
    assert (d1["orders"], d1["units"], d1["gmv_cents"]) == (2, 2, 1000)
    assert d1["claims"] == {"ok": 3, "sold_out": 2}
    assert (d2["sold"], d2["sell_through"], d2["time_to_sell_out_ms"]) == (3, 0.6, None)
    assert (d2["orders"], d2["gmv_cents"]) == (3, 2400)
    assert d2["claims"] == {"ok": 3, "limit_reached": 1}

    series = r["series"]
    assert [p["minute_at"] for p in series] == [BASE + i * MINUTE_MS for i in range(4)]
    assert [p["viewers"] for p in series] == [4, 3, 3, 1]
    assert [p["joins"] for p in series] == [4, 2, 0, 0]
    assert [p["chat"] for p in series] == [2, 3, 0, 0]
    assert [p["reactions"] for p in series] == [0, 0, 7, 0]
    assert [p["claims"] for p in series] == [0, 3, 3, 0]
    assert [p["deals_started"] for p in series] == [0, 1, 1, 0]
    assert [p["orders"] for p in series] == [0, 2, 1, 0]
    assert [p["gmv_cents"] for p in series] == [0, 1000, 800, 0]

    done = await show_analytics(pool, show_id, now=BASE + 210 * S + POST_LIVE_WINDOW_MS + 1)
    assert done is not None and done["post_live"]["complete"] is True


async def test_csv_export(pool: asyncpg.Pool) -> None:
    show_id, ids = await scripted_show(pool)
    r = await show_analytics(pool, show_id, now=BASE + 3 * 3600 * S)
    assert r is not None
    rows = list(csv.DictReader(io.StringIO(to_csv(r, "series"))))
    assert len(rows) == 4
    assert rows[1]["minute_utc"].endswith("Z") and int(rows[1]["minute_at"]) == BASE + MINUTE_MS
    assert sum(int(x["chat"]) for x in rows) == 5
    assert sum(int(x["gmv_cents"]) for x in rows) == 1800
    deals = list(csv.DictReader(io.StringIO(to_csv(r, "deals"))))
    assert [d["id"] for d in deals] == [ids["d1"], ids["d2"]]
    assert deals[0]["time_to_sell_out_ms"] == "30000" and deals[1]["time_to_sell_out_ms"] == ""
    assert deals[0]["claims_sold_out"] == "2"
    summary = dict(csv.reader(io.StringIO(to_csv(r, "summary"))))
    assert summary["viewers.unique"] == "4" and summary["sales.gmv_cents"] == "1800"
    assert summary["conversion.claims_to_orders"] == "0.8333"
    # a text cell that a spreadsheet would run as a formula is defused
    r["deals"][0]["product_id"] = "=HYPERLINK(1)"
    assert "'=HYPERLINK(1)" in to_csv(r, "deals")


async def test_mixed_currencies_empty_and_unknown_shows(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        show_id = await insert_show(conn, status="live", started_at=BASE)
        usd, eur = await insert_product(conn, "USD"), await insert_product(conn, "EUR")
        d_usd = await insert_deal(conn, show_id, usd, price=1000, quantity=5, sold=1,
                                  starts_at=BASE, ended_at=BASE + 60 * S, reason="expired")
        d_eur = await insert_deal(conn, show_id, eur, price=900, quantity=5, sold=2,
                                  starts_at=BASE + 60 * S, ended_at=BASE + 120 * S,
                                  reason="expired", currency="EUR")
        await insert_order(conn, show_id, d_usd, "a", price=1000, at=BASE + 5 * S)
        await insert_order(conn, show_id, d_eur, "b", price=900, qty=2, at=BASE + 70 * S,
                           currency="EUR")
        empty = await insert_show(conn, status="scheduled")
    r = await show_analytics(pool, show_id, now=BASE + 150 * S)
    assert r is not None
    sales = r["sales"]
    assert sales["currency"] is None and sales["gmv_cents"] is None and sales["aov_cents"] is None
    assert sales["by_currency"] == {"USD": {"orders": 1, "units": 1, "gmv_cents": 1000, "aov_cents": 1000},
                                    "EUR": {"orders": 1, "units": 2, "gmv_cents": 1800, "aov_cents": 1800}}
    assert (sales["orders"], sales["buyers"]) == (2, 2)
    # live show: the series runs to the current minute; nobody watched yet
    assert len(r["series"]) == 3 and r["viewers"]["unique"] == 0
    assert r["conversion"]["live"] is None and r["post_live"]["orders"] == 0

    e = await show_analytics(pool, empty)
    assert e is not None
    assert e["viewers"] == {"peak": 0, "unique": 0, "sessions": 0, "total_watch_ms": 0, "avg_watch_ms": 0}
    assert e["series"] == [] and e["deals"] == [] and e["sales"]["gmv_cents"] == 0
    assert e["claims"] == {"total": 0, "ok": 0, "by_outcome": {}}
    assert await show_analytics(pool, "no-such-show") is None


async def test_recorder_batches_and_survives_a_failed_flush(pool: asyncpg.Pool, db_url: str) -> None:
    show_id = new_id("s")
    rec = EventRecorder()
    rec.count(show_id, "chat")  # not started: a no-op
    assert rec._counts == {}
    # A pool that is closed: the first flush fails and must keep everything.
    broken = await asyncpg.create_pool(db_url, min_size=1, max_size=1)
    assert broken is not None
    await broken.close()
    rec.start(broken, "unit", AnalyticsSettings(flush_interval_s=3600))
    try:
        for _ in range(3):
            rec.count(show_id, "chat")
        rec.count(show_id, "pins", dim="p1")
        rec.viewer_joined(show_id, 1, "u1")
        rec.viewer_joined(show_id, 2, None)
        rec.viewer_joined(show_id, 3, "host-1", "host")  # staff sockets are not audience
        rec.viewer_left(1)
        rec.claim(show_id, "d1", ["ok", "r.d1.x", "1", "0", "3"])
        rec.claim(show_id, "d1", ["err", "sold_out"])
        rec.claim(show_id, "d1", ["ok", "r.d1.x", "1", "0", "3", "replay"])  # same claim again
        try:
            await rec.flush()
            raise AssertionError("flush through a closed pool must fail")
        except asyncpg.InterfaceError:
            pass
        rec.viewer_left(2)  # leaves after the failed attempt
        rec.pool = pool
        await rec.flush()

        counters = {(r["metric"], r["dim"]): r["n"] for r in await pool.fetch(
            "SELECT metric, dim, sum(n)::bigint AS n FROM analytics_counters WHERE show_id=$1"
            " GROUP BY 1, 2", show_id)}
        assert counters == {("chat", ""): 3, ("pins", "p1"): 1, ("claims.ok", "d1"): 1,
                            ("claims.sold_out", "d1"): 1}
        sessions = await pool.fetch(
            "SELECT user_id, joined_at, left_at, node_id FROM analytics_sessions WHERE show_id=$1"
            " ORDER BY joined_at, user_id NULLS LAST", show_id)
        assert len(sessions) == 2
        assert {s["user_id"] for s in sessions} == {"u1", None}
        assert all(s["left_at"] is not None and s["left_at"] >= s["joined_at"] for s in sessions)
        assert sessions[0]["node_id"] == rec.node_id

        # A second node adds to the same minute buckets (upsert n = n + excluded.n).
        other = EventRecorder()
        other.start(pool, "unit-b", AnalyticsSettings(flush_interval_s=3600))
        other.count(show_id, "chat", 2)
        other.viewer_joined(show_id, 7, "u9")
        await other.flush()
        total = await pool.fetchval(
            "SELECT sum(n) FROM analytics_counters WHERE show_id=$1 AND metric='chat'", show_id)
        assert total == 5
        open_row = await pool.fetchrow(
            "SELECT left_at, node_id FROM analytics_sessions WHERE show_id=$1 AND user_id='u9'",
            show_id)
        assert open_row is not None and open_row["left_at"] is None
        seen = await pool.fetchval("SELECT seen_at FROM analytics_nodes WHERE node_id=$1",
                                   open_row["node_id"])
        assert seen is not None
        # Stopping closes the sessions still open on that node and flushes.
        await other.stop()
        assert await pool.fetchval(
            "SELECT left_at FROM analytics_sessions WHERE show_id=$1 AND user_id='u9'", show_id)
        assert not other.enabled
        other.count(show_id, "chat")
        assert other._counts == {}
    finally:
        await rec.stop()
