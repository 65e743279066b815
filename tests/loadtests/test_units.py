"""The pure parts of loadtests: histograms, the held+sold timeline, target safety, plans."""

from __future__ import annotations

import pytest

from loadtests import scenarios
from loadtests.correctness import outstanding_peak
from loadtests.metrics import Hist, bucket
from loadtests.recorder import ClockBook, Recorder
from loadtests.safety import UnsafeTarget, check_targets, normalise_target, ws_base


def test_bucket_keeps_two_significant_digits() -> None:
    assert [bucket(v) for v in (-3, 0, 0.4, 7.6, 99.4)] == [0, 0, 0, 8, 99]
    assert [bucket(v) for v in (104, 1234, 98765)] == [100, 1200, 99000]


def test_hist_percentiles_merge_and_round_trip() -> None:
    a, b = Hist(), Hist()
    for v in range(1, 51):
        a.add(v)
    for v in range(51, 101):
        b.add(v)
    merged = Hist.of(a.pairs()).merge(b.pairs())
    assert merged.count == 100
    assert merged.percentile(0.5) == 50
    assert merged.percentile(0.99) == 99
    assert merged.max() == 100
    assert Hist().percentile(0.5) is None


def test_outstanding_peak_counts_holds_until_sold_released_or_expired() -> None:
    ttl = 1000.0
    holds = {"a": {"exp": 2000, "qty": 1}, "b": {"exp": 2000, "qty": 1},  # both from t=1000
             "c": {"exp": 3000, "qty": 1}}                                  # from t=2000
    # a sold (forever), b expires at 2000 exactly when c starts: peak 2, not 3
    assert outstanding_peak(holds, sold={"a"}, released={}, ttl_ms=ttl)[0] == 2
    # b released early at 1500: still 2 at most
    assert outstanding_peak(holds, sold={"a"}, released={"b": 1500}, ttl_ms=ttl)[0] == 2
    # c claimed while b is still held (b's hold ran to 2500): an oversell of 1 for quantity 2
    holds["b"]["exp"] = 2500
    assert outstanding_peak(holds, sold={"a"}, released={}, ttl_ms=ttl)[0] == 3


def test_clock_book_keeps_lowest_rtt_sample() -> None:
    book = ClockBook()
    book.observe("n1", sent_ms=1000, received_ms=1100, server_time=1080)   # rtt 100, offset +30
    book.observe("n1", sent_ms=2000, received_ms=2004, server_time=2012)   # rtt 4, offset +10
    book.observe("n1", sent_ms=3000, received_ms=3300, server_time=2000)   # worse rtt: ignored
    assert book.offset("n1") == 10
    assert book.uncertainty("n1") == 2
    assert book.offset("unknown") == 0


def test_recorder_flush_resets_counters_but_not_sockets() -> None:
    rec = Recorder("node")
    rec.conns["viewer"] += 2
    rec.frame(100)
    rec.event("chat.message", 12.0)
    rec.claim("ok", 20)
    rec.note(k="claim", rid="r1")
    first = rec.flush(t=1.0)
    assert first["frames"] == 1 and first["events"] == {"chat.message": 1}
    assert first["claims"] == {"ok": [[20, 1]]} and first["ledger"] == [{"k": "claim", "rid": "r1"}]
    second = rec.flush(t=2.0)
    assert second["frames"] == 0 and second["ledger"] == [] and second["conns"] == {"viewer": 2}


def test_targets_must_be_loopback_unless_allowed() -> None:
    check_targets(["http://127.0.0.1:8000", "http://localhost:9000", "http://[::1]:8000"], False)
    with pytest.raises(UnsafeTarget):
        check_targets(["http://10.1.2.3:8000"], False)
    check_targets(["http://10.1.2.3:8000"], True)
    assert normalise_target("127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert normalise_target("wss://example.test") == "https://example.test"
    assert ws_base("https://example.test") == "wss://example.test"


def test_class_counts_and_plan() -> None:
    full = scenarios.SCENARIOS["full-show"]
    counts = scenarios.class_counts(full, 101)
    assert counts == {"Buyer": 20, "Viewer": 81, "Host": 1, "Moderator": 1}
    flash = scenarios.SCENARIOS["flash-sale"]
    plan = scenarios.build_plan(flash, scenarios.Knobs(users=500), run_id="r", targets=["http://127.0.0.1:1"],
                                show_id="s", products=["p1", "p2"], deal_product="p1")
    assert plan["classes"] == {"Buyer": 500, "Host": 1}
    assert plan["deal"]["quantity"] == 50 and plan["deal"]["per_user_limit"] == 1
    assert plan["host"]["ready_viewers"] == 500
    assert plan["run_time_s"] <= scenarios.MAX_RUN_TIME_S
    assert plan["buyer"]["pay_s"][1] < plan["deal"]["hold_ttl_s"]
