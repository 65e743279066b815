"""Turn a run's folder into numbers, charts and a Markdown summary.

Inputs (all in the report folder): `timeseries.jsonl` (one record per load
process per second, plus meta lines), `watch.jsonl` (the watcher's samples),
`correctness.json` and `plan.json`. Outputs: `summary.json`, `summary.md`,
`latency.png`, `throughput.png`, `resources.png`.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from loadtests.correctness import read_jsonl
from loadtests.metrics import BROADCAST_TYPES, TIMER_TYPES, Hist


def _pct(h: Hist) -> dict[str, Any]:
    return {"n": h.count, "p50": h.percentile(0.5), "p90": h.percentile(0.9),
            "p99": h.percentile(0.99), "max": h.max(),
            "mean": round(h.mean() or 0, 1) if h.count else None}


class Series:
    """Per-second aggregates over every load process."""

    def __init__(self, records: list[dict[str, Any]], t0: float) -> None:
        self.t0 = t0
        self.sec: dict[int, dict[str, Any]] = defaultdict(lambda: {
            "frames": 0, "bytes": 0, "events": 0, "broadcast": 0, "lat_b": Hist(), "lat_t": Hist(),
            "claims": Counter(), "claim_lat": Hist(), "handshakes": Hist(), "conns": {}, "cpu": {}})
        self.lat: defaultdict[str, Hist] = defaultdict(Hist)
        self.claims: defaultdict[str, Hist] = defaultdict(Hist)
        self.acks: defaultdict[str, Hist] = defaultdict(Hist)
        self.handshake = Hist()
        self.events: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        self.handshake_fail: Counter[str] = Counter()
        self.reconnects = 0
        self.negative = 0
        self.clocks: dict[str, list[float]] = {}
        self.nodes: set[str] = set()
        for rec in records:
            self._add(rec)

    def _add(self, rec: dict[str, Any]) -> None:
        # Records are flushed on (absolute) second boundaries: bucket by that second.
        s = round(rec["t"]) - int(self.t0)
        b = self.sec[s]
        node = rec["node"]
        self.nodes.add(node)
        b["frames"] += rec.get("frames", 0)
        b["bytes"] += rec.get("bytes", 0)
        for type_, n in rec.get("events", {}).items():
            b["events"] += n
            self.events[type_] += n
            if type_ in BROADCAST_TYPES:
                b["broadcast"] += n
        for type_, pairs in rec.get("lat", {}).items():
            self.lat[type_].merge(pairs)
            if type_ in BROADCAST_TYPES:
                b["lat_b"].merge(pairs)
            elif type_ in TIMER_TYPES:
                b["lat_t"].merge(pairs)
        for outcome, pairs in rec.get("claims", {}).items():
            self.claims[outcome].merge(pairs)
            b["claim_lat"].merge(pairs)
            b["claims"][outcome] += sum(n for _, n in pairs)
        for name, pairs in rec.get("acks", {}).items():
            self.acks[name].merge(pairs)
        self.handshake.merge(rec.get("handshake"))
        b["handshakes"].merge(rec.get("handshake"))
        self.outcomes.update(rec.get("outcomes", {}))
        self.closes.update(rec.get("closes", {}))
        self.handshake_fail.update(rec.get("handshake_fail", {}))
        self.reconnects += rec.get("reconnects", 0)
        self.negative += rec.get("negative", 0)
        self.clocks.update(rec.get("clocks", {}))
        b["conns"][node] = sum(rec.get("conns", {}).values())
        if rec.get("cpu") is not None:
            b["cpu"][node] = rec["cpu"]

    def seconds(self) -> list[int]:
        return sorted(self.sec)

    def sockets(self) -> dict[int, int]:
        """Open sockets per second, carrying each process's last report forward."""
        last: dict[str, int] = {}
        out = {}
        for s in self.seconds():
            last.update(self.sec[s]["conns"])
            out[s] = sum(last.values())
        return out


def _window_mean(values: dict[int, float], lo: float, hi: float) -> float | None:
    picked = [v for s, v in values.items() if lo <= s <= hi]
    return sum(picked) / len(picked) if picked else None


