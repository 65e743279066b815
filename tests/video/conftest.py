"""Fixtures: a real uvicorn server on an ephemeral port carrying only the video routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from .harness import VideoServer, running_server


@pytest.fixture(scope="module", params=["forward", "transcode"])
async def video_server(request: pytest.FixtureRequest) -> AsyncIterator[VideoServer]:
    """Both relay modes must behave the same from the outside."""
    async with running_server(request.param) as server:
        yield server


@pytest.fixture
async def vs(video_server: VideoServer) -> AsyncIterator[VideoServer]:
    """Per test: close whatever clients the test opened and check nothing is left behind."""
    video_server.clients = []
    yield video_server
    await asyncio.gather(*(c.close() for c in video_server.clients))
    service = video_server.service
    await video_server.eventually(
        lambda: service.stats()["whep_sessions"] == 0 and service.stats()["ingests"] == 0,
        within_s=10.0,
    )
