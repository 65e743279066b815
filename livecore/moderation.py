"""Moderation state and actions.

State lives in Redis under the show's hash tag, read on every chat.send so a
ban acknowledged on one node is enforced on every node for the next message.
Every action is written to PostgreSQL (the audit trail) before it is acked.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from livecore import wordfilter
from livecore.auth import Claims
from livecore.bus import EventBus
from livecore.errors import Banned, Muted, NotFound, SlowMode
from livecore.ids import now_ms
from livecore.keys import Keys
from livecore.settings import Settings

MESSAGE_TTL_S = 12 * 3600


class Moderation:
    def __init__(self, pool: asyncpg.Pool, redis: Redis, keys: Keys, bus: EventBus,
                 settings: Settings) -> None:
        self.pool = pool
        self.redis = redis
        self.keys = keys
        self.bus = bus
        self.settings = settings

    def _k(self, show_id: str, suffix: str) -> str:
        return self.keys.show(show_id, suffix)

    # ---- enforcement ------------------------------------------------------

    async def check_user(self, show_id: str, user_id: str) -> None:
        """Raise Banned or Muted for this user in this show."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.sismember(self._k(show_id, "bans"), user_id)
        pipe.hget(self._k(show_id, "mutes"), user_id)
        banned, muted_until = await pipe.execute()
        if banned:
            raise Banned(until=None)
        if muted_until is not None and int(muted_until) > now_ms():
            raise Muted(f"you are muted for {max(1, (int(muted_until) - now_ms()) // 1000)} s",
                        until=int(muted_until))

    async def is_banned(self, show_id: str, user_id: str) -> bool:
        return bool(await self.redis.sismember(self._k(show_id, "bans"), user_id))

    async def check_chat(self, show_id: str, user_id: str, text: str) -> str | None:
        """Enforce bans, timeouts and slow mode; return a hold reason or None."""
        await self.check_user(show_id, user_id)
        cfg = await self.redis.hmget(self._k(show_id, "modcfg"), ["slow_mode", "filter"])
        slow = int(cfg[0] or 0)
        if slow > 0:
            ok = await self.redis.set(self._k(show_id, f"slow:{user_id}"), 1, nx=True, px=slow * 1000)
            if not ok:
                ttl = await self.redis.pttl(self._k(show_id, f"slow:{user_id}"))
                raise SlowMode(f"slow mode: one message every {slow} s",
                               retry_after_ms=max(1, int(ttl)))
        words = list(wordfilter.DEFAULT_WORDS) + (orjson.loads(cfg[1]) if cfg[1] else [])
        return wordfilter.check(text, words, hold_links=self.settings.hold_links)

    # ---- messages ------------------------------------------------------------

    async def remember(self, show_id: str, message: dict[str, Any], *, held: str | None = None) -> None:
        key = self._k(show_id, "held" if held else "msgs")
        value = dict(message, reason=held) if held else message
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, message["id"], orjson.dumps(value))
        pipe.expire(key, MESSAGE_TTL_S)
        await pipe.execute()

    async def message(self, show_id: str, message_id: str, *, held: bool = False) -> dict[str, Any]:
        raw = await self.redis.hget(self._k(show_id, "held" if held else "msgs"), message_id)
        if raw is None:
            raise NotFound("unknown message")
        data: dict[str, Any] = orjson.loads(raw)
        return data

    async def take_held(self, show_id: str, message_id: str) -> dict[str, Any]:
        """Remove a held message from the review queue (exactly one moderator wins)."""
        message = await self.message(show_id, message_id, held=True)
        if not await self.redis.hdel(self._k(show_id, "held"), message_id):
            raise NotFound("message already reviewed")
        message.pop("reason", None)
        return message

    async def held_messages(self, show_id: str) -> list[dict[str, Any]]:
        raw = await self.redis.hgetall(self._k(show_id, "held"))
        return sorted((orjson.loads(v) for v in raw.values()), key=lambda m: m.get("ts", 0))

    async def mark_deleted(self, show_id: str, message_id: str) -> bool:
        key = self._k(show_id, "deleted")
        pipe = self.redis.pipeline(transaction=False)
        pipe.sadd(key, message_id)
        pipe.expire(key, MESSAGE_TTL_S)
        pipe.hdel(self._k(show_id, "msgs"), message_id)
        added, _, _ = await pipe.execute()
        return bool(added)

    async def deleted_ids(self, show_id: str) -> set[str]:
        members: Any = await self.redis.smembers(self._k(show_id, "deleted"))
        return {str(m) for m in members}

    async def set_pinned_message(self, show_id: str, message: dict[str, Any] | None) -> None:
        key = self._k(show_id, "pinnedmsg")
        if message is None:
            await self.redis.delete(key)
        else:
            await self.redis.set(key, orjson.dumps(message), ex=MESSAGE_TTL_S)

    async def pinned_message(self, show_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self._k(show_id, "pinnedmsg"))
        return None if raw is None else dict(orjson.loads(raw))

    # ---- actions -------------------------------------------------------------

    async def ban(self, show_id: str, user_id: str) -> None:
        await self.redis.sadd(self._k(show_id, "bans"), user_id)

    async def unban(self, show_id: str, user_id: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.srem(self._k(show_id, "bans"), user_id)
        pipe.hdel(self._k(show_id, "mutes"), user_id)
        await pipe.execute()

    async def timeout(self, show_id: str, user_id: str, seconds: int) -> int:
        until = now_ms() + seconds * 1000
        await self.redis.hset(self._k(show_id, "mutes"), user_id, until)
        return until

    async def set_slow_mode(self, show_id: str, seconds: int) -> None:
        await self.redis.hset(self._k(show_id, "modcfg"), "slow_mode", seconds)

    async def set_filter(self, show_id: str, words: list[str]) -> None:
        await self.redis.hset(self._k(show_id, "modcfg"), "filter", orjson.dumps(words))

    async def settings_of(self, show_id: str) -> dict[str, Any]:
        cfg = await self.redis.hmget(self._k(show_id, "modcfg"), ["slow_mode", "filter"])
        return {"slow_mode": int(cfg[0] or 0), "filter": orjson.loads(cfg[1]) if cfg[1] else []}

    async def record(self, show_id: str, actor: Claims, action: str, target: str | None,
                     reason: str | None = None, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Durably record the action, then announce it to moderators and hosts."""
        row = await self.pool.fetchrow(
            "INSERT INTO moderation_actions (show_id, actor_id, actor_role, action, target, reason,"
            " data, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7::jsonb,$8) RETURNING *",
            show_id, actor.sub, actor.role, action, target, reason,
            orjson.dumps(data or {}).decode(), now_ms())
        entry = audit_dict(row)
        await self.bus.publish_staff(show_id, "mod.action", {"action": entry})
        return entry

    async def audit(self, show_id: str, *, after: int = 0, limit: int = 50) -> tuple[list[dict[str, Any]], int | None]:
        rows = await self.pool.fetch(
            "SELECT * FROM moderation_actions WHERE show_id=$1 AND id > $2 ORDER BY id LIMIT $3",
            show_id, after, limit + 1)
        items = [audit_dict(r) for r in rows[:limit]]
        return items, (items[-1]["id"] if len(rows) > limit else None)


def audit_dict(row: asyncpg.Record | None) -> dict[str, Any]:
    assert row is not None
    data = row["data"]
    return {"id": row["id"], "show_id": row["show_id"], "actor_id": row["actor_id"],
            "actor_role": row["actor_role"], "action": row["action"], "target": row["target"],
            "reason": row["reason"], "data": orjson.loads(data) if isinstance(data, str) else data,
            "created_at": row["created_at"]}