def summarize(report_dir: Path, extra: dict[str, Any]) -> dict[str, Any]:
    plan = extra.get("plan", {})
    lines = read_jsonl(report_dir / "timeseries.jsonl")
    meta = {m["meta"]: m for m in lines if "meta" in m}
    records = [r for r in lines if "meta" not in r and "node" in r]
    t0 = meta.get("test_start", {}).get("t") or (min((r["t"] for r in records), default=0) - 1)
    series = Series(records, t0)
    spawned = meta.get("spawned", {}).get("t")
    stop_t = (meta.get("stop_requested") or meta.get("test_stop") or {}).get("t")
    last = series.seconds()[-1] if series.sec else 0
    lo = (spawned - t0 + 2) if spawned else float(plan.get("ramp_s", 0)) + 2
    hi = (stop_t - t0 - 1) if stop_t else last - 1
    if hi < lo:
        lo, hi = 0, last
    secs = series.sec
    events = {s: float(b["events"]) for s, b in secs.items()}
    frames = {s: float(b["frames"]) for s, b in secs.items()}
    broadcast = {s: float(b["broadcast"]) for s, b in secs.items()}
    sockets = series.sockets()
    lat_b = Hist()
    lat_t = Hist()
    for type_, h in series.lat.items():
        (lat_b if type_ in BROADCAST_TYPES else lat_t if type_ in TIMER_TYPES else Hist()).merge(h)
    claim_secs = {s: float(sum(b["claims"].values())) for s, b in secs.items() if b["claims"]}
    claim_all = Hist()
    for h in series.claims.values():
        claim_all.merge(h)
    ok_secs = {s: float(b["claims"].get("ok", 0)) for s, b in secs.items() if b["claims"]}
    expected_users = sum((plan.get("classes") or {}).values())
    watch = read_jsonl(report_dir / "watch.jsonl")
    resources: dict[str, Any] = {}
    for key in ("server_cpu", "backends_cpu", "server_rss_mb", "system_cpu"):
        vals = [w[key] for w in watch if key in w]
        if vals:
            resources[key] = {"mean": round(sum(vals) / len(vals), 1), "max": max(vals)}
    cpus = [c for b in secs.values() for c in b["cpu"].values()]
    if cpus:
        resources["client_cpu_per_process"] = {"mean": round(sum(cpus) / len(cpus), 1), "max": max(cpus),
                                               "processes": len(series.nodes)}
    claims_total = sum(claim_all.counts.values())
    summary: dict[str, Any] = {
        "scenario": plan.get("scenario"), "run_id": plan.get("run_id"),
        "users_planned": plan.get("classes"), "users_total": expected_users,
        "window_s": [round(lo, 1), round(hi, 1)], "duration_s": last,
        "sockets": {"peak": max(sockets.values(), default=0),
                    "at_window_end": sockets.get(int(hi), max(sockets.values(), default=0)),
                    "expected": expected_users},
        "handshake_ms": _pct(series.handshake), "handshake_failures": dict(series.handshake_fail),
        "unexpected_closes": dict(series.closes), "reconnects": series.reconnects,
        "events_per_s": {"mean": _round(_window_mean(events, lo, hi)), "peak": max(events.values(), default=0)},
        "broadcast_events_per_s": {"mean": _round(_window_mean(broadcast, lo, hi)),
                                   "peak": max(broadcast.values(), default=0)},
        "frames_per_s": {"mean": _round(_window_mean(frames, lo, hi)), "peak": max(frames.values(), default=0)},
        "events_total": sum(series.events.values()), "frames_total": sum(b["frames"] for b in secs.values()),
        "delivery_ms": {"broadcast": _pct(lat_b), "timer": _pct(lat_t),
                        "by_type": {t: _pct(h) for t, h in sorted(series.lat.items())}},
        "negative_latencies": series.negative,
        "clock_offsets_ms": {n: {"offset": v[0], "rtt": v[1]} for n, v in series.clocks.items()},
        "claims": {"total": claims_total,
                   "by_outcome": {o: _pct(h) for o, h in sorted(series.claims.items())},
                   "per_s_peak": max(claim_secs.values(), default=0),
                   "per_s_mean_active": _round(sum(claim_secs.values()) / len(claim_secs)) if claim_secs else 0,
                   "ok_per_s_peak": max(ok_secs.values(), default=0),
                   "latency_ms": _pct(claim_all)},
        "acks": {n: _pct(h) for n, h in sorted(series.acks.items())},
        "outcomes": dict(sorted(series.outcomes.items())),
        "seq_gaps": series.outcomes.get("seq_gap", 0), "seq_dups": series.outcomes.get("seq_dup", 0),
        "resources": resources, "same_host_clock": bool(plan.get("same_host_clock")),
    }
    summary.update({k: v for k, v in extra.items() if k != "plan"})
    charts(report_dir, series, sockets, watch, t0)
    return summary


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


