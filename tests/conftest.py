"""Session-wide real backends and a real server process.

With LIVECORE_REDIS_URL / LIVECORE_DATABASE_URL unset, one embedded Redis
(valkey) and one embedded PostgreSQL serve the whole session. Tests isolate
by creating their own shows, products and deals (random ids) and by a
per-session Redis key prefix and a fresh database.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest
import pytest_asyncio

from livecore.db import migrate
from livecore.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from livecore.services import Services
from livecore.settings import Settings
from tests.support import SECRET, Backends, ServerProc, server_env


@pytest.fixture(scope="session")
def backends() -> Iterator[Backends]:
    owned: list[EmbeddedRedis | EmbeddedPostgres] = []
    redis_url = os.environ.get("LIVECORE_REDIS_URL")
    admin_dsn = os.environ.get("LIVECORE_DATABASE_URL")
    if not redis_url:
        r = EmbeddedRedis().start()
        owned.append(r)
        redis_url = r.url
    if not admin_dsn:
        p = EmbeddedPostgres().start()
        owned.append(p)
        admin_dsn = p.url
    dbname = f"livecore_test_{uuid.uuid4().hex[:8]}"

    async def create_db() -> None:
        conn = await asyncpg.connect(admin_dsn)
        await conn.execute(f'CREATE DATABASE "{dbname}"')
        await conn.close()

    asyncio.run(create_db())
    base, _, _ = admin_dsn.rpartition("/")
    database_url = f"{base}/{dbname}"
    asyncio.run(migrate(database_url))
    yield Backends(redis_url=redis_url, database_url=database_url, owned=owned)
    for server in reversed(owned):
        server.stop()


@pytest.fixture(scope="session")
def prefix() -> str:
    return f"lct{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def server(backends: Backends, prefix: str) -> Iterator[ServerProc]:
    proc = ServerProc(free_port(), server_env(backends.redis_url, backends.database_url, prefix)).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def server_b(backends: Backends, prefix: str, server: ServerProc) -> Iterator[ServerProc]:
    """A second node on the same Redis and PostgreSQL: together they form one cluster."""
    proc = ServerProc(free_port(), server_env(backends.redis_url, backends.database_url, prefix)).start()
    yield proc
    proc.stop()


@pytest_asyncio.fixture(scope="session")
async def services(backends: Backends, prefix: str) -> AsyncIterator[Services]:
    settings = Settings(redis_url=backends.redis_url, database_url=backends.database_url,
                        secret=SECRET, redis_prefix=prefix)
    svc = await Services.create(settings)
    yield svc
    await svc.aclose()


@pytest_asyncio.fixture
async def http(server: ServerProc) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        yield client
