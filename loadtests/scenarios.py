"""The four scenarios and the plan they turn into.

A plan is a plain JSON object: which user classes run how many users, how
each behaves, and which show/products they use. The orchestrator builds it
(after creating the show) and hands it to locust as `--lc-plan`; locust's
master forwards it to its workers, so remote workers need no files.
The plan holds no secrets: tokens are minted from LIVECORE_SECRET (or an
admin token) found in each load process's environment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

MAX_USERS = 50_000
MAX_RUN_TIME_S = 2 * 3600


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    audience: dict[str, float]          # user class -> share of --users
    staff: dict[str, int]               # user class -> fixed count, on top of --users
    hold_s: int                         # steady-state seconds after the ramp
    viewer: dict[str, Any] = field(default_factory=dict)
    buyer: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    moderator: dict[str, Any] = field(default_factory=dict)
    deals: bool = False


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario(
        "viewer-storm", "N viewers join and stay; the host announces every second and re-pins "
        "every 10 s; viewers react now and then. Measures handshakes, sockets held, fanout.",
        audience={"Viewer": 1.0}, staff={"Host": 1}, hold_s=40,
        viewer={"chat_per_min": 0.0, "react_per_min": 2.0},
        host={"announce_every_s": 1.0, "pin_every_s": 10.0}),
    Scenario(
        "chat-storm", "N viewers chat (about one message every 5 s each) and react; two moderators "
        "delete messages and time users out. Measures chat fanout and acks under rate limits.",
        audience={"Viewer": 1.0}, staff={"Host": 1, "Moderator": 2}, hold_s=40,
        viewer={"chat_per_min": 12.0, "react_per_min": 20.0},
        host={"announce_every_s": 10.0, "pin_every_s": 20.0},
        moderator={"delete_every_s": 2.0, "timeout_every_s": 10.0, "timeout_s": 5}),
    Scenario(
        "flash-sale", "N buyers join; once they are all in, the host launches one deal of M units; "
        "every buyer claims at once; most confirm, some release or walk away, losers retry "
        "while units come back. Stops when the deal is over and settled.",
        audience={"Buyer": 1.0}, staff={"Host": 1}, hold_s=0,
        buyer={"chat_per_min": 0.0, "react_per_min": 0.0},
        host={"announce_every_s": 0.0, "pin_every_s": 0.0, "launch_when_ready": True,
              "deal_every_s": 0.0}, deals=True),
    Scenario(
        "full-show", "A whole show: viewers (80 %) chat and react, buyers (20 %) race for a deal "
        "the host launches every 30 s, the host pins and announces, a moderator deletes and "
        "times out.",
        audience={"Viewer": 0.8, "Buyer": 0.2}, staff={"Host": 1, "Moderator": 1}, hold_s=75,
        viewer={"chat_per_min": 3.0, "react_per_min": 6.0},
        buyer={"chat_per_min": 1.0, "react_per_min": 2.0},
        host={"announce_every_s": 5.0, "pin_every_s": 15.0, "deal_every_s": 30.0,
              "first_deal_after_s": 5.0},
        moderator={"delete_every_s": 5.0, "timeout_every_s": 15.0, "timeout_s": 5}, deals=True),
)}


def class_counts(scenario: Scenario, users: int) -> dict[str, int]:
    """Exact user counts per class: the audience split of `users`, plus the staff."""
    counts: dict[str, int] = {}
    left = users
    items = sorted(scenario.audience.items(), key=lambda kv: kv[1])
    for i, (cls, share) in enumerate(items):
        n = left if i == len(items) - 1 else min(left, round(users * share))
        counts[cls] = n
        left -= n
    counts.update(scenario.staff)
    return {k: v for k, v in counts.items() if v > 0}


def default_spawn_rate(users: int) -> float:
    return float(max(10, min(250, math.ceil(users / 10))))


@dataclass
class Knobs:
    """What the command line can change; None means the scenario's default."""
    users: int
    spawn_rate: float | None = None
    run_time_s: int | None = None
    units: int | None = None
    deal_duration_s: int | None = None
    hold_ttl_s: int | None = None
    per_user_limit: int = 1
    price_cents: int = 1999
    claim_via: str = "http"
    confirm_ratio: float = 0.8
    release_ratio: float = 0.1
    anonymous_ratio: float = 0.0
    chat_per_min: float | None = None
    react_per_min: float | None = None