# ---- charts ------------------------------------------------------------------

def charts(report_dir: Path, series: Series, sockets: dict[int, int], watch: list[dict[str, Any]],
           t0: float) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    secs = series.seconds()
    if not secs:
        return []
    made = []

    def pcts(key: str, p: float) -> list[float]:
        return [float(series.sec[s][key].percentile(p)) if series.sec[s][key] else math.nan for s in secs]

    # latency.png: delivery p50/p99 (broadcast and timer events), claims, handshakes
    has_claims = any(series.sec[s]["claim_lat"] for s in secs)
    fig, axes = plt.subplots(2 if has_claims else 1, 1, figsize=(11, 7 if has_claims else 4.5),
                             sharex=True, squeeze=False)
    ax = axes[0][0]
    mk = {"marker": "o", "markersize": 2.5}
    ax.plot(secs, pcts("lat_b", 0.5), label="broadcast events p50", color="tab:blue", **mk)
    ax.plot(secs, pcts("lat_b", 0.99), label="broadcast events p99", color="tab:blue", linestyle="--", **mk)
    ax.plot(secs, pcts("lat_t", 0.5), label="timer events p50", color="tab:green", alpha=0.7, **mk)
    ax.plot(secs, pcts("lat_t", 0.99), label="timer events p99", color="tab:green", linestyle="--",
            alpha=0.7, **mk)
    ax.plot(secs, pcts("handshakes", 0.99), label="handshake p99", color="tab:gray", linestyle=":", **mk)
    ax.set_ylabel("ms")
    ax.set_yscale("symlog", linthresh=10)
    ax.set_title("Event delivery latency (server ts -> client receive), per second")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    if has_claims:
        ax2 = axes[1][0]
        ax2.plot(secs, pcts("claim_lat", 0.5), label="claim p50", color="tab:red", **mk)
        ax2.plot(secs, pcts("claim_lat", 0.99), label="claim p99", color="tab:red", linestyle="--", **mk)
        ax2.set_ylabel("ms")
        ax2.set_title("Claim round trip (all outcomes), per second")
        ax2.grid(alpha=0.3)
        ax2.legend(loc="upper left", fontsize=8)
    axes[-1][0].set_xlabel("seconds since start")
    fig.tight_layout()
    fig.savefig(report_dir / "latency.png", dpi=110)
    plt.close(fig)
    made.append("latency.png")

    # throughput.png: events/frames per second and sockets; claims per second by outcome
    fig, axes = plt.subplots(2 if has_claims else 1, 1, figsize=(11, 7 if has_claims else 4.5),
                             sharex=True, squeeze=False)
    ax = axes[0][0]
    ax.plot(secs, [series.sec[s]["events"] for s in secs], label="events/s (all)", color="tab:blue")
    ax.plot(secs, [series.sec[s]["broadcast"] for s in secs], label="broadcast events/s", color="tab:cyan")
    ax.plot(secs, [series.sec[s]["frames"] for s in secs], label="frames/s", color="tab:purple", alpha=0.7)
    ax.set_ylabel("per second")
    ax.grid(alpha=0.3)
    right = ax.twinx()
    right.plot(secs, [sockets[s] for s in secs], label="open sockets", color="tab:orange")
    right.set_ylabel("open sockets")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = right.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
    ax.set_title("Received by the load generators")
    if has_claims:
        ax2 = axes[1][0]
        outcomes = sorted({o for s in secs for o in series.sec[s]["claims"]})
        bottom = [0.0] * len(secs)
        for outcome in outcomes:
            vals = [float(series.sec[s]["claims"].get(outcome, 0)) for s in secs]
            ax2.bar(secs, vals, bottom=bottom, label=outcome, width=1.0)
            bottom = [a + b for a, b in zip(bottom, vals, strict=True)]
        ax2.set_ylabel("claims/s")
        ax2.set_title("Claims per second by outcome")
        ax2.grid(alpha=0.3)
        ax2.legend(loc="upper right", fontsize=8)
    axes[-1][0].set_xlabel("seconds since start")
    fig.tight_layout()
    fig.savefig(report_dir / "throughput.png", dpi=110)
    plt.close(fig)
    made.append("throughput.png")

    # resources.png: CPU of load processes and (local runs) of the server and backends
    fig, ax = plt.subplots(figsize=(11, 4))
    for node in sorted(series.nodes):
        ax.plot(secs, [series.sec[s]["cpu"].get(node, math.nan) for s in secs],
                label=f"load process {node[-6:]}", alpha=0.8)
    if watch:
        wt = [w["t"] - t0 for w in watch]
        for key, label in (("server_cpu", "livecore serve"), ("backends_cpu", "Redis + PostgreSQL"),
                           ("system_cpu", "whole machine")):
            if any(key in w for w in watch):
                ax.plot(wt, [w.get(key, math.nan) for w in watch], label=label)
    ax.set_ylabel("CPU % (100 = one core)")
    ax.set_xlabel("seconds since start")
    ax.set_title("CPU")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(report_dir / "resources.png", dpi=110)
    plt.close(fig)
    made.append("resources.png")
    return made


