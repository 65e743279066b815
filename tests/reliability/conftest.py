"""Fixtures of the reliability suite (see docs/reliability.md).

`edge` is a dedicated node on the session's shared backends for hostile input
and the authorization matrix: its frame limits are high so that fuzzing never
trips the flood guard (4429), its hello timeout is short, and its log file is
read by the tests (a crash leaves a trace there even when the client only
sees a polite error). It runs on a database and a Redis key prefix of its
own: what the fuzzer and the matrix create (webhooks among it) never reaches
the nodes of the other suites.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest_asyncio

from tests.reliability.helpers import fresh_database, node_env, nodes
from tests.support import Backends, ServerProc

EDGE_ENV = {
    "LIVECORE_FRAME_RATE_PER_S": "100000", "LIVECORE_FRAME_BURST": "100000",
    "LIVECORE_FLOOD_STRIKES": "100000", "LIVECORE_CHAT_RATE_PER_S": "1000",
    "LIVECORE_CHAT_BURST": "1000", "LIVECORE_HELLO_TIMEOUT_S": "1", "LIVECORE_LOG_LEVEL": "info",
}


@pytest_asyncio.fixture(scope="session")
async def edge(backends: Backends) -> AsyncIterator[ServerProc]:
    database_url = await fresh_database(backends.database_url)
    prefix = f"edge{uuid.uuid4().hex[:6]}"
    async with nodes(node_env(backends.redis_url, database_url, prefix, **EDGE_ENV)) as (node,):
        yield node


@pytest_asyncio.fixture
async def edge_http(edge: ServerProc) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=edge.base_url, timeout=30) as client:
        yield client
