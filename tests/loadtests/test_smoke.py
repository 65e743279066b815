"""The real command, end to end: `python -m loadtests` starts its own local target
(embedded Redis + PostgreSQL + `livecore serve`), runs locust in a subprocess
(locust monkeypatches with gevent, so never inside pytest) and writes a report."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LIVECORE_", "LOADTEST_", "LOCUST_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_flash_sale_smoke(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "loadtests", "--scenario", "flash-sale", "--users", "24", "--units", "8",
         "--hold-ttl", "3", "--deal-duration", "12", "--spawn-rate", "24", "--run-time", "35",
         "--reports-dir", str(tmp_path), "--quiet"],
        cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (report,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert report.name.startswith("flash-sale-")
    for name in ("summary.md", "summary.json", "correctness.json", "plan.json", "locust_stats.csv",
                 "locust_stats_history.csv", "locust_failures.csv", "locust.html", "timeseries.jsonl",
                 "ledger.jsonl", "watch.jsonl", "latency.png", "throughput.png", "resources.png"):
        assert (report / name).is_file() and (report / name).stat().st_size > 0, name

    result = json.loads((report / "correctness.json").read_text())
    assert result["applicable"] and result["passed"], result
    assert result["oversell"] == 0
    names = {c["name"] for c in result["checks"] if not c["skipped"]}
    assert "PostgreSQL: units in orders <= quantity" in names  # the local target's PostgreSQL was checked
    assert all(c["ok"] for c in result["checks"] if not c["skipped"])
    (deal,) = result["deals"]
    assert deal["quantity"] == 8 and 0 < deal["sold"] <= 8

    summary = json.loads((report / "summary.json").read_text())
    assert summary["sockets"]["peak"] == 25  # 24 buyers + the host
    assert summary["claims"]["total"] >= 24
    assert summary["claims"]["by_outcome"]["ok"]["n"] >= deal["sold"]
    assert summary["correctness"]["oversell"] == 0
    assert "Oversell" in (report / "summary.md").read_text()

    with open(report / "locust_stats.csv", newline="") as f:
        rows = {(r["Type"], r["Name"]) for r in csv.DictReader(f)}
    assert ("WS", "handshake viewer") in rows
    assert ("EVENT", "deal.started") in rows
    assert ("CLAIM", "http ok") in rows
    assert ("RATE", "frames/s") in rows


def test_refuses_remote_target_without_allow_remote(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "loadtests", "--scenario", "viewer-storm", "--users", "10",
         "--target", "http://192.0.2.10:8000", "--secret", "x" * 32, "--reports-dir", str(tmp_path)],
        cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "not a loopback address" in proc.stderr
    assert not any(tmp_path.iterdir())  # refused before creating anything
