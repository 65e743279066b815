"""Loading and calling the Redis Functions library (livecore/lua/livecore.lua)."""

from __future__ import annotations

from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

LIBRARY = resources.files("livecore.lua").joinpath("livecore.lua").read_text(encoding="utf-8")


class RedisFunctions:
    """Calls functions by name; reloads the library if Redis lost it (restart
    without persistence), so callers never see "Function not found"."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def load(self) -> None:
        await self.redis.function_load(LIBRARY, replace=True)

    async def call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.redis.fcall(name, len(keys), *keys, *args)
        except ResponseError as exc:
            if "Function not found" not in str(exc):
                raise
            await self.load()
            return await self.redis.fcall(name, len(keys), *keys, *args)

    async def call_many(self, calls: list[tuple[str, list[str], list[Any]]]) -> list[Any]:
        """One round trip for many calls (the claim micro-batch)."""
        for attempt in range(2):
            pipe = self.redis.pipeline(transaction=False)
            for name, keys, args in calls:
                pipe.fcall(name, len(keys), *keys, *args)
            results = await pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(r, ResponseError) and "Function not found" in str(r)
                                    for r in results):
                await self.load()
                continue
            return list(results)
        raise AssertionError("unreachable")