# ---- Markdown ------------------------------------------------------------------

def _ms(p: dict[str, Any] | None, keys: tuple[str, ...] = ("p50", "p99")) -> str:
    if not p or not p.get("n"):
        return "–"
    return " / ".join(f"{p[k]}" for k in keys) + " ms"


def _num(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def markdown(summary: dict[str, Any], correctness: dict[str, Any] | None) -> str:
    s = summary
    out = [f"# Load test `{s.get('scenario')}` — {s.get('started', '')}", ""]
    out += [f"- Command: `{s.get('command', '')}`",
            f"- Target: {s.get('target_desc', '')}",
            f"- Users: {', '.join(f'{n} {c}' for c, n in (s.get('users_planned') or {}).items())}"
            f" (spawn {s.get('spawn_rate')}/s, bound {s.get('run_time_s')} s)",
            f"- Ran {s.get('duration_s')} s; steady window {s['window_s'][0]}–{s['window_s'][1]} s; "
            f"stopped by: {s.get('stop_reason') or 'time bound'}", ""]
    claims = s["claims"]
    rows = [
        ("Sockets held (peak / expected)", f"{s['sockets']['peak']:,} / {s['sockets']['expected']:,}"),
        ("Handshake p50 / p99 (hello → welcome, incl. TCP + upgrade)", _ms(s["handshake_ms"])),
        ("Handshake failures / unexpected closes / reconnects",
         f"{sum(s['handshake_failures'].values())} / {sum(s['unexpected_closes'].values())} / {s['reconnects']}"),
        ("Events received/s (steady mean / peak 1 s)",
         f"{_num(s['events_per_s']['mean'])} / {_num(s['events_per_s']['peak'])}"),
        ("  of which broadcast (seq) events/s", f"{_num(s['broadcast_events_per_s']['mean'])} / "
                                                 f"{_num(s['broadcast_events_per_s']['peak'])}"),
        ("Frames received/s (steady mean / peak)",
         f"{_num(s['frames_per_s']['mean'])} / {_num(s['frames_per_s']['peak'])}"),
        ("Delivery latency p50 / p99, broadcast events", _ms(s["delivery_ms"]["broadcast"])),
        ("Delivery latency p50 / p99, timer events (tick, viewers, reactions)", _ms(s["delivery_ms"]["timer"])),
        ("seq gaps / duplicates", f"{s['seq_gaps']} / {s['seq_dups']}"),
    ]
    if claims["total"]:
        ok = claims["by_outcome"].get("ok")
        so = claims["by_outcome"].get("sold_out")
        rows += [("Claims (total; peak/s; mean/s over seconds with claims)",
                  f"{claims['total']:,}; {_num(claims['per_s_peak'])}; {_num(claims['per_s_mean_active'])}"),
                 ("Claim p50 / p99: ok", _ms(ok)), ("Claim p50 / p99: sold_out", _ms(so))]
    if correctness and correctness.get("applicable"):
        verdict = "PASS" if correctness["passed"] else "FAIL"
        rows.append(("Oversell (units above quantity)", f"**{correctness['oversell']}** ({verdict})"))
    res = s.get("resources", {})
    if "client_cpu_per_process" in res:
        c = res["client_cpu_per_process"]
        rows.append(("Load process CPU % (mean / max, per process)", f"{c['mean']} / {c['max']} "
                                                                      f"({c['processes']} process(es))"))
    if "server_cpu" in res:
        rows.append(("Server CPU % (mean / max, all serve processes)",
                     f"{res['server_cpu']['mean']} / {res['server_cpu']['max']}"))
    if "backends_cpu" in res:
        rows.append(("Redis + PostgreSQL CPU % (mean / max)",
                     f"{res['backends_cpu']['mean']} / {res['backends_cpu']['max']}"))
    machine = s.get("machine") or {}
    if "system_cpu" in res and machine:
        rows.append((f"Whole machine CPU % ({machine.get('cpus')} cores = {100 * (machine.get('cpus') or 1)} %; "
                     "includes anything else running)",
                     f"{res['system_cpu']['mean']} / {res['system_cpu']['max']}; load average before "
                     f"{machine.get('loadavg_before', ['?'])[0]}, after {machine.get('loadavg_after', ['?'])[0]}"))
    out += ["## Headline", "", "| | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows] + [""]

    out += ["## Delivery latency by event type", "",
            "| type | events | p50 ms | p90 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|---:|"]
    for t, p in s["delivery_ms"]["by_type"].items():
        out.append(f"| {t} | {p['n']:,} | {p['p50']} | {p['p90']} | {p['p99']} | {p['max']} |")
    offsets = s.get("clock_offsets_ms") or {}
    if offsets:
        applied = ("not applied: server and load processes share this host's clock" if s.get("same_host_clock")
                   else "applied")
        out += ["", "Clock offset estimates (server − client, lowest-RTT welcome or pong; "
                f"{applied}): " + ", ".join(
                    f"{n}: {v['offset']} ms ± {round(v['rtt'] / 2, 2)}" for n, v in offsets.items())
                + f"; negative latencies clamped to 0: {s['negative_latencies']}."]
    if claims["total"]:
        out += ["", "## Claims by outcome", "", "| outcome | claims | p50 ms | p99 ms | max ms |",
                "|---|---:|---:|---:|---:|"]
        for o, p in claims["by_outcome"].items():
            out.append(f"| {o} | {p['n']:,} | {p['p50']} | {p['p99']} | {p['max']} |")
    if s["acks"]:
        out += ["", "## Commands (socket acks)", "", "| command outcome | n | p50 ms | p99 ms |",
                "|---|---:|---:|---:|"]
        for n, p in s["acks"].items():
            out.append(f"| {n} | {p['n']:,} | {p['p50']} | {p['p99']} |")
    if s["outcomes"]:
        out += ["", "Other counts: " + ", ".join(f"{k} {v:,}" for k, v in s["outcomes"].items())]
    out += ["", "## Correctness (flash deals)", ""]
    if not correctness or not correctness.get("applicable"):
        out.append((correctness or {}).get("note", "not applicable: no deal in this run"))
    else:
        out.append(f"**{'PASS' if correctness['passed'] else 'FAIL'}**, oversell {correctness['oversell']}.")
        out += ["", "| check | result | detail |", "|---|---|---|"]
        for c in correctness["checks"]:
            mark = "skipped" if c["skipped"] else ("ok" if c["ok"] else "**FAILED**")
            out.append(f"| {c['name']} | {mark} | {c['detail'].replace('|', '/')} |")
        out += ["", "| deal | quantity | limit | sold | end | peak held+sold | holds seen |",
                "|---|---:|---:|---:|---|---:|---:|"]
        for d in correctness["deals"]:
            out.append(f"| {d['id']} | {d['quantity']} | {d['per_user_limit']} | {d['sold']} | "
                       f"{d.get('end_reason')} | {d.get('peak_held_plus_sold')} | {d.get('holds_seen')} |")
    out += ["", "## Files", "",
            "- `locust_stats.csv`, `locust_stats_history.csv`, `locust_failures.csv`, "
            "`locust_exceptions.csv`, `locust.html`, `locust.log`: locust's own report "
            "(request types WS, EVENT, CLAIM, RATE, HTTP methods; ignore the Aggregated row, it mixes units)",
            "- `timeseries.jsonl`: one record per load process per second; `ledger.jsonl`: claims, "
            "releases, orders, deals seen by the users; `watch.jsonl`: the watcher's samples",
            "- `latency.png`, `throughput.png`, `resources.png`; `summary.json`; `correctness.json`; "
            "`plan.json`", ""]
    return "\n".join(out)
