"""Fixtures of the analytics and webhook tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import pytest_asyncio

from tests.analytics.support import fresh_database
from tests.support import Backends, ServerProc


@pytest_asyncio.fixture
async def db_url(backends: Backends) -> str:
    """A fresh migrated database for one test."""
    return await fresh_database(backends.database_url)


@pytest_asyncio.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(db_url, min_size=1, max_size=5)
    assert p is not None
    yield p
    await p.close()


@pytest.fixture
def procs() -> Iterator[list[ServerProc]]:
    """Server processes a test started; all stopped at the end, even on failure."""
    started: list[ServerProc] = []
    yield started
    for proc in started:
        proc.stop()
