"""Issue 4 acceptance: a burst of 2000 buyers on 10 units over real HTTP, on
one node and across two nodes sharing Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg
import httpx

from tests.engine.helpers import AUTH, claim, code, confirm, eventually, launch, stock_of, viewer
from tests.support import Backends, ServerProc, create_show

BUYERS = 2000
UNITS = 10
# 64 sockets, each its own httpx client with one connection and one request
# in flight: httpx's CPU cost per request grows with the pool's connection
# count and its queue, so one big client makes the test client (not the
# server) the bottleneck; 64 small ones are ~4x cheaper.
SOCKETS = 64
ONE = httpx.Limits(max_connections=1, max_keepalive_connections=1)


async def burst(nodes: list[ServerProc], http: httpx.AsyncClient, database_url: str) -> None:
    show_id, product_id = await create_show(http, stock=UNITS + 5)
    deal = await launch(http, show_id, product_id, quantity=UNITS)
    buyers = [viewer(show_id) for _ in range(BUYERS)]
    # Socket j talks to node j % len(nodes), buyer i uses socket i % SOCKETS:
    # with two nodes, consecutive buyers alternate between them.
    clients = [httpx.AsyncClient(base_url=nodes[j % len(nodes)].base_url, timeout=60, limits=ONE)
               for j in range(SOCKETS)]
    gates = [asyncio.Semaphore(1) for _ in range(SOCKETS)]
    try:
        def node(i: int) -> httpx.AsyncClient:
            return clients[i % SOCKETS]

        async def buy(i: int, token: str) -> httpx.Response:
            async with gates[i % SOCKETS]:
                return await claim(node(i), show_id, deal["id"], token, key=f"k-{i}")

        responses = await asyncio.gather(*[buy(i, token) for i, (_, token) in enumerate(buyers)])
        outcome = Counter((r.status_code, code(r)) for r in responses)
        assert outcome == {(201, "ok"): UNITS, (409, "sold_out"): BUYERS - UNITS}, outcome
        won = [(i, r.json()) for i, r in enumerate(responses) if r.status_code == 201]
        assert len({res["id"] for _, res in won}) == UNITS
        assert len({buyers[i][0] for i, _ in won}) == UNITS

        # Retries with the same Idempotency-Key (on the other node) replay the result.
        sample = [i for i, _ in won[:5]] + [i for i, r in enumerate(responses) if r.status_code == 409][:20]
        again = await asyncio.gather(*[
            claim(node(i + 1), show_id, deal["id"], buyers[i][1], key=f"k-{i}") for i in sample])
        for i, resp in zip(sample, again, strict=True):
            assert resp.status_code == responses[i].status_code
            assert resp.json() == responses[i].json()

        got = await http.get(f"/api/v1/shows/{show_id}/deals/{deal['id']}")
        assert got.json()["remaining"] == 0

        orders = await asyncio.gather(*[
            confirm(node(i), res["id"], buyers[i][1], f"pay-{i}") for i, res in won])
        assert [o.status_code for o in orders] == [201] * UNITS, [o.text for o in orders]
        assert {o.json()["reservation_id"] for o in orders} == {res["id"] for _, res in won}

        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        assert pool is not None
        try:
            row = await pool.fetchrow("SELECT sold, status, end_reason FROM deals WHERE id=$1",
                                      deal["id"])
            assert row is not None
            assert (row["sold"], row["status"], row["end_reason"]) == (UNITS, "ended", "sold_out")
            assert await pool.fetchval("SELECT count(*) FROM orders WHERE deal_id=$1",
                                       deal["id"]) == UNITS

            async def settled() -> bool:
                return bool(await pool.fetchval("SELECT settled FROM deals WHERE id=$1", deal["id"]))

            await eventually(settled, what="settlement by the sweeper")
            assert await stock_of(pool, product_id) == 5  # all 10 sold, nothing comes back
        finally:
            await pool.close()

        late_user, late_token = viewer(show_id)
        late = await claim(node(0), show_id, deal["id"], late_token, key="late")
        assert (late.status_code, code(late)) == (409, "deal_not_live")
        orders_page = await http.get(f"/api/v1/shows/{show_id}/orders", headers=AUTH)
        assert len(orders_page.json()["orders"]) == UNITS
        assert late_user not in {o["user_id"] for o in orders_page.json()["orders"]}
    finally:
        await asyncio.gather(*[c.aclose() for c in clients])


async def test_2000_buyers_10_units_one_node(http: httpx.AsyncClient, server: ServerProc,
                                             backends: Backends) -> None:
    await burst([server], http, backends.database_url)


async def test_2000_buyers_10_units_two_nodes_alternating(http: httpx.AsyncClient, server: ServerProc,
                                                          server_b: ServerProc,
                                                          backends: Backends) -> None:
    await burst([server, server_b], http, backends.database_url)
