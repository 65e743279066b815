"""A throwaway local target, like `livecore up`: embedded Redis and PostgreSQL,
migrations, and N `livecore serve` processes (one cluster) on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from livecore.embedded import EmbeddedPostgres, EmbeddedRedis, free_port


class LocalStack:
    def __init__(self, report_dir: Path, nodes: int = 1, extra_env: dict[str, str] | None = None) -> None:
        self.report_dir = report_dir
        self.nodes = max(1, nodes)
        self.secret = "loadtest-" + secrets.token_urlsafe(24)
        self.extra_env = extra_env or {}
        self.redis: EmbeddedRedis | None = None
        self.pg: EmbeddedPostgres | None = None
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []

    @property
    def targets(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    @property
    def database_url(self) -> str | None:
        return self.pg.url if self.pg else None

    def start(self) -> LocalStack:
        from livecore.db import migrate

        self.redis = EmbeddedRedis().start()
        self.pg = EmbeddedPostgres().start()
        asyncio.run(migrate(self.pg.url))
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECORE_")}
        env.update(LIVECORE_REDIS_URL=self.redis.url, LIVECORE_DATABASE_URL=self.pg.url,
                   LIVECORE_SECRET=self.secret, LIVECORE_LOG_LEVEL="warning")
        env.update(self.extra_env)
        for i in range(self.nodes):
            port = free_port()
            log = open(self.report_dir / f"server-{i + 1}.log", "wb")
            proc = subprocess.Popen([sys.executable, "-m", "livecore.cli", "serve", "--port", str(port)],
                                    env={**env, "LIVECORE_NODE_ID": f"node{i + 1}"},
                                    stdout=log, stderr=subprocess.STDOUT)
            self.procs.append(proc)
            self.ports.append(port)
        for proc, url in zip(self.procs, self.targets, strict=True):
            self._wait_ready(proc, url)
        return self

    def _wait_ready(self, proc: subprocess.Popen[bytes], url: str, timeout: float = 40) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"livecore serve exited with {proc.returncode}; see {self.report_dir}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"livecore serve at {url} was not ready within {timeout}s")

    def server_pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def backend_pids(self) -> list[int]:
        pids = []
        for srv in (self.redis, self.pg):
            proc = getattr(srv, "proc", None)
            if proc is not None and proc.poll() is None:
                pids.append(proc.pid)
        return pids

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs = []
        for srv in (self.pg, self.redis):
            if srv is not None:
                with contextlib.suppress(Exception):
                    srv.stop()
        self.pg = self.redis = None
