"""The Starlette application: one port for REST, WebSockets, WHIP/WHEP and pages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import http_analytics, http_api
from gateway.context import AppContext
from gateway.errors import BACKEND_DOWN, JSONBody, as_domain_error, error_body, error_response
from gateway.hub import Hub
from gateway.video import create_video_service
from livecore.deals import public_deal
from livecore.errors import LiveCoreError, PayloadTooLarge
from livecore.metrics import HTTP_LATENCY, HTTP_REQUESTS
from livecore.services import Services, redis_client
from livecore.settings import Settings

log = logging.getLogger("gateway.app")
HERE = Path(__file__).parent
PAGE_CSP = ("default-src 'self'; img-src 'self' data: https: http:; media-src 'self' blob:; "
            "connect-src 'self' ws: wss: http: https:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def http_protocol(settings: Settings) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with a deadline for request headers.

    uvicorn has no such deadline (timeout_keep_alive only runs between
    requests): a client that sends its headers a byte at a time (slowloris),
    or connects and sends nothing, holds a connection forever, and enough of
    them exhaust the process's connections. Here each request's headers must
    be complete within `header_timeout_s` of its first byte (or of the
    connection); otherwise the client gets 408 and the connection is closed.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    timeout = settings.header_timeout_s
    body = b'{"error":{"code":"request_timeout","message":"request headers took too long"}}'
    answer = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
              b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    class HeaderDeadlineProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._deadline is None:
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._deadline = self.loop.call_later(timeout, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.write(answer)
                self.transport.close()

    return HeaderDeadlineProtocol


class BodyLimit:
    """Refuse HTTP bodies over the limit with 413, by header or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await error_response(PayloadTooLarge())(scope, receive, send)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise PayloadTooLarge()
            return message

        await self.app(scope, limited, send)


class Observe:
    """Metrics, request ids and security headers for every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = uuid.uuid4().hex[:16]
        status = 500

        async def wrapped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers += [(b"x-request-id", request_id.encode()),
                            (b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"no-referrer")]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            HTTP_REQUESTS.labels(scope.get("method", ""), path, str(status)).inc()
            HTTP_LATENCY.labels(path).observe(time.perf_counter() - start)


async def on_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LiveCoreError)
    return error_response(exc)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
    return error_body(codes.get(exc.status_code, "http_error"), str(exc.detail), exc.status_code)


async def on_backend_error(request: Request, exc: Exception) -> Response:
    """PostgreSQL/Redis outages (503) and input PostgreSQL cannot store (400):
    answered here, so they are neither a 500 nor re-raised into the server."""
    mapped = as_domain_error(exc)
    assert mapped is not None
    log.warning("%s on %s: %s", mapped.code, request.url.path, type(exc).__name__)
    return error_response(mapped)


async def on_crash(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path)
    return error_body("internal", "internal error", 500)


async def healthz(request: Request) -> Response:
    return JSONBody({"status": "ok"})


async def readyz(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    try:
        async with asyncio.timeout(2):
            await ctx.services.redis.ping()
            await ctx.services.pool.fetchval("SELECT 1")
    except Exception:
        return error_body("unavailable", "Redis or PostgreSQL is not answering", 503)
    return JSONBody({"status": "ready", "node": ctx.node_id})


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def page(name: str) -> Route:
    path = HERE / "pages" / f"{name}.html"

    async def serve(request: Request) -> Response:
        if not path.exists():
            return PlainTextResponse(f"LiveCore {name} page", headers={"content-security-policy": PAGE_CSP})
        return FileResponse(path, headers={"content-security-policy": PAGE_CSP,
                                           "x-frame-options": "DENY", "cache-control": "no-cache"})

    return Route({"viewer": "/", "host": "/host", "moderator": "/moderator"}.get(name, f"/{name}"), serve)


async def _sweeper(ctx: AppContext) -> None:
    """Every node sweeps; the Redis functions make concurrent sweeps safe."""
    while True:
        await asyncio.sleep(ctx.settings.sweep_interval_s)
        try:
            await ctx.services.deals.sweep_once()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("sweep failed", exc_info=True)


class LazyRoutes(BaseRoute):
    """Routes that only exist once the lifespan has built them (video needs the context)."""

    def __init__(self, routes: list[BaseRoute]) -> None:
        self.routes = routes

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        for route in self.routes:
            match, child = route.matches(scope)
            if match != Match.NONE:
                return match, {**child, "livecore.route": route}
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await scope["livecore.route"].handle(scope, receive, send)


def create_app(settings: Settings) -> Starlette:
    node_id = settings.node_id or uuid.uuid4().hex[:8]
    video_routes: list[BaseRoute] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services = await Services.create(settings)
        ctx = AppContext(services=services, node_id=node_id)
        blocking = redis_client(settings.redis_url or "", max_connections=10_000)
        ctx.hub = Hub(services.redis, blocking, services.keys, services.bus, settings, node_id)

        async def live_deal(show_id: str) -> dict[str, object] | None:
            deal = await services.deals.live_deal(show_id)
            return public_deal(deal) if deal else None

        ctx.hub.deal_source = live_deal
        ctx.hub.stats_source = services.deals.stats
        ctx.hub.start()
        async def ingest_changed(show_id: str, live: bool) -> None:
            await services.bus.publish(show_id, "video.status", {"live": live})

        ctx.on_ingest_change = ingest_changed
        ctx.video = create_video_service(ctx)
        video_routes.extend(ctx.video.routes)
        app.state.ctx = ctx
        sweeper = asyncio.ensure_future(_sweeper(ctx))
        background = http_analytics.start_background(ctx)
        try:
            yield
        finally:
            sweeper.cancel()
            await ctx.hub.stop(1012)
            # After the sockets are gone: their leaves are in the last analytics flush.
            with contextlib.suppress(Exception):
                await background.stop()
            with contextlib.suppress(Exception):
                await ctx.video.aclose()
            await blocking.aclose()
            await services.aclose()

    routes: list[BaseRoute] = [
        Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics),
        *http_api.routes,
        *http_analytics.routes,
        LazyRoutes(video_routes),
        Mount("/static", app=StaticFiles(directory=HERE / "static", check_dir=False), name="static"),
        page("viewer"), page("host"), page("moderator"),
    ]
    middleware = [Middleware(Observe), Middleware(BodyLimit, max_bytes=settings.max_body_bytes)]
    if settings.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                                     allow_methods=["GET", "POST", "DELETE"],
                                     allow_headers=["authorization", "content-type", "idempotency-key"]))
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                     exception_handlers={LiveCoreError: on_domain_error, HTTPException: on_http_error,
                                         asyncpg.DataError: on_backend_error,
                                         **dict.fromkeys(BACKEND_DOWN, on_backend_error),
                                         Exception: on_crash})
