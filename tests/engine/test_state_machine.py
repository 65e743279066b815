"""Model-based test of the reservation engine (Hypothesis stateful testing).

A RuleBasedStateMachine drives the real engine (in-process DealEngine on its
own Redis and its own PostgreSQL database) through launch / claim (with and
without Idempotency-Key) / concurrent bursts / confirm / release / expiry /
cancel / sweep / FLUSHALL / FUNCTION FLUSH, predicts every answer from a
plain model, and checks after every step, against Redis and PostgreSQL:
- held + sold <= quantity, and remaining + held + sold == quantity while live;
- every user's units (held + bought) <= per_user_limit, as Redis counts them;
- units are conserved: product stock + unsettled deals' quantity + settled
  deals' sold == the initial stock;
- every confirmed order exists exactly once in PostgreSQL, and no other.

Expiry is simulated by moving a hold's deadline into the past (the same
fields the claim function writes), so runs are deterministic and fast; real
TTL expiry is covered over HTTP in test_reservations_http.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from livecore.errors import LiveCoreError
from livecore.services import Services
from tests.engine.conftest import Isolated
from tests.engine.helpers import deal_in, make_show

T = TypeVar("T")
USERS = ("u0", "u1", "u2", "u3")
KEYS = (None, None, "k0", "k1")
INITIAL_STOCK = 12
MAX_FLUSHES = 2  # per run: data loss is the rare event, the rules around it are the test


@dataclass
class Hold:
    rid: str
    deal_id: str
    user: str
    qty: int
    status: str = "held"  # held | sold | expired | released | lost (Redis forgot it)
    in_redis: bool = True
    order: dict[str, Any] | None = None


@dataclass
class Deal:
    id: str
    quantity: int
    limit: int
    live: bool = True  # open for claims; PostgreSQL says "live" exactly then
    settled: bool = False
    reason: str | None = None
    holds: list[Hold] = field(default_factory=list)

    def units(self, *statuses: str, user: str | None = None) -> int:
        return sum(h.qty for h in self.holds
                   if h.status in statuses and (user is None or h.user == user))

    @property
    def sold(self) -> int:
        return self.units("sold")

    @property
    def remaining(self) -> int:
        return self.quantity - self.sold - self.units("held")


@dataclass
class Idem:
    qty: int
    result: str  # a reservation id, or an error code


class Runner:
    """An event loop of the test's own: Hypothesis rules are synchronous."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def __call__(self, aw: Awaitable[T]) -> T:
        return self.loop.run_until_complete(aw)

    def close(self) -> None:
        async def cancel_leftovers() -> None:  # e.g. the engine's coalesced "remaining" pushes
            current = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        self.loop.run_until_complete(cancel_leftovers())
        self.loop.close()


