"""The orchestrator's eyes during a run (a plain thread, outside locust).

Every half second it
- reads the show through the HTTP API and, for each deal it knows, the deal
  (`sold` is read from PostgreSQL before `remaining` from Redis, so
  `sold + remaining <= quantity` must hold in every sample) and records
  every sample that breaks it;
- samples CPU and memory of local server, Redis and PostgreSQL processes;
- tails the run's per-second records to print progress;
- for flash sales, decides when the sale is over (every deal ended and
  settled, or ended for longer than its hold TTL) and asks locust to stop
  by creating the STOP file the locust master watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import psutil

from loadtests.provision import Api


class Watcher(threading.Thread):
    def __init__(self, api: Api, plan: dict[str, Any], report_dir: Path, *,
                 server_pids: list[int] | None = None, backend_pids: list[int] | None = None,
                 database_url: str | None = None, stop_when_sale_done: bool = False,
                 interval: float = 0.5, echo: bool = True) -> None:
        super().__init__(name="loadtest-watcher", daemon=True)
        self.api = api
        self.plan = plan
        self.report_dir = report_dir
        self.show_id = plan["show_id"]
        self.database_url = database_url
        self.stop_when_sale_done = stop_when_sale_done
        self.interval = interval
        self.echo = echo
        self.halt = threading.Event()
        self.deals: dict[str, dict[str, Any]] = {}
        self.violations: list[dict[str, Any]] = []
        self.samples = 0
        self.errors: defaultdict[str, int] = defaultdict(int)
        self.stop_reason: str | None = None
        self.out = open(report_dir / "watch.jsonl", "ab", buffering=0)
        self._procs = self._processes(server_pids or [], backend_pids or [])
        psutil.cpu_percent(None)
        self._ledger_pos = 0
        self._ts_pos = 0
        self._progress: dict[int, dict[str, Any]] = {}
        self._last_echo = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pg: Any = None
        self._children: dict[int, psutil.Process] = {}

    @staticmethod
    def _processes(server: list[int], backend: list[int]) -> dict[str, list[psutil.Process]]:
        out: dict[str, list[psutil.Process]] = {"server": [], "backends": []}
        for kind, pids in (("server", server), ("backends", backend)):
            for pid in pids:
                with contextlib.suppress(psutil.Error):
                    proc = psutil.Process(pid)
                    proc.cpu_percent(None)
                    out[kind].append(proc)
        return out

    # ---- the loop ----------------------------------------------------------

    def run(self) -> None:
        try:
            while not self.halt.wait(self.interval):
                try:
                    self.tick()
                except Exception as exc:
                    self.errors[type(exc).__name__] += 1
        finally:
            self._close_pg()
            self.out.close()

    def stop(self) -> None:
        self.halt.set()
        self.join(10)

    def tick(self) -> None:
        now = time.time()
        sample: dict[str, Any] = {"t": round(now, 3)}
        self._read_ledger()
        try:
            show = self.api.show(self.show_id)
            sample["viewers"] = show.get("viewers")
            live = show.get("deal")
            if isinstance(live, dict) and live.get("id"):
                self.deals.setdefault(live["id"], {"id": live["id"]})
        except Exception as exc:
            self.errors[f"show {type(exc).__name__}"] += 1
        sample["deals"] = [self._check_deal(d, now) for d in list(self.deals.values())
                           if not d.get("final")]
        sample.update(self._resources())
        self.samples += 1
        self.out.write(orjson.dumps(sample) + b"\n")
        self._tail_progress()
        if self.stop_when_sale_done and self.stop_reason is None:
            self._maybe_stop(now)

    def _check_deal(self, info: dict[str, Any], now: float) -> dict[str, Any]:
        deal = self.api.deal(self.show_id, info["id"])
        sold, remaining, quantity = int(deal["sold"]), int(deal["remaining"]), int(deal["quantity"])
        info.update(quantity=quantity, hold_ttl_s=deal.get("hold_ttl_s"), status=deal.get("status"),
                    end_reason=deal.get("end_reason"), sold=sold)
        if sold + remaining > quantity or remaining < 0 or sold > quantity:
            self.violations.append({"t": round(now, 3), "deal": info["id"], "sold": sold,
                                    "remaining": remaining, "quantity": quantity})
        if deal.get("status") == "ended":
            info.setdefault("ended_seen", now)
            if self._settled(info["id"]):
                info["settled"] = True
        return {"id": info["id"], "sold": sold, "remaining": remaining, "quantity": quantity,
                "status": deal.get("status")}

    def _maybe_stop(self, now: float) -> None:
        expected = 1
        if len(self.deals) < expected:
            return
        for info in self.deals.values():
            if info.get("status") != "ended":
                return
            ttl = float(info.get("hold_ttl_s") or 10)
            if not info.get("settled") and now - info["ended_seen"] < ttl + 3:
                return
        self.stop_reason = "sale over: " + ", ".join(
            f"{d['id']} {d.get('end_reason')} sold {d.get('sold')}/{d.get('quantity')}"
            f"{' settled' if d.get('settled') else ''}" for d in self.deals.values())
        # Let in-flight confirms and their HTTP replies land before the users stop.
        time.sleep(1.0)
        (self.report_dir / "STOP").touch()

    # ---- inputs ---------------------------------------------------------------

    def _read_ledger(self) -> None:
        path = self.report_dir / "ledger.jsonl"
        if not path.exists():
            return
        with open(path, "rb") as f:
            f.seek(self._ledger_pos)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self._ledger_pos += end
        for line in chunk[:end].splitlines():
            with contextlib.suppress(ValueError):
                entry = orjson.loads(line)
                if entry.get("k") == "deal":
                    self.deals.setdefault(entry["id"], {"id": entry["id"]})

    def _tail_progress(self) -> None:
        path = self.report_dir / "timeseries.jsonl"
        if not path.exists():
            return
        with open(path, "rb") as f:
            f.seek(self._ts_pos)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self._ts_pos += end
        for line in chunk[:end].splitlines():
            with contextlib.suppress(ValueError):
                rec = orjson.loads(line)
                if "meta" in rec:
                    continue
                sec = round(rec["t"])
                agg = self._progress.setdefault(sec, {"events": 0, "frames": 0, "claims": 0, "conns": {}})
                agg["events"] += sum(rec.get("events", {}).values())
                agg["frames"] += rec.get("frames", 0)
                agg["claims"] += sum(n for pairs in rec.get("claims", {}).values() for _, n in pairs)
                agg["conns"][rec["node"]] = sum(rec.get("conns", {}).values())
        now = time.time()
        if self.echo and now - self._last_echo >= 5 and self._progress:
            self._last_echo = now
            recent = sorted(self._progress)[-6:-1] or sorted(self._progress)[-1:]
            n = len(recent)
            events = sum(self._progress[s]["events"] for s in recent) / n
            frames = sum(self._progress[s]["frames"] for s in recent) / n
            claims = sum(self._progress[s]["claims"] for s in recent) / n
            conns = sum(self._progress[recent[-1]]["conns"].values())
            deals = " ".join(f"deal {d.get('sold', '?')}/{d.get('quantity', '?')} {d.get('status', '')}"
                             for d in self.deals.values())
            print(f"  [{time.strftime('%H:%M:%S')}] sockets {conns}  events/s {events:,.0f}  "
                  f"frames/s {frames:,.0f}  claims/s {claims:,.0f}  {deals}", flush=True)
            for s in [s for s in self._progress if s < recent[0] - 10]:
                del self._progress[s]

    def _resources(self) -> dict[str, Any]:
        # Whole machine, in "% of one core" like the per-process numbers (others may share it).
        out: dict[str, Any] = {"system_cpu": round(psutil.cpu_percent(None) * (psutil.cpu_count() or 1), 1)}
        for kind, procs in self._procs.items():
            if not procs:
                continue
            cpu = rss = 0.0
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    cpu += proc.cpu_percent(None)
                    rss += proc.memory_info().rss
                    if kind == "backends":
                        for child in proc.children(recursive=True):
                            with contextlib.suppress(psutil.Error):
                                cpu += self._child_cpu(child)
            out[f"{kind}_cpu"] = round(cpu, 1)
            out[f"{kind}_rss_mb"] = round(rss / 2**20, 1)
        return out

    def _child_cpu(self, child: psutil.Process) -> float:
        known = self._children.get(child.pid)
        if known is None:
            self._children[child.pid] = child
            child.cpu_percent(None)
            return 0.0
        return float(known.cpu_percent(None))

    # ---- PostgreSQL (optional) ---------------------------------------------------

    def _settled(self, deal_id: str) -> bool:
        if not self.database_url:
            return False
        try:
            if self._loop is None:
                import asyncpg

                self._loop = asyncio.new_event_loop()
                self._pg = self._loop.run_until_complete(asyncpg.connect(self.database_url, timeout=5))
            value = self._loop.run_until_complete(
                self._pg.fetchval("SELECT settled FROM deals WHERE id=$1", deal_id))
            return bool(value)
        except Exception:
            self.errors["pg"] += 1
            return False

    def _close_pg(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                if self._pg is not None:
                    self._loop.run_until_complete(self._pg.close())
            self._loop.close()
            self._loop = None
