"""Wiring: one Redis client, one PG pool and the domain services on top."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
from redis.asyncio import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from livecore.auth import TokenService
from livecore.bus import EventBus
from livecore.catalogue import Catalogue, Shows
from livecore.db import create_pool
from livecore.deals import DealEngine
from livecore.keys import Keys
from livecore.moderation import Moderation
from livecore.redis_cluster import cluster_client, is_cluster_url
from livecore.redisfn import RedisFunctions
from livecore.settings import Settings

log = logging.getLogger("livecore.services")

# asyncpg's Pool.close() waits, without a limit, for every connection to be released.
POOL_CLOSE_TIMEOUT_S = 5.0


def redis_client(url: str, **kwargs: Any) -> Redis:
    """The one place Redis clients are made (the shared client, the gateway's
    blocking XREAD client, CLI checks). `redis+cluster://` and
    `rediss+cluster://` URLs give a Redis Cluster client (livecore/redis_cluster.py);
    `max_connections` is then per cluster node. kwargs override the defaults."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "health_check_interval": 15,
        "socket_connect_timeout": 2,
        **kwargs,
    }
    if is_cluster_url(url):
        # RedisCluster has the same command API as Redis (both are built from
        # redis-py's command mixins), so the domain code keeps one client type.
        return cast(Redis, cluster_client(url, **options))
    return Redis.from_url(url, **options)


@dataclass
class Services:
    settings: Settings
    pool: asyncpg.Pool
    redis: Redis
    fns: RedisFunctions
    keys: Keys
    bus: EventBus
    tokens: TokenService
    catalogue: Catalogue
    shows: Shows
    deals: DealEngine
    moderation: Moderation

    @classmethod
    async def create(cls, settings: Settings) -> Services:
        if not settings.redis_url or not settings.database_url:
            raise RuntimeError("LIVECORE_REDIS_URL and LIVECORE_DATABASE_URL must be set")
        redis = redis_client(settings.redis_url, max_connections=512)
        try:
            await redis.ping()
        except Exception as exc:
            await redis.aclose()
            raise RuntimeError(f"Redis at {settings.redis_url} is unreachable: {exc}") from exc
        try:
            pool = await create_pool(settings.database_url)
        except Exception as exc:
            await redis.aclose()
            raise RuntimeError(f"PostgreSQL is unreachable: {exc}") from exc
        fns = RedisFunctions(redis)
        await fns.load()
        keys = Keys(settings.redis_prefix)
        bus = EventBus(redis, fns, keys, settings.history_max)
        deals = DealEngine(pool, redis, fns, keys, bus, default_hold_ttl_s=settings.default_hold_ttl_s,
                           claim_window_ms=settings.claim_batch_window_ms)
        return cls(settings=settings, pool=pool, redis=redis, fns=fns, keys=keys, bus=bus,
                   tokens=TokenService(settings.secret), catalogue=Catalogue(pool), shows=Shows(pool),
                   deals=deals, moderation=Moderation(pool, redis, keys, bus, settings))

    async def aclose(self) -> None:
        # A connection never given back (a task stuck mid-query) would hold shutdown forever;
        # after the grace period the pool is terminated (its sessions are cut).
        try:
            await asyncio.wait_for(self.pool.close(), POOL_CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning("PostgreSQL pool did not close in %.0f s; terminating it", POOL_CLOSE_TIMEOUT_S)
            self.pool.terminate()
        except Exception:
            pass
        with contextlib.suppress(Exception):
            await self.redis.aclose()
