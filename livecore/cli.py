"""The `livecore` command: up, serve, migrate, token."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import time
from typing import Annotated

import typer

from livecore.settings import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="LiveCore: live-shopping backend (fanout, flash deals, moderation, video).")


def _run_server(settings: Settings) -> None:
    import uvicorn

    from gateway.app import create_app, http_protocol
    from gateway.logs import configure_logging
    from gateway.socket_protocol import socket_protocol

    configure_logging(settings)
    app = create_app(settings)
    # Sockets bypass ASGI (docs/decisions/0008-own-socket-layer.md); HTTP stays on Starlette.
    ws = socket_protocol(app, settings.ws_ping_interval_s, settings.max_frame_bytes, settings.ws_deflate)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, loop="uvloop", http=http_protocol(settings),
        ws=ws, lifespan="on", timeout_graceful_shutdown=int(settings.drain_s),
        timeout_keep_alive=5, log_level=settings.log_level, access_log=False, proxy_headers=True,
        limit_concurrency=settings.max_connections + 1000, backlog=4096)
    server = uvicorn.Server(config)
    # Fanout allocates a waiter per viewer per frame; default GC thresholds turned that into
    # ~1 s full collections every few seconds at 10k viewers (docs/fanout.md).
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    server.run()
    if not server.started:
        sys.exit(3)


async def _check_backends(settings: Settings) -> None:
    import asyncpg

    from livecore.services import redis_client

    redis = redis_client(settings.redis_url or "", socket_connect_timeout=3)
    try:
        await redis.ping()
    except Exception as exc:
        raise SystemExit(f"error: Redis at {settings.redis_url} is unreachable: {exc}") from None
    finally:
        await redis.aclose()
    try:
        conn = await asyncpg.connect(settings.database_url, timeout=5)
        await conn.close()
    except Exception as exc:
        raise SystemExit(f"error: PostgreSQL is unreachable: {exc}") from None


@app.command()
def serve(host: Annotated[str | None, typer.Option(help="Bind address")] = None,
          port: Annotated[int | None, typer.Option(help="Bind port")] = None,
          migrate: Annotated[bool, typer.Option(
              help="Apply pending migrations first (idempotent; concurrent nodes take turns)")] = True,
          ) -> None:
    """Production server: uses LIVECORE_REDIS_URL / LIVECORE_DATABASE_URL, never embedded servers."""
    settings = Settings()
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = settings.model_copy(update=overrides)
    if not settings.redis_url or not settings.database_url:
        raise SystemExit("error: set LIVECORE_REDIS_URL and LIVECORE_DATABASE_URL (or use `livecore up`)")
    asyncio.run(_check_backends(settings))
    if migrate:
        # A node on a fresh or older database serves the schema it was built
        # for, rather than failing every request until someone runs `migrate`.
        from livecore.db import migrate as run_migrations

        applied = asyncio.run(run_migrations(settings.database_url))
        if applied:
            print("migrations applied: " + ", ".join(applied), flush=True)
    _run_server(settings)


@app.command()
def migrate() -> None:
    """Apply database migrations (idempotent)."""
    from livecore.db import migrate as run

    settings = Settings()
    if not settings.database_url:
        raise SystemExit("error: set LIVECORE_DATABASE_URL")
    applied = asyncio.run(run(settings.database_url))
    print("applied: " + ", ".join(applied) if applied else "database is up to date")


@app.command()
def token(role: Annotated[str, typer.Option(help="viewer | host | moderator | admin")],
          show: Annotated[str, typer.Option(help="show id, or * for admin")],
          sub: Annotated[str, typer.Option(help="user id")],
          name: Annotated[str, typer.Option(help="display name")],
          ttl_s: Annotated[int, typer.Option("--ttl-s", help="lifetime in seconds")] = 3600) -> None:
    """Print a signed token using LIVECORE_SECRET."""
    from livecore.auth import TokenService

    try:
        value, _ = TokenService(Settings().secret).mint(sub=sub, name=name, role=role, show=show, ttl_s=ttl_s)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(value)


@app.command()
def up(host: Annotated[str, typer.Option()] = "127.0.0.1",
       port: Annotated[int, typer.Option()] = 8000) -> None:
    """The demo: embedded Redis + PostgreSQL (unless configured), migrate, seed, serve."""
    from livecore.embedded import EmbeddedPostgres, EmbeddedRedis

    started = time.monotonic()
    # SIGTERM before uvicorn takes over the signals must still run the cleanup below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    settings = Settings().model_copy(update={"host": host, "port": port})
    owned: list[EmbeddedRedis | EmbeddedPostgres] = []
    try:
        if not settings.redis_url:
            r = EmbeddedRedis().start()
            owned.append(r)
            settings = settings.model_copy(update={"redis_url": r.url})
        if not settings.database_url:
            p = EmbeddedPostgres().start()
            owned.append(p)
            settings = settings.model_copy(update={"database_url": p.url})
        os.environ["LIVECORE_REDIS_URL"] = settings.redis_url or ""
        os.environ["LIVECORE_DATABASE_URL"] = settings.database_url or ""
        links = asyncio.run(_prepare_demo(settings))
        print(f"\nLiveCore is ready in {time.monotonic() - started:.1f}s at {settings.base_url}\n")
        for label, url in links:
            print(f"  {label:<10} {url}")
        print("\nCtrl-C stops everything.\n", flush=True)
        _run_server(settings)
    finally:
        for server in reversed(owned):
            with contextlib.suppress(Exception):
                server.stop()


async def _prepare_demo(settings: Settings) -> list[tuple[str, str]]:
    from livecore.auth import TokenService
    from livecore.catalogue import Catalogue, Shows
    from livecore.db import create_pool
    from livecore.db import migrate as run_migrations
    from livecore.seed import seed_demo

    assert settings.database_url
    await run_migrations(settings.database_url)
    pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        show, _ = await seed_demo(Catalogue(pool), Shows(pool))
    finally:
        await pool.close()
    tokens = TokenService(settings.secret)
    sid, base = show["id"], settings.base_url
    host_t, _ = tokens.mint(sub="host-1", name="Host", role="host", show=sid, ttl_s=12 * 3600)
    mod_t, _ = tokens.mint(sub="mod-1", name="Moderator", role="moderator", show=sid, ttl_s=12 * 3600)
    admin_t, _ = tokens.mint(sub="admin", name="Admin", role="admin", show="*", ttl_s=12 * 3600)
    viewer_t, _ = tokens.mint(sub="viewer-1", name="Viewer", role="viewer", show=sid, ttl_s=12 * 3600)
    return [("viewer", f"{base}/?show={sid}&token={viewer_t}"), ("host", f"{base}/host?show={sid}&token={host_t}"),
            ("moderator", f"{base}/moderator?show={sid}&token={mod_t}"),
            ("admin", f"token {admin_t}")]


def main() -> None:
    app()


if __name__ == "__main__":
    main()
