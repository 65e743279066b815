"""Fixtures of the reservation-engine tests.

Tests that FLUSHALL Redis get a Redis of their own (the session Redis is
shared with every other test and with the `server` processes) and a
PostgreSQL database of their own, so that the servers' sweepers, which sweep
every unsettled deal in their database, never touch deals whose Redis state
lives elsewhere.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import pytest
import pytest_asyncio

from livecore.db import migrate
from livecore.embedded import EmbeddedRedis
from livecore.services import Services
from livecore.settings import Settings
from tests.support import SECRET, Backends


@dataclass
class Isolated:
    redis_url: str
    database_url: str

    def settings(self, prefix: str = "eng") -> Settings:
        # The adaptive micro-batch (window 0) here; the `server` processes run
        # the configured default, so both batching modes are under test.
        return Settings(redis_url=self.redis_url, database_url=self.database_url, secret=SECRET,
                        redis_prefix=prefix, claim_batch_window_ms=0)


@pytest.fixture(scope="session")
def isolated(backends: Backends) -> Iterator[Isolated]:
    redis = EmbeddedRedis().start()
    dbname = f"livecore_engine_{uuid.uuid4().hex[:8]}"
    base, _, _ = backends.database_url.rpartition("/")

    async def create_db() -> None:
        conn = await asyncpg.connect(backends.database_url)
        try:
            await conn.execute(f'CREATE DATABASE "{dbname}"')
        finally:
            await conn.close()

    asyncio.run(create_db())
    database_url = f"{base}/{dbname}"
    asyncio.run(migrate(database_url))
    yield Isolated(redis_url=redis.url, database_url=database_url)
    redis.stop()


@pytest_asyncio.fixture(scope="session")
async def iso_services(isolated: Isolated) -> AsyncIterator[Services]:
    """In-process engine on the isolated Redis and database (no sweeper runs:
    tests call sweep_once themselves)."""
    svc = await Services.create(isolated.settings())
    yield svc
    await svc.aclose()
