"""The outside correctness check for flash deals (PROTOCOL.md §6).

Looked at from outside the server, after the run:

1. Orders API: per deal, units in orders <= quantity; no order id or
   reservation id twice; no user over the per-user limit; the deal's `sold`
   equals the units in its orders.
2. PostgreSQL, when reachable: the same on the record itself, plus stock
   conservation (product stock now + units each deal took out == stock before).
3. The client ledger: every order a buyer saw confirmed (201) is present
   exactly once, with its reservation, user and quantity; idempotent replays
   (same Idempotency-Key, confirming twice) returned the same thing.
4. Held + sold never exceeded quantity, on the timeline the buyers observed:
   each successful claim holds its units from `expires_at - hold TTL`
   (server clock) until it is sold (its reservation has an order), released
   (the DELETE was sent; taken early by the clock uncertainty) or expired
   (`expires_at`; the server never frees a hold earlier). The peak of that
   sum must not pass the deal's quantity.
5. The watcher's samples during the run: `sold + remaining <= quantity`.

`oversell` is the largest excess over quantity any of these saw (0 = none).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

ORDERS_API_LIMIT = 1000  # GET /orders returns at most this many


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        with contextlib.suppress(ValueError):
            out.append(orjson.loads(line))
    return out


def outstanding_peak(holds: dict[str, dict[str, Any]], sold: set[str], released: dict[str, float],
                     ttl_ms: float) -> tuple[int, float | None]:
    """Peak of units held or sold at any instant, and when. See module doc, point 4."""
    points: list[tuple[float, int, int]] = []
    for rid, hold in holds.items():
        exp = float(hold["exp"])
        qty = int(hold.get("qty", 1))
        start = exp - ttl_ms
        points.append((start, 1, qty))
        if rid in sold:
            continue
        end = min(exp, released.get(rid, exp))
        points.append((max(start, end), 0, -qty))  # at equal times, frees come before takes
    points.sort()
    peak, at, level = 0, None, 0
    for t, _, delta in points:
        level += delta
        if level > peak:
            peak, at = level, t
    return peak, at


def _order_checks(label: str, orders: list[dict[str, Any]], deals: dict[str, dict[str, Any]],
                  add: Any) -> dict[str, int]:
    """Checks shared by the API's and PostgreSQL's view of the orders; returns units per deal."""
    ids = Counter(o["id"] for o in orders)
    rids = Counter(o["reservation_id"] for o in orders)
    dup_ids = [k for k, n in ids.items() if n > 1]
    dup_rids = [k for k, n in rids.items() if n > 1]
    add(f"{label}: no order twice", not dup_ids and not dup_rids,
        f"{len(orders)} orders; duplicate ids {dup_ids[:5]}, duplicate reservations {dup_rids[:5]}")
    units: defaultdict[str, int] = defaultdict(int)
    per_user: defaultdict[tuple[str, str], int] = defaultdict(int)
    for o in orders:
        units[o["deal_id"]] += int(o["qty"])
        per_user[(o["deal_id"], o["user_id"])] += int(o["qty"])
    over = []
    for deal_id, info in deals.items():
        if units.get(deal_id, 0) > int(info["quantity"]):
            over.append(f"{deal_id}: {units[deal_id]} > {info['quantity']}")
    add(f"{label}: units in orders <= quantity", not over, "; ".join(over) or
        ", ".join(f"{d}: {units.get(d, 0)}/{i['quantity']}" for d, i in deals.items()))
    over_limit = [f"{u} has {n} of {d} (limit {deals[d]['per_user_limit']})"
                  for (d, u), n in per_user.items()
                  if d in deals and n > int(deals[d]["per_user_limit"])]
    add(f"{label}: no user over the per-user limit", not over_limit, "; ".join(over_limit[:5]) or
        f"{len(per_user)} (deal, user) pairs")
    return dict(units)


async def _pg_snapshot(dsn: str, show_id: str, product_id: str | None) -> dict[str, Any]:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        deals = await conn.fetch(
            "SELECT id, product_id, quantity, sold, status, end_reason, settled, per_user_limit,"
            " hold_ttl_s FROM deals WHERE show_id=$1", show_id)
        orders = await conn.fetch(
            "SELECT id, reservation_id, deal_id, user_id, qty FROM orders WHERE show_id=$1", show_id)
        stock = await conn.fetchval("SELECT stock FROM products WHERE id=$1", product_id) if product_id else None
    finally:
        await conn.close()
    return {"deals": [dict(r) for r in deals], "orders": [dict(r) for r in orders], "stock": stock}


def check(*, api: Any, show_id: str, plan: dict[str, Any], ledger: Iterable[dict[str, Any]],
          samples_violations: list[dict[str, Any]], database_url: str | None,
          deal_product: str | None, deal_stock_before: int | None) -> dict[str, Any]:
    checks: list[dict[str, Any]] = []
    excess: list[int] = [0]

    def add(name: str, ok: bool, detail: str = "", skipped: bool = False) -> None:
        checks.append({"name": name, "ok": bool(ok), "detail": detail, "skipped": skipped})

    entries = list(ledger)
    claims: dict[str, dict[str, Any]] = {}
    released: dict[str, float] = {}
    client_orders: dict[str, dict[str, Any]] = {}
    violations = []
    deal_ids = set()
    for e in entries:
        k = e.get("k")
        if k == "claim" and e.get("rid"):
            claims.setdefault(e["rid"], e)
            deal_ids.add(e["deal"])
        elif k == "release":
            released[e["rid"]] = float(e["t"])
        elif k == "order" and e.get("id"):
            client_orders.setdefault(e["id"], e)
        elif k == "violation":
            violations.append(e)
        elif k == "deal":
            deal_ids.add(e["id"])
    deal_ids |= {v["deal"] for v in samples_violations}

    # 1. The orders API and the deals API.
    orders = api.orders(show_id)
    deal_ids |= {o["deal_id"] for o in orders}
    deals: dict[str, dict[str, Any]] = {}
    for deal_id in sorted(deal_ids):
        deals[deal_id] = api.deal(show_id, deal_id)
    if not deals:
        return {"applicable": False, "passed": True, "oversell": 0, "checks": [],
                "deals": [], "note": "no deal was launched in this run"}
    truncated = len(orders) >= ORDERS_API_LIMIT
    units_api = _order_checks("orders API", orders, deals, add)
    for d, info in deals.items():
        excess.append(units_api.get(d, 0) - int(info["quantity"]))
        excess.append(int(info["sold"]) - int(info["quantity"]))
    mismatched = [f"{d}: sold {i['sold']} vs orders {units_api.get(d, 0)}" for d, i in deals.items()
                  if int(i["sold"]) != units_api.get(d, 0)]
    add("deal sold == units in its orders", not mismatched or truncated,
        ("orders API truncated at 1000; see PostgreSQL" if truncated and mismatched else "")
        + "; ".join(mismatched), skipped=truncated and bool(mismatched))

    # 2. PostgreSQL, the record.
    pg: dict[str, Any] | None = None
    if database_url:
        try:
            pg = asyncio.run(_pg_snapshot(database_url, show_id, deal_product))
        except Exception as exc:
            add("PostgreSQL reachable", False, f"{type(exc).__name__}: {exc}", skipped=True)
    if pg is not None:
        pg_deals = {d["id"]: d for d in pg["deals"]}
        units_pg = _order_checks("PostgreSQL", pg["orders"], pg_deals, add)
        bad = [f"{d}: sold {r['sold']} vs orders {units_pg.get(d, 0)}" for d, r in pg_deals.items()
               if int(r["sold"]) != units_pg.get(d, 0)]
        add("PostgreSQL: deals.sold == units in orders", not bad, "; ".join(bad))
        for d, r in pg_deals.items():
            excess.append(int(r["sold"]) - int(r["quantity"]))
            excess.append(units_pg.get(d, 0) - int(r["quantity"]))
        if not truncated:
            add("orders API == PostgreSQL orders", {o["id"] for o in orders} == {o["id"] for o in pg["orders"]},
                f"API {len(orders)}, PostgreSQL {len(pg['orders'])}")
        if deal_product and deal_stock_before is not None and pg["stock"] is not None:
            taken = sum(int(r["sold"]) if r["settled"] else int(r["quantity"])
                        for r in pg_deals.values() if r["product_id"] == deal_product)
            add("stock conserved (stock now + units the deals took == stock before)",
                int(pg["stock"]) + taken == deal_stock_before,
                f"stock now {pg['stock']} + taken {taken} vs before {deal_stock_before}; "
                f"settled {sum(1 for r in pg_deals.values() if r['settled'])}/{len(pg_deals)}")
        all_orders = pg["orders"]
    else:
        add("PostgreSQL checks", True, "no database URL given (pass --database-url)", skipped=True)
        all_orders = orders

    # 3. What buyers saw.
    by_id = Counter(o["id"] for o in all_orders)
    known = {o["id"]: o for o in all_orders}
    missing = [oid for oid in client_orders if by_id.get(oid, 0) != 1]
    wrong = [oid for oid, e in client_orders.items() if oid in known and (
        known[oid]["reservation_id"] != e["rid"] or known[oid]["user_id"] != e["user"]
        or int(known[oid]["qty"]) != int(e["qty"]))]
    partial = pg is None and truncated
    add("every confirmed order present exactly once", (not missing or partial) and not wrong,
        f"{len(client_orders)} confirmations seen by buyers; missing/duplicated {missing[:5]}, "
        f"different {wrong[:5]}" + ("; the orders API stops at 1000, pass --database-url" if partial else ""),
        skipped=partial and bool(missing))
    add("idempotent replays returned the same result", not violations,
        "; ".join(f"{v.get('what')}: {v.get('detail')}" for v in violations[:5]) or
        "same Idempotency-Key -> same reservation; confirm twice -> same order")

    # 4. Held + sold on the observed timeline.
    sold_rids = {o["reservation_id"] for o in all_orders} | {e["rid"] for e in client_orders.values()}
    timeline = []
    for deal_id, info in deals.items():
        ttl_ms = float(info.get("hold_ttl_s") or (plan.get("deal") or {}).get("hold_ttl_s") or 0) * 1000
        holds = {rid: c for rid, c in claims.items() if c["deal"] == deal_id and c.get("exp")}
        peak, _at = outstanding_peak(holds, sold_rids, released, ttl_ms)
        excess.append(peak - int(info["quantity"]))
        timeline.append((deal_id, peak, int(info["quantity"]), len(holds)))
    add("held + sold never above quantity (buyers' timeline)",
        all(peak <= q for _, peak, q, _ in timeline),
        "; ".join(f"{d}: peak {p}/{q} from {n} holds" for d, p, q, n in timeline))

    # 5. The watcher's samples.
    add("sold + remaining <= quantity in every sample", not samples_violations,
        "; ".join(f"{v['deal']} sold {v['sold']} remaining {v['remaining']} of {v['quantity']}"
                  for v in samples_violations[:5]) or "no violating sample")
    for v in samples_violations:
        excess.append(int(v["sold"]) + int(v["remaining"]) - int(v["quantity"]))

    oversell = max(0, *excess)
    summary = []
    for deal_id, info in deals.items():
        row = {"id": deal_id, "quantity": info["quantity"], "per_user_limit": info["per_user_limit"],
               "sold": info["sold"], "end_reason": info.get("end_reason"),
               "orders_units_api": units_api.get(deal_id, 0),
               "holds_seen": sum(1 for c in claims.values() if c["deal"] == deal_id),
               "peak_held_plus_sold": next((p for d, p, _, _ in timeline if d == deal_id), None)}
        if pg is not None:
            r = next((x for x in pg["deals"] if x["id"] == deal_id), None)
            if r is not None:
                row.update(sold_pg=r["sold"], settled=r["settled"])
        summary.append(row)
    failed = [c for c in checks if not c["ok"] and not c["skipped"]]
    return {"applicable": True, "passed": not failed and oversell == 0, "oversell": oversell,
            "checks": checks, "deals": summary, "client_confirmations": len(client_orders),
            "holds_seen": len(claims), "releases_seen": len(released)}
