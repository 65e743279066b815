"""`python -m loadtests`: one command, one bounded run, one report folder.

    python -m loadtests --scenario flash-sale --users 500 --units 50
    python -m loadtests --scenario viewer-storm --users 2000 --target http://127.0.0.1:8000 --secret …
    python -m loadtests worker --master-host 10.0.0.5          # a distributed worker

Without --target it starts a local target like `livecore up` (embedded Redis
and PostgreSQL, migrations, `livecore serve` subprocesses) and stops it after.
It creates the show and products, runs locust headless in a subprocess
(locust monkeypatches the process with gevent; this process stays plain),
watches the deal invariants from outside, and writes
reports/<scenario>-<timestamp>/ with locust's CSV/HTML, per-second records,
PNG charts, a Markdown summary and, for flash deals, the correctness check.
Exit status: 0 ok, 1 correctness check failed, 2 usage/setup error, 3 locust failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

from loadtests import scenarios
from loadtests.safety import UnsafeTarget, check_targets, normalise_target

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"


def _duration(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*(s|m|h)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use 90, 90s, 5m, 1h)")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def _ratio(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtests", description="LiveCore load tests (locust, real protocol).",
        epilog="Scenarios: " + "; ".join(f"{s.name}: {s.summary}" for s in scenarios.SCENARIOS.values()))
    p.add_argument("--scenario", required=True, choices=sorted(scenarios.SCENARIOS))
    p.add_argument("--users", type=int, required=True,
                   help=f"audience users (viewers/buyers), 1..{scenarios.MAX_USERS}; host and moderators come on top")
    p.add_argument("--spawn-rate", type=float, help="users started per second (default: users/10, 10..250)")
    p.add_argument("--run-time", type=_duration,
                   help=f"upper bound of the run (default per scenario; max {scenarios.MAX_RUN_TIME_S}s); "
                        "flash-sale stops earlier when the sale is over")
    t = p.add_argument_group("target")
    t.add_argument("--target", action="append", default=[],
                   help="base URL of a running LiveCore node (repeat or comma-separate for several nodes); "
                        "omit to start a local one")
    t.add_argument("--allow-remote", action="store_true", help="allow non-loopback targets")
    t.add_argument("--secret", default=os.environ.get("LIVECORE_SECRET"),
                   help="the target's LIVECORE_SECRET (default: $LIVECORE_SECRET): mints the admin and user tokens")
    t.add_argument("--admin-token", default=os.environ.get("LOADTEST_ADMIN_TOKEN"),
                   help="instead of --secret: an admin token; user tokens are then minted via POST /api/v1/tokens")
    t.add_argument("--database-url", default=None,
                   help="the target's PostgreSQL DSN, for the PostgreSQL part of the correctness check")
    t.add_argument("--local-nodes", type=int, default=1, help="local target: number of `livecore serve` processes")
    d = p.add_argument_group("deals and buyers")
    d.add_argument("--units", type=int, help="units per deal (flash-sale default: buyers/10)")
    d.add_argument("--deal-duration", type=int, help="deal duration_s (flash-sale 20, full-show 15)")
    d.add_argument("--hold-ttl", type=int, help="reservation hold_ttl_s (flash-sale 8, full-show 10)")
    d.add_argument("--per-user-limit", type=int, default=1)
    d.add_argument("--claim-via", choices=("http", "ws", "mixed"), default="http")
    d.add_argument("--confirm-ratio", type=_ratio, default=0.8, help="share of holds confirmed")
    d.add_argument("--release-ratio", type=_ratio, default=0.1,
                   help="share of holds released with DELETE (the rest of the unconfirmed walk away)")
    v = p.add_argument_group("audience")
    v.add_argument("--chat-per-min", type=float, help="chat messages per viewer per minute")
    v.add_argument("--react-per-min", type=float, help="reactions per viewer per minute")
    v.add_argument("--anonymous-ratio", type=_ratio, default=0.0, help="share of viewers joining without a token")
    r = p.add_argument_group("load generation")
    r.add_argument("--processes", type=int, default=0,
                   help="locust worker processes on this machine (locust --processes; 0 = one process)")
    r.add_argument("--expect-workers", type=int, default=0,
                   help="distributed: run as locust master and wait for this many `python -m loadtests worker`")
    r.add_argument("--master-bind-host", default="*")
    r.add_argument("--master-bind-port", type=int, default=5557)
    r.add_argument("--reports-dir", default="reports")
    r.add_argument("--keep-show", action="store_true", help="do not end the show after the run")
    r.add_argument("--locust-arg", action="append", default=[], help="extra argument passed to locust")
    r.add_argument("--quiet", action="store_true")
    return p


def worker_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests worker",
                                description="A locust worker for a distributed run; needs LIVECORE_SECRET "
                                            "or LOADTEST_ADMIN_TOKEN in its environment.")
    p.add_argument("--master-host", required=True)
    p.add_argument("--master-port", type=int, default=5557)
    p.add_argument("--processes", type=int, default=0, help="worker processes on this machine")
    return p


def locust_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(HERE.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_worker(argv: list[str]) -> int:
    a = worker_parser().parse_args(argv)
    if not (os.environ.get("LIVECORE_SECRET") or os.environ.get("LOADTEST_ADMIN_TOKEN")):
        print("error: set LIVECORE_SECRET (or LOADTEST_ADMIN_TOKEN) for the worker", file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker",
           "--master-host", a.master_host, "--master-port", str(a.master_port)]
    if a.processes:
        cmd += ["--processes", str(a.processes)]
    return subprocess.call(cmd, env=locust_env())


def _raise_fd_limit(need: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(hard, need)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < need:
            raise SystemExit(f"error: need {need} open files, the hard limit is {hard} (ulimit -n)")


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "worker":
        return run_worker(argv[1:])
    args = parser().parse_args(argv)
    try:
        return Run(args, argv).execute()
    except (UnsafeTarget, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


class UsageError(ValueError):
    pass


class Run:
    def __init__(self, args: argparse.Namespace, argv: list[str]) -> None:
        self.args = args
        self.argv = argv
        self.scenario = scenarios.SCENARIOS[args.scenario]
        if not 1 <= args.users <= scenarios.MAX_USERS:
            raise UsageError(f"--users must be 1..{scenarios.MAX_USERS}")
        if args.run_time is not None and not 5 <= args.run_time <= scenarios.MAX_RUN_TIME_S:
            raise UsageError(f"--run-time must be 5..{scenarios.MAX_RUN_TIME_S} s")
        if args.spawn_rate is not None and not 0 < args.spawn_rate <= 5000:
            raise UsageError("--spawn-rate must be in (0, 5000]")
        if args.confirm_ratio + args.release_ratio > 1:
            raise UsageError("--confirm-ratio + --release-ratio must be <= 1")
        self.targets = [normalise_target(u) for t in args.target for u in t.split(",") if u.strip()]
        check_targets(self.targets, args.allow_remote)  # before anything touches the network
        if self.targets and not (args.secret or args.admin_token):
            raise UsageError("a target needs --secret (or LIVECORE_SECRET) or --admin-token")
        self.run_id = uuid.uuid4().hex[:8]
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path(args.reports_dir) / f"{args.scenario}-{stamp}"
        self.report_dir = base
        n = 2
        while self.report_dir.exists():
            self.report_dir = Path(f"{base}-{n}")
            n += 1
        self.stack: Any = None
        self.machine: dict[str, Any] = {}
        self.started = time.strftime("%Y-%m-%d %H:%M:%S %Z")

    def same_host_clock(self) -> bool:
        from urllib.parse import urlsplit

        from loadtests.safety import is_loopback_host

        return not self.args.expect_workers and all(
            is_loopback_host(urlsplit(t).hostname or "") for t in self.targets)

    def say(self, text: str) -> None:
        if not self.args.quiet:
            print(text, flush=True)

    def execute(self) -> int:
        from loadtests import correctness, report
        from loadtests.localstack import LocalStack
        from loadtests.provision import Api, end_show_quietly, mint, provision
        from loadtests.watcher import Watcher

        args = self.args
        self.report_dir.mkdir(parents=True)
        self.say(f"loadtests: {args.scenario}, {args.users} users -> {self.report_dir}")
        try:
            knobs = scenarios.Knobs(
                users=args.users, spawn_rate=args.spawn_rate, run_time_s=args.run_time, units=args.units,
                deal_duration_s=args.deal_duration, hold_ttl_s=args.hold_ttl,
                per_user_limit=args.per_user_limit, claim_via=args.claim_via,
                confirm_ratio=args.confirm_ratio, release_ratio=args.release_ratio,
                anonymous_ratio=args.anonymous_ratio, chat_per_min=args.chat_per_min,
                react_per_min=args.react_per_min)
            counts = scenarios.class_counts(self.scenario, args.users)
            _raise_fd_limit(sum(counts.values()) * 2 + 512)
            secret, database_url = args.secret, args.database_url
            if not self.targets:
                self.say(f"  starting a local target: embedded Redis + PostgreSQL + "
                         f"{args.local_nodes} x livecore serve")
                self.stack = LocalStack(self.report_dir, nodes=args.local_nodes).start()
                self.targets = self.stack.targets
                secret, database_url = self.stack.secret, self.stack.database_url
                target_desc = (f"local: embedded Redis + PostgreSQL, {args.local_nodes} x `livecore serve` "
                               f"({', '.join(self.targets)})")
            else:
                target_desc = ", ".join(self.targets)
            deal = scenarios.deal_params(self.scenario, knobs, counts)
            rate, ramp, run_time = scenarios.timing(self.scenario, knobs, counts, deal)
            n_deals = scenarios.deals_expected(self.scenario, run_time, ramp)
            ttl = scenarios.MAX_RUN_TIME_S + 3600
            admin = (mint(secret, role="admin", show="*", sub=f"loadtest-admin-{self.run_id}",
                          name="Load test admin", ttl_s=ttl) if secret else args.admin_token)
            api = Api(self.targets[0], admin)
            api.wait_ready()
            prov = provision(api, run_id=self.run_id, scenario=args.scenario,
                             deal_stock=(deal["quantity"] * n_deals + 10) if deal else 100)
            plan = scenarios.build_plan(self.scenario, knobs, run_id=self.run_id, targets=self.targets,
                                        show_id=prov["show_id"], products=prov["products"],
                                        deal_product=prov["deal_product"],
                                        same_host_clock=self.same_host_clock())
            (self.report_dir / "plan.json").write_text(json.dumps(plan, indent=2))
            self.say(f"  show {plan['show_id']}; users {plan['classes']}; spawn {rate:g}/s; "
                     f"bound {run_time}s" + (f"; deal {deal}" if deal else ""))

            watcher = Watcher(api, plan, self.report_dir,
                              server_pids=self.stack.server_pids() if self.stack else None,
                              backend_pids=self.stack.backend_pids() if self.stack else None,
                              database_url=database_url,
                              stop_when_sale_done=args.scenario == "flash-sale", echo=not args.quiet)
            watcher.start()
            self.machine = {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
            rc = self.run_locust(plan, secret, admin if not secret else None)
            self.machine["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
            cleanup_note = None
            if not args.keep_show:
                cleanup_note = end_show_quietly(api, plan["show_id"])
            watcher.stop()
            self.wait_settled(api, plan, watcher)
            watcher._close_pg()
            result: dict[str, Any] | None = None
            if self.scenario.deals or watcher.deals:
                self.say("  checking correctness (orders API"
                         + (", PostgreSQL" if database_url else "") + ", ledger, samples)")
                result = correctness.check(
                    api=api, show_id=plan["show_id"], plan=plan,
                    ledger=correctness.read_jsonl(self.report_dir / "ledger.jsonl"),
                    samples_violations=watcher.violations, database_url=database_url,
                    deal_product=prov["deal_product"], deal_stock_before=prov["deal_stock"])
                (self.report_dir / "correctness.json").write_text(json.dumps(result, indent=2, default=str))
            summary = report.summarize(self.report_dir, {
                "plan": plan, "command": "python -m loadtests " + shlex.join(self.argv),
                "started": self.started, "target_desc": target_desc, "spawn_rate": rate,
                "run_time_s": run_time, "stop_reason": watcher.stop_reason, "locust_exit": rc,
                "watch_samples": watcher.samples, "watch_errors": dict(watcher.errors),
                "cleanup": cleanup_note, "machine": self.machine,
                "correctness": ({k: result[k] for k in ("applicable", "passed", "oversell")}
                                if result else None)})
            (self.report_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
            (self.report_dir / "summary.md").write_text(report.markdown(summary, result))
            api.close()
            self.print_headline(summary, result)
            if rc not in (0, 1):
                self.say(f"locust exited with {rc}; see {self.report_dir / 'locust.log'}")
                return 3
            if result and result.get("applicable") and not result["passed"]:
                return 1
            return 0
        finally:
            if self.stack is not None:
                self.stack.stop()

    def run_locust(self, plan: dict[str, Any], secret: str | None, admin_token: str | None) -> int:
        args = self.args
        d = self.report_dir
        classes = [c for c, n in plan["classes"].items() if n > 0]
        cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
               "--users", str(sum(plan["classes"].values())), "--spawn-rate", f"{plan['spawn_rate']:g}",
               "--run-time", f"{plan['run_time_s']}s", "--stop-timeout", "3",
               "--host", self.targets[0], "--csv", str(d / "locust"), "--csv-full-history",
               "--html", str(d / "locust.html"), "--logfile", str(d / "locust.log"), "--loglevel", "INFO",
               "--only-summary", "--exit-code-on-error", "1",
               "--lc-plan", json.dumps(plan, separators=(",", ":")), "--lc-report-dir", str(d)]
        if args.processes:
            cmd += ["--processes", str(args.processes)]
        if args.expect_workers:
            cmd += ["--master", "--expect-workers", str(args.expect_workers),
                    "--master-bind-host", args.master_bind_host, "--master-bind-port", str(args.master_bind_port),
                    "--expect-workers-max-wait", "120"]
            self.say(f"  waiting for {args.expect_workers} worker(s): "
                     f"python -m loadtests worker --master-host <this host> --master-port {args.master_bind_port}")
        cmd += [*args.locust_arg, *classes]
        env = locust_env()
        env.pop("LIVECORE_SECRET", None)
        env.pop("LOADTEST_ADMIN_TOKEN", None)
        if secret:
            env["LIVECORE_SECRET"] = secret
        elif admin_token:
            env["LOADTEST_ADMIN_TOKEN"] = admin_token
        (d / "locust.cmd").write_text(shlex.join([*cmd[:cmd.index("--lc-plan")], "--lc-plan", "@plan.json", *cmd[cmd.index("--lc-plan") + 2:]]) + "\n")
        out = open(d / "locust.out", "wb")
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + plan["run_time_s"] + 60 + (130 if args.expect_workers else 0)
        try:
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    self.say("  locust overran its bound; stopping it")
                    (d / "STOP").touch()
                    self._wait_or_kill(proc, 30)
                    break
                time.sleep(0.5)
        except KeyboardInterrupt:
            self.say("  interrupted: stopping locust and writing the report (Ctrl-C again to abort)")
            (d / "STOP").touch()
            self._wait_or_kill(proc, 30)
        finally:
            out.close()
        return proc.returncode if proc.returncode is not None else -1

    @staticmethod
    def _wait_or_kill(proc: subprocess.Popen[bytes], timeout: float) -> None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def wait_settled(self, api: Any, plan: dict[str, Any], watcher: Any) -> None:
        """After the show ended: wait until its deals have ended (and holds ran out), bounded."""
        deals = list(watcher.deals)
        if not deals:
            return
        ttl = max(float((plan.get("deal") or {}).get("hold_ttl_s") or 0), 1.0)
        deadline = time.monotonic() + ttl + 5
        while time.monotonic() < deadline:
            try:
                states = [api.deal(plan["show_id"], d) for d in deals]
            except Exception:
                break
            if all(s.get("status") == "ended" for s in states):
                if watcher.database_url is None or all(watcher._settled(d) for d in deals):
                    break
            time.sleep(0.5)

    def print_headline(self, s: dict[str, Any], result: dict[str, Any] | None) -> None:
        lat = s["delivery_ms"]["broadcast"]
        lines = [f"\n{self.args.scenario}: sockets held {s['sockets']['peak']}/{s['sockets']['expected']}, "
                 f"events/s {s['events_per_s']['mean']} (peak {s['events_per_s']['peak']}), "
                 f"delivery p50/p99 {lat['p50']}/{lat['p99']} ms, handshake p50/p99 "
                 f"{s['handshake_ms']['p50']}/{s['handshake_ms']['p99']} ms"]
        if s["claims"]["total"]:
            lines.append(f"claims {s['claims']['total']} (peak {s['claims']['per_s_peak']}/s), "
                         f"outcomes " + ", ".join(f"{o} {p['n']}" for o, p in s['claims']['by_outcome'].items()))
        if result and result.get("applicable"):
            lines.append(f"correctness: {'PASS' if result['passed'] else 'FAIL'}, oversell {result['oversell']}")
        lines.append(f"report: {self.report_dir / 'summary.md'}")
        self.say("\n".join(lines))
