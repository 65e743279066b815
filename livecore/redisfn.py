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
        """One round trip for many calls (the claim micro-batch). Errors come
        back in place, as exception objects."""
        results = await self._pipeline(calls)
        missing = [i for i, r in enumerate(results) if _not_loaded(r)]
        if missing:
            # Only the calls that failed are sent again: the others already ran,
            # and running a claim twice would hold its units twice.
            await self.load()
            again = await self._pipeline([calls[i] for i in missing])
            for i, r in zip(missing, again, strict=True):
                results[i] = r
        return results

    async def _pipeline(self, calls: list[tuple[str, list[str], list[Any]]]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        for name, keys, args in calls:
            pipe.fcall(name, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))


def _not_loaded(result: Any) -> bool:
    return isinstance(result, ResponseError) and "Function not found" in str(result)
