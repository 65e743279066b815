"""The `livecore` command as an operator runs it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import asyncpg
import httpx

from livecore.embedded import free_port
from tests.support import ADMIN, ROOT, SECRET, TOKENS, Backends, ServerProc, server_env


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "livecore.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def empty_database(backends: Backends) -> str:
    """The name of a new database on the session's PostgreSQL, with no tables."""
    admin_dsn = backends.database_url.rpartition("/")[0] + "/postgres"
    name = f"cli_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        conn = await asyncpg.connect(admin_dsn)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()

    asyncio.run(create())
    return name


def test_migrate_twice_is_a_noop(backends: Backends) -> None:
    name = empty_database(backends)
    env = server_env(backends.redis_url, backends.database_url.rpartition("/")[0] + f"/{name}", "cli")
    first = run(["migrate"], env)
    assert first.returncode == 0, first.stderr
    assert "applied: 0001_init" in first.stdout
    second = run(["migrate"], env)
    assert second.returncode == 0 and "up to date" in second.stdout


def test_serve_migrates_a_fresh_database_and_python_m_livecore_works(backends: Backends) -> None:
    name = empty_database(backends)
    env = server_env(backends.redis_url, backends.database_url.rpartition("/")[0] + f"/{name}",
                     f"cli{uuid.uuid4().hex[:6]}")
    node = ServerProc(free_port(), env).start()  # `livecore serve` on an empty database
    try:
        auth = {"authorization": f"Bearer {ADMIN}"}
        body = {"sku": "SAME-1", "name": "Mug", "price_cents": 900, "currency": "USD", "stock": 3}
        # the schema is there, and a SKU may repeat (PROTOCOL §3 does not make it unique)
        first = httpx.post(node.base_url + "/api/v1/products", headers=auth, json=body)
        second = httpx.post(node.base_url + "/api/v1/products", headers=auth, json=body)
        assert first.status_code == second.status_code == 201, (first.text, second.text)
        assert first.json()["id"] != second.json()["id"]
    finally:
        node.stop()
    out = subprocess.run([sys.executable, "-m", "livecore", "migrate"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "up to date" in out.stdout, out.stderr


def test_token_command_signs_with_the_secret(backends: Backends) -> None:
    env = server_env(backends.redis_url, backends.database_url, "cli")
    out = run(["token", "--role", "admin", "--show", "*", "--sub", "a", "--name", "A", "--ttl-s", "60"], env)
    assert out.returncode == 0, out.stderr
    claims = TOKENS.verify(out.stdout.strip())
    assert (claims.role, claims.show, claims.sub, claims.name) == ("admin", "*", "a", "A")
    bad = run(["token", "--role", "root", "--show", "*", "--sub", "a", "--name", "A"], env)
    assert bad.returncode != 0 and "unknown role" in bad.stderr
    assert SECRET  # the same secret the servers under test use


def test_serve_fails_fast_when_backends_are_down(backends: Backends) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    env = server_env(dead, backends.database_url, "cli")
    out = run(["serve", "--port", str(free_port())], env, timeout=30)
    assert out.returncode != 0
    assert "Redis" in out.stderr and "unreachable" in out.stderr
    env = server_env(backends.redis_url, f"postgresql://postgres@127.0.0.1:{free_port()}/x", "cli")
    out = run(["serve", "--port", str(free_port())], env, timeout=30)
    assert out.returncode != 0 and "PostgreSQL is unreachable" in out.stderr
    env = {k: v for k, v in env.items() if k not in ("LIVECORE_REDIS_URL",)}
    out = run(["serve"], env, timeout=30)
    assert out.returncode != 0 and "LIVECORE_REDIS_URL" in out.stderr


def test_up_serves_the_demo_and_cleans_up_on_ctrl_c() -> None:
    import os
    import signal
    import time

    import httpx
    import psutil

    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECORE_")}
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "livecore.cli", "up", "--port", str(port)], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "moderator" in line and "token=" in line:
            break
    text = "".join(lines)
    assert "LiveCore is ready" in text, text
    viewer_url = next(ln.split()[-1] for ln in lines if ln.strip().startswith("viewer"))
    children = psutil.Process(proc.pid).children(recursive=True)
    names = {c.name() for c in children}
    assert any("valkey" in n for n in names) and "postgres" in names, names
    for _ in range(100):
        try:
            if httpx.get(viewer_url, timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    assert httpx.get(viewer_url).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
    time.sleep(0.5)
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [c.cmdline() for c in alive]
