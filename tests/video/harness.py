"""What the video tests share: the stand-in context and a handle on the running server.

The context is a small stand-in for the app's AppContext: video needs
settings, the token service and a show lookup, none of which touch a database
in this part of the code, so a dict-backed show directory is enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from gateway.video import VideoService
from gateway.video.sessions import RelayMode
from gateway.video.testing import WebRtcClient
from livecore.auth import TokenService
from livecore.settings import Settings

SECRET = "video-tests-secret-0123456789abcdef"
MAX_VIEWERS = 4
CONNECT_TIMEOUT_S = 2.0


class DictShows:
    def __init__(self, shows: dict[str, dict[str, Any]]) -> None:
        self.shows = shows

    async def get(self, show_id: str) -> dict[str, Any] | None:
        return self.shows.get(show_id)


@dataclass
class Ctx:
    settings: Settings
    tokens: TokenService
    shows: DictShows
    ingest_events: list[tuple[str, bool]] = field(default_factory=list)

    async def on_ingest_change(self, show: str, live: bool) -> None:
        self.ingest_events.append((show, live))


@dataclass
class VideoServer:
    base_url: str
    service: VideoService
    ctx: Ctx
    http: httpx.AsyncClient
    clients: list[WebRtcClient] = field(default_factory=list)

    def token(self, role: str, show: str, sub: str = "u1") -> str:
        return self.ctx.tokens.mint(sub=sub, name=sub, role=role, show=show, ttl_s=600)[0]

    def client(self, token: str | None = None) -> WebRtcClient:
        client = WebRtcClient(self.base_url, self.http, token)
        self.clients.append(client)
        return client

    async def eventually(self, predicate: Callable[[], bool], within_s: float = 15.0) -> None:
        await eventually(predicate, within_s)


async def eventually(predicate: Callable[[], bool], within_s: float = 15.0) -> None:
    """Poll for a state change that happens on the server's own schedule.

    Polling rather than an event: the states checked here (session counts,
    task counts) have no notification to wait on.
    """
    for _ in range(int(within_s / 0.05) + 1):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"condition not met within {within_s} s")


@contextlib.asynccontextmanager
async def running_server(
    mode: RelayMode, extra_routes: Sequence[BaseRoute] = ()
) -> AsyncIterator[VideoServer]:
    # No ICE servers: host candidates on 127.0.0.1 are all a local test needs,
    # and a STUN lookup would make every answer wait on the network.
    settings = Settings.model_validate({"max_whep_sessions": MAX_VIEWERS, "ice_servers": []})
    shows = DictShows({f"show-{i}": {"id": f"show-{i}", "status": "live"} for i in range(20)})
    shows.shows["ended"] = {"id": "ended", "status": "ended"}
    ctx = Ctx(settings=settings, tokens=TokenService(SECRET), shows=shows)
    service = VideoService(ctx, connect_timeout_s=CONNECT_TIMEOUT_S, relay_mode=mode)
    app = Starlette(routes=[*service.routes, *extra_routes])

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    await eventually(lambda: server.started, within_s=10)

    async with httpx.AsyncClient(timeout=30.0) as http:
        yield VideoServer(f"http://127.0.0.1:{port}", service, ctx, http)
    await service.aclose()
    server.should_exit = True
    await serving
    sock.close()