class EngineMachine(RuleBasedStateMachine):
    svc: Services
    run: Runner

    def __init__(self) -> None:
        super().__init__()
        self.show_id, self.product_id = self.run(make_show(self.svc, stock=INITIAL_STOCK))
        self.stock = INITIAL_STOCK
        self.deals: list[Deal] = []
        self.idem: dict[tuple[str, str, str], Idem] = {}
        self.fresh = 0
        self.flushes = 0
        self.functions_lost = False

    @property
    def engine(self) -> Any:
        return self.svc.deals

    def attempt(self, coro: Coroutine[Any, Any, T]) -> T | LiveCoreError:
        try:
            return self.run(coro)
        except LiveCoreError as exc:
            return exc

    @staticmethod
    def code_of(result: object) -> str:
        return result.code if isinstance(result, LiveCoreError) else "ok"

    def live_deal(self) -> Deal | None:
        return next((d for d in self.deals if d.live), None)

    def all_holds(self) -> list[Hold]:
        return [h for d in self.deals for h in d.holds]

    def deal_of(self, hold: Hold) -> Deal:
        return next(d for d in self.deals if d.id == hold.deal_id)

    def expected_claim(self, deal: Deal, user: str, qty: int) -> str:
        """The claim function's checks, in its order."""
        if not deal.live:
            return "deal_not_live"
        if deal.units("held", "sold", user=user) + qty > deal.limit:
            return "limit_reached"
        if deal.remaining < qty:
            return "sold_out"
        return "ok"

    # ---- rules ----------------------------------------------------------------

    @precondition(lambda self: self.live_deal() is None)
    @rule(quantity=st.integers(1, 6), limit=st.integers(1, 3))
    def launch(self, quantity: int, limit: int) -> None:
        got = self.attempt(self.engine.launch(self.show_id, deal_in(self.product_id, quantity,
                                                                    limit=limit)))
        if quantity > self.stock:
            assert self.code_of(got) == "insufficient_stock", got
            return
        assert not isinstance(got, LiveCoreError), got
        assert got["remaining"] == quantity
        self.stock -= quantity
        self.deals.append(Deal(got["id"], quantity, limit))

    @precondition(lambda self: bool(self.deals))
    @rule(data=st.data(), user=st.sampled_from(USERS), qty=st.integers(1, 3),
          key=st.sampled_from(KEYS))
    def claim(self, data: st.DataObject, user: str, qty: int, key: str | None) -> None:
        deal = data.draw(st.sampled_from(self.deals[-3:]), label="deal")
        got = self.attempt(self.engine.claim(self.show_id, deal.id, user, qty, key))
        prev = self.idem.get((deal.id, user, key)) if key else None
        if prev is not None:
            if prev.qty != qty:
                assert self.code_of(got) == "idempotency_mismatch", got
            elif prev.result.startswith("r."):
                assert not isinstance(got, LiveCoreError) and got["id"] == prev.result, got
            else:
                assert self.code_of(got) == prev.result, (got, prev)
            return
        expected = self.expected_claim(deal, user, qty)
        assert self.code_of(got) == expected, (got, expected)
        if isinstance(got, LiveCoreError):
            result = got.code
        else:
            assert got["qty"] == qty
            deal.holds.append(Hold(got["id"], deal.id, user, qty))
            result = got["id"]
        if key:
            self.idem[(deal.id, user, key)] = Idem(qty, result)

    @precondition(lambda self: bool(self.deals))
    @rule(n=st.integers(2, 12))
    def burst(self, n: int) -> None:
        """n new users claim one unit each at the same moment (one micro-batch)."""
        deal = self.deals[-1]
        users = [f"b{self.fresh + i}" for i in range(n)]
        self.fresh += n

        async def all_at_once() -> list[Any]:
            return await asyncio.gather(
                *[self.engine.claim(self.show_id, deal.id, u, 1) for u in users],
                return_exceptions=True)

        results = self.run(all_at_once())
        winners = [(u, r) for u, r in zip(users, results, strict=True) if isinstance(r, dict)]
        losers = {self.code_of(r) for r in results if not isinstance(r, dict)}
        assert all(isinstance(r, dict | LiveCoreError) for r in results), results
        if deal.live:
            assert len(winners) == min(n, deal.remaining), (len(winners), deal.remaining)
            assert losers <= {"sold_out"}
        else:
            assert not winners and losers == {"deal_not_live"}
        for u, r in winners:
            deal.holds.append(Hold(r["id"], deal.id, u, 1))

    @precondition(lambda self: bool(self.all_holds()))
    @rule(data=st.data())
    def confirm(self, data: st.DataObject) -> None:
        hold = data.draw(st.sampled_from(self.all_holds()), label="hold")
        deal = self.deal_of(hold)
        got = self.attempt(self.engine.confirm(hold.rid, hold.user, f"pay-{hold.rid}"))
        if hold.status == "sold":
            assert got == hold.order, (got, hold.order)
        elif hold.status == "held":
            assert not isinstance(got, LiveCoreError), got
            assert (got["reservation_id"], got["qty"], got["user_id"]) == (hold.rid, hold.qty, hold.user)
            hold.status, hold.order = "sold", got
            if deal.live and deal.sold == deal.quantity:
                deal.live, deal.reason = False, "sold_out"
        elif hold.status == "released":
            assert self.code_of(got) == "reservation_not_active", got
        else:  # expired, or lost with Redis
            assert self.code_of(got) == "reservation_expired", got

    @precondition(lambda self: bool(self.all_holds()))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        hold = data.draw(st.sampled_from(self.all_holds()), label="hold")
        got = self.attempt(self.engine.release(hold.rid, hold.user))
        if hold.status == "sold":
            assert self.code_of(got) == "conflict", got
        elif hold.status == "lost":
            assert self.code_of(got) == "not_found", got
        else:
            assert got is None, got  # released and expired holds: 204 again, nothing moves
            if hold.status == "held":
                hold.status = "released"

    @precondition(lambda self: bool(self.all_holds()))
    @rule(data=st.data(), stranger=st.sampled_from(USERS))
    def someone_elses(self, data: st.DataObject, stranger: str) -> None:
        hold = data.draw(st.sampled_from(self.all_holds()), label="hold")
        if hold.user == stranger:
            return
        confirmed = self.attempt(self.engine.confirm(hold.rid, stranger, "thief"))
        released = self.attempt(self.engine.release(hold.rid, stranger))
        if hold.in_redis:
            assert (self.code_of(confirmed), self.code_of(released)) == ("forbidden", "forbidden")
        elif hold.status == "sold":  # PostgreSQL's order names the owner
            assert (self.code_of(confirmed), self.code_of(released)) == ("forbidden", "conflict")
        else:
            assert (self.code_of(confirmed), self.code_of(released)) == ("reservation_expired",
                                                                         "not_found")

    @precondition(lambda self: any(h.status == "held" for h in self.all_holds()))
    @rule(data=st.data(), confirm_first=st.booleans())
    def expire(self, data: st.DataObject, confirm_first: bool) -> None:
        """The hold's deadline passes; then a late confirm or the sweeper sees it first."""
        hold = data.draw(st.sampled_from([h for h in self.all_holds() if h.status == "held"]),
                         label="hold")
        _, _, holds_key, holddata_key, _ = self.svc.keys.deal_keys(hold.deal_id)

        async def warp() -> None:
            raw = await self.svc.redis.hget(holddata_key, hold.rid)
            qty, _exp, status, user = str(raw).split("|", 3)
            assert (int(qty), status, user) == (hold.qty, "held", hold.user)
            await self.svc.redis.hset(holddata_key, hold.rid, f"{qty}|1|{status}|{user}")
            await self.svc.redis.zadd(holds_key, {hold.rid: 1})

        self.run(warp())
        if confirm_first:
            got = self.attempt(self.engine.confirm(hold.rid, hold.user, "late"))
            assert self.code_of(got) == "reservation_expired", got
            hold.status = "expired"
        else:
            hold.status = "expired"
            self.sweep()

    @precondition(lambda self: bool(self.deals))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        # Mostly the live deal; sometimes one that has ended already.
        deal = self.live_deal() or data.draw(st.sampled_from(self.deals[-2:]), label="deal")
        got = self.attempt(self.engine.cancel(self.show_id, deal.id))
        if deal.live:
            assert not isinstance(got, LiveCoreError) and got["status"] == "ended", got
            deal.live, deal.reason = False, "cancelled"
        else:
            assert self.code_of(got) == "deal_not_live", got

    @precondition(lambda self: any(not d.live and not d.settled for d in self.deals))
    @rule()
    def sweep_ended(self) -> None:
        self.sweep()

    def sweep(self) -> None:
        # Twice: a sweep that finds a deal missing from Redis only rebuilds it.
        self.run(self.engine.sweep_once())
        self.run(self.engine.sweep_once())
        for deal in self.deals:
            if not deal.live and not deal.settled and deal.units("held") == 0:
                deal.settled = True
                self.stock += deal.quantity - deal.sold

    @precondition(lambda self: self.flushes < MAX_FLUSHES and bool(self.all_holds()))
    @rule()
    def flush_redis(self) -> None:
        self.flushes += 1
        self.run(self.svc.redis.flushall())
        for hold in self.all_holds():
            hold.in_redis = False
            if hold.status != "sold":
                hold.status = "lost"
        self.idem.clear()

    @precondition(lambda self: not self.functions_lost and bool(self.deals))
    @rule()
    def lose_functions(self) -> None:
        self.functions_lost = True
        self.run(self.svc.redis.function_flush())  # the engine reloads them on demand

    # ---- invariants -------------------------------------------------------------

    @invariant()
    def agrees_with_postgres(self) -> None:
        async def read() -> tuple[Any, list[Any], list[Any]]:
            product = await self.svc.pool.fetchrow("SELECT stock FROM products WHERE id=$1",
                                                   self.product_id)
            deals = await self.svc.pool.fetch(
                "SELECT id, quantity, sold, status, end_reason, settled FROM deals"
                " WHERE product_id=$1", self.product_id)
            orders = await self.svc.pool.fetch(
                "SELECT o.* FROM orders o JOIN deals d ON d.id = o.deal_id WHERE d.product_id=$1",
                self.product_id)
            return product, list(deals), list(orders)

        product, rows, orders = self.run(read())
        assert product["stock"] == self.stock
        unsettled = sum(r["quantity"] for r in rows if not r["settled"])
        settled_sold = sum(r["sold"] for r in rows if r["settled"])
        assert product["stock"] + unsettled + settled_sold == INITIAL_STOCK
        by_id = {r["id"]: r for r in rows}
        assert set(by_id) == {d.id for d in self.deals}
        for deal in self.deals:
            row = by_id[deal.id]
            assert row["sold"] == deal.sold <= deal.quantity
            assert row["status"] == ("live" if deal.live else "ended")
            assert row["end_reason"] == deal.reason
            assert row["settled"] == deal.settled
        paid = {h.rid: h for h in self.all_holds() if h.status == "sold"}
        assert sorted(o["reservation_id"] for o in orders) == sorted(paid)  # each exactly once
        for o in orders:
            assert (o["id"], o["qty"], o["user_id"]) == (
                paid[o["reservation_id"]].order["id"],  # type: ignore[index]
                paid[o["reservation_id"]].qty, paid[o["reservation_id"]].user)

    @invariant()
    def agrees_with_redis(self) -> None:
        for deal in self.deals[-3:]:
            state_key, users_key, holds_key, holddata_key, _ = self.svc.keys.deal_keys(deal.id)

            async def read(s: str = state_key, u: str = users_key, z: str = holds_key,
                           h: str = holddata_key) -> tuple[Any, ...]:
                return (await self.svc.redis.hgetall(s), await self.svc.redis.hgetall(u),
                        await self.svc.redis.zcard(z), await self.svc.redis.hgetall(h))

            state, users, zcard, holddata = self.run(read())
            if not state:
                continue  # lost, not rebuilt yet: the next call that needs it rebuilds it
            held = {rid: raw.split("|", 3) for rid, raw in holddata.items()}
            held_units = sum(int(q) for q, _e, s, _u in held.values() if s in ("held", "confirming"))
            assert held_units == deal.units("held")
            assert zcard == sum(1 for h in deal.holds if h.status == "held")
            assert int(state["sold"]) == deal.sold
            assert held_units + int(state["sold"]) <= deal.quantity
            assert state["status"] == ("live" if deal.live else "ended")
            if deal.live:
                assert int(state["remaining"]) == deal.remaining
                assert int(state["remaining"]) + held_units + int(state["sold"]) == deal.quantity
            for user in set(users) | {h.user for h in deal.holds}:
                expected = deal.units("held", "sold", user=user)
                assert int(users.get(user, 0)) == expected <= deal.limit, (user, users)

    def teardown(self) -> None:
        """End everything and check the books close: stock = initial - sold."""
        deal = self.live_deal()
        if deal is not None:
            self.run(self.engine.cancel(self.show_id, deal.id))
            deal.live, deal.reason = False, "cancelled"
        for hold in self.all_holds():
            if hold.status == "held":
                self.run(self.engine.release(hold.rid, hold.user))
                hold.status = "released"
        self.sweep()
        self.agrees_with_postgres()
        assert all(d.settled for d in self.deals)
        assert self.stock == INITIAL_STOCK - sum(d.sold for d in self.deals)


@pytest.fixture
def machine_services(isolated: Isolated) -> Iterator[tuple[Services, Runner]]:
    run = Runner()
    svc = run(Services.create(isolated.settings(prefix="sm")))
    try:
        yield svc, run
    finally:
        run(svc.aclose())
        run.close()


def test_engine_against_model(machine_services: tuple[Services, Runner]) -> None:
    EngineMachine.svc, EngineMachine.run = machine_services
    run_state_machine_as_test(EngineMachine, settings=settings(
        max_examples=60, stateful_step_count=40, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