def deal_params(scenario: Scenario, knobs: Knobs, counts: dict[str, int]) -> dict[str, Any] | None:
    if not scenario.deals:
        return None
    buyers = counts.get("Buyer", 0)
    flash = scenario.name == "flash-sale"
    default_units = max(1, buyers // 10) if flash else max(1, buyers // 4)
    return {
        "quantity": knobs.units or default_units,
        "duration_s": knobs.deal_duration_s or (20 if flash else 15),
        "hold_ttl_s": knobs.hold_ttl_s or (8 if flash else 10),
        "per_user_limit": knobs.per_user_limit,
        "price_cents": knobs.price_cents,
    }


def timing(scenario: Scenario, knobs: Knobs, counts: dict[str, int],
           deal: dict[str, Any] | None) -> tuple[float, int, int]:
    """(spawn rate, ramp seconds, run-time bound seconds)."""
    total = sum(counts.values())
    rate = knobs.spawn_rate or default_spawn_rate(knobs.users)
    ramp = math.ceil(total / rate)
    if knobs.run_time_s:
        return rate, ramp, knobs.run_time_s
    if scenario.name == "flash-sale":
        assert deal is not None
        # ramp, wait for everyone to be in, the deal, the last holds, margin; stops early when done.
        bound = ramp + 20 + deal["duration_s"] + deal["hold_ttl_s"] + 20
    else:
        bound = ramp + scenario.hold_s
    return rate, ramp, bound


def deals_expected(scenario: Scenario, run_time_s: int, ramp_s: int) -> int:
    if not scenario.deals:
        return 0
    every = float(scenario.host.get("deal_every_s") or 0)
    if every <= 0:
        return 1
    return max(1, int((run_time_s - ramp_s) // every) + 1)


def build_plan(scenario: Scenario, knobs: Knobs, *, run_id: str, targets: list[str], show_id: str,
               products: list[str], deal_product: str | None,
               same_host_clock: bool = False) -> dict[str, Any]:
    counts = class_counts(scenario, knobs.users)
    deal = deal_params(scenario, knobs, counts)
    rate, ramp, run_time = timing(scenario, knobs, counts, deal)
    viewer = dict(scenario.viewer)
    buyer = dict(scenario.buyer)
    for section in (viewer, buyer):
        if knobs.chat_per_min is not None:
            section["chat_per_min"] = knobs.chat_per_min
        if knobs.react_per_min is not None:
            section["react_per_min"] = knobs.react_per_min
    viewer["anonymous_ratio"] = knobs.anonymous_ratio
    buyer.update({
        "claim_via": knobs.claim_via, "confirm_ratio": knobs.confirm_ratio,
        "release_ratio": knobs.release_ratio, "retry_same_key_ratio": 0.05,
        "double_confirm_ratio": 0.05, "greedy_ratio": 0.1, "max_claims": 12,
        # payment think time stays well inside the hold TTL
        "pay_s": [0.2, min(2.0, (deal["hold_ttl_s"] if deal else 10) / 3)],
    })
    host = dict(scenario.host)
    host["ready_viewers"] = counts.get("Buyer", 0) + counts.get("Viewer", 0)
    host["ready_timeout_s"] = ramp + 20
    return {
        "run_id": run_id, "scenario": scenario.name, "targets": targets, "show_id": show_id,
        "products": products, "deal_product": deal_product, "users": knobs.users,
        "classes": counts, "spawn_rate": rate, "ramp_s": ramp, "run_time_s": run_time,
        "token_ttl_s": run_time + 1800, "viewer": viewer, "buyer": buyer, "host": host,
        "moderator": dict(scenario.moderator), "deal": deal,
        # Load processes and server share this host's clock: delivery latency needs no offset.
        "same_host_clock": same_host_clock,
    }
