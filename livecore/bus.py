"""The show event bus: how domain code announces things to every gateway node.

Three Redis streams per show, all under the show's hash tag:
- `events`: broadcast events with a per-show `seq` (history for resume);
- `staff`: moderator/host-only events (`chat.flagged`, `mod.action`), no seq;
- `vol`: volatile node-to-node state (deal remaining), trimmed hard.
Gateway nodes tail the three with one XREAD per show; see gateway/hub.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from redis.asyncio import Redis

from livecore.ids import now_ms
from livecore.keys import Keys
from livecore.redisfn import RedisFunctions

STREAMS = ("events", "staff", "vol")


class EventBus:
    def __init__(self, redis: Redis, fns: RedisFunctions, keys: Keys, history_max: int) -> None:
        self.redis = redis
        self.fns = fns
        self.keys = keys
        self.history_max = history_max
        # The gateway tells us the highest seq it has seen per show, so that a
        # Redis that lost its data never re-issues a seq clients already hold.
        self.seq_floor: Callable[[str], int] = lambda show_id: 0

    def stream_keys(self, show_id: str) -> list[str]:
        return [self.keys.show(show_id, s) for s in STREAMS]

    async def publish(self, show_id: str, type_: str, payload: dict[str, Any]) -> tuple[int, str]:
        """Store and broadcast one event; returns (seq, frame text)."""
        body = orjson.dumps({"type": type_, **payload, "ts": now_ms()})
        prefix = body[:-1].decode()
        seq, data = await self.fns.call(
            "lc_publish", [self.keys.show(show_id, "seq"), self.keys.show(show_id, "events")],
            [prefix, self.history_max, self.seq_floor(show_id)])
        return int(seq), str(data)

    async def publish_staff(self, show_id: str, type_: str, payload: dict[str, Any]) -> None:
        data = orjson.dumps({"type": type_, **payload, "ts": now_ms()})
        await self.redis.xadd(self.keys.show(show_id, "staff"), {"d": data}, maxlen=1000, approximate=True)

    async def publish_volatile(self, show_id: str, payload: dict[str, Any]) -> None:
        await self.redis.xadd(self.keys.show(show_id, "vol"), {"d": orjson.dumps(payload)},
                              maxlen=100, approximate=True)

    async def last_seq(self, show_id: str) -> int:
        value = await self.redis.get(self.keys.show(show_id, "seq"))
        return int(value) if value else 0
