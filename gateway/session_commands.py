"""What each socket command does. One small function per command type.

Each returns the ack's extra fields (a dict), a full reply frame (a dict
with `type`), or None for no reply; domain errors propagate as exceptions
and become `error` frames in gateway/ws.py.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.context import AppContext
from gateway.hub import Conn
from livecore import protocol
from livecore.analytics import RECORDER
from livecore.auth import Claims
from livecore.currencies import EXPONENT
from livecore.deals import public_deal
from livecore.errors import (
    BadRequest,
    Banned,
    DealNotLive,
    Forbidden,
    LiveCoreError,
    Muted,
    NotFound,
    RateLimited,
    Unauthenticated,
    ValidationFailed,
)
from livecore.ids import new_id, now_ms
from livecore.models import DealIn, parse
from livecore.ratelimit import TokenBucket

log = logging.getLogger("gateway.session_commands")
BOT = {"id": "bot", "name": "LiveCore Assistant"}
PRICE_PATTERNS = re.compile(r"(\bprice\b|how much|\bcost\b|كم السعر|بكم|السعر|كم سعر)", re.IGNORECASE)


@dataclass
class CommandContext:
    ctx: AppContext
    conn: Conn
    claims: Claims | None
    endpoint: str
    chat_bucket: TokenBucket | None = None
    claim_bucket: TokenBucket = field(default_factory=lambda: TokenBucket(5, 10))

    @property
    def show_id(self) -> str:
        return self.conn.show_id

    def user(self) -> Claims:
        if self.claims is None:
            raise Unauthenticated("join with a token to do this")
        return self.claims


Handler = Callable[[CommandContext, dict[str, Any]], Awaitable[dict[str, Any] | None]]
HANDLERS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        return fn
    return register


async def run_command(c: CommandContext, type_: str, frame: dict[str, Any]) -> dict[str, Any] | None:
    return await HANDLERS[type_](c, frame)


def chat_message(claims: Claims, text: str) -> dict[str, Any]:
    return {"id": new_id("m"), "user": {"id": claims.sub, "name": claims.name, "role": claims.role},
            "text": text, "ts": now_ms()}


# ---- everyone -----------------------------------------------------------------

@command("ping")
async def ping(c: CommandContext, frame: dict[str, Any]) -> dict[str, Any]:
    return {"type": "pong", "server_time": now_ms()}


@command("chat.send")
async def chat_send(c: CommandContext, frame: dict[str, Any]) -> dict[str, Any]:
    claims = c.user()
    text = protocol.chat_text(frame)
    settings = c.ctx.settings
    if c.chat_bucket is None:
        c.chat_bucket = TokenBucket(settings.chat_rate_per_s, settings.chat_burst)
    if claims.role == "viewer":
        wait = c.chat_bucket.take(time.monotonic())
        if wait > 0:
            raise RateLimited("you are sending messages too fast", retry_after_ms=int(wait * 1000) + 1)
    mod = c.ctx.services.moderation
    try:
        held = await mod.check_chat(c.show_id, claims.sub, text) if claims.role == "viewer" else None
    except (Muted, Banned) as exc:
        notice = {"type": "mod.notice", "action": "ban" if isinstance(exc, Banned) else "timeout",
                  "until": exc.extra.get("until")}
        c.conn.push(orjson.dumps(notice).decode())
        raise
    message = chat_message(claims, text)
    if held is not None:
        await mod.remember(c.show_id, message, held=held)
        await c.ctx.services.bus.publish_staff(c.show_id, "chat.flagged",
                                               {"message": message, "reason": held})
        return {"message_id": message["id"], "held": True}
    # Together, not one after the other: under a big fanout each round trip
    # waits behind a broadcast, and the host's next message waits behind both.
    # (A moderator can only act on the message after seeing it, long after
    # `remember` has landed.)
    await asyncio.gather(mod.remember(c.show_id, message),
                         c.ctx.services.bus.publish(c.show_id, "chat.message", {"message": message}))
    c.ctx.hub.note_chat(c.show_id)
    RECORDER.count(c.show_id, "chat")
    try:
        await _maybe_auto_reply(c, text)
    except Exception:
        # The message is out: a failed bot reply (PostgreSQL or Redis away) must
        # not turn its ack into an error, which the client would retry: twice posted.
        log.warning("auto-reply in show %s failed", c.show_id, exc_info=True)
    return {"message_id": message["id"]}


async def _faq_rules(c: CommandContext) -> list[tuple[list[str], str]]:
    cache = c.ctx.hub.faq_cache
    entry = cache.get(c.show_id)
    # Short TTL: FAQ edits made on another node show up here within 2 s.
    if entry is None or entry[0] < time.monotonic() - 2:
        rows = await c.ctx.services.pool.fetch(
            "SELECT patterns, answer FROM faq_rules WHERE show_id=$1 ORDER BY id", c.show_id)
        entry = (time.monotonic(), [(list(r["patterns"]), r["answer"]) for r in rows])
        cache[c.show_id] = entry
    rules: list[tuple[list[str], str]] = entry[1]
    return rules


def format_price(cents: int, currency: str) -> str:
    exp = EXPONENT.get(currency, 2)
    return f"{cents / 10**exp:.{exp}f} {currency}"


async def _maybe_auto_reply(c: CommandContext, text: str) -> None:
    """Answer common questions as the bot, at most once per 3 s per show."""
    lowered = text.casefold()
    answer = None
    for patterns, rule_answer in await _faq_rules(c):
        if any(p.casefold() in lowered for p in patterns):
            answer = rule_answer
            break
    if answer is None and PRICE_PATTERNS.search(text):
        services = c.ctx.services
        product = await services.shows.pinned_product(c.show_id)
        deal = await services.deals.live_deal(c.show_id)
        parts = []
        if product:
            parts.append(f"{product['name']}: {format_price(product['price_cents'], product['currency'])}")
        if deal:
            parts.append(f"Flash deal: {format_price(deal['price_cents'], deal['currency'])}"
                         f" ({deal['remaining']} left)")
        answer = " — ".join(parts) if parts else None
    if answer is None:
        return
    redis = c.ctx.services.redis
    if not await redis.set(c.ctx.services.keys.show(c.show_id, "botlimit"), 1, nx=True, px=3000):
        return
    message = {"id": new_id("m"), "user": {**BOT, "role": "bot"}, "text": answer, "ts": now_ms(),
               "bot": True}
    await c.ctx.services.moderation.remember(c.show_id, message)
    await c.ctx.services.bus.publish(c.show_id, "chat.message", {"message": message})


@command("react")
async def react(c: CommandContext, frame: dict[str, Any]) -> None:
    c.ctx.hub.react(c.show_id, protocol.emoji(frame))
    RECORDER.count(c.show_id, "reactions")
    return None


@command("deal.claim")
async def deal_claim(c: CommandContext, frame: dict[str, Any]) -> dict[str, Any]:
    claims = c.user()
    deal_id = protocol.req_str(frame, "deal_id", max_len=64)
    qty = protocol.req_int(frame, "qty", lo=1, hi=1000, default=1)
    wait = c.claim_bucket.take(time.monotonic())
    if wait > 0:
        raise RateLimited("too many claims", retry_after_ms=int(wait * 1000) + 1)
    services = c.ctx.services
    if c.ctx.settings.ban_blocks_claims and await services.moderation.is_banned(c.show_id, claims.sub):
        raise Banned()
    key = frame.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 200):
        raise BadRequest("`idempotency_key` must be a short string")
    try:
        reservation = await services.deals.claim(c.show_id, deal_id, claims.sub, qty, key)
    except NotFound:
        # The socket's claim codes are PROTOCOL §5's list: a deal this show does
        # not have is not live here. (HTTP answers 404 for the same claim.)
        raise DealNotLive("no such deal in this show") from None
    c.ctx.hub.note_claim(c.show_id)
    return {"reservation": reservation}


# ---- host ------------------------------------------------------------------------

async def _set_status(c: CommandContext, status: str) -> dict[str, Any]:
    show, changed = await c.ctx.shows.set_status(c.show_id, status)
    if changed:
        await c.ctx.services.bus.publish(c.show_id, "show.status", {"status": status})
    return {"show": {"id": show["id"], "title": show["title"], "status": show["status"]}}


@command("show.start")
async def show_start(c: CommandContext, frame: dict[str, Any]) -> dict[str, Any]:
    return await _set_status(c, "live")


@command("show.end")
async def show_end(c: CommandContext, frame: dict[str, Any]) -> dict[str, Any]:
    deal = await c.ctx.services.deals.live_deal(c.show_id)
    if deal is not None:
        await c.ctx.services.deals.cancel(c.show_id, deal["id"])
    result = await _set_status(c, "ended")
    if c.ctx.video is not None:
        # Here at once; nodes holding the ingest elsewhere notice within a poll.
        await c.ctx.video.end_show(c.show_id)
    return result


@command("product.pin")
async def product_pin(c: CommandContext, frame: dict[str, Any]) -> dict[str, Any]:
    product_id = protocol.req_str(frame, "product_id", max_len=64)
    product = await c.ctx.shows.pin(c.show_id, product_id)
    await c.ctx.services.bus.publish(c.show_id, "product.pinned", {"product": product})
    RECORDER.count(c.show_id, "pins", dim=product_id)
    return {"product": product}


@command("product.unpin")
async def product_unpin(c: CommandContext, frame: dict[str, Any]) -> dict[str, Any]:
    current = await c.ctx.shows.pinned_product(c.show_id)
    await c.ctx.shows.pin(c.show_id, None)
    if current is not None:
        await c.ctx.services.bus.publish(c.show_id, "product.unpinned", {"product_id": current["id"]})
    return {"product_id": current["id"] if current else None}


@command("deal.launch")
async def deal_launch(c: CommandContext, frame: dict[str, Any]) -> dict[str, Any]:
    fields = {k: v for k, v in frame.items() if k not in ("type", "id")}
    try:
        data = parse(DealIn, fields)
    except ValidationFailed as exc:
        # On the socket a frame with wrong or missing fields is `bad_request`
        # (PROTOCOL §5); HTTP keeps its 422 `validation_error`.
        raise BadRequest(exc.message, **exc.extra) from None
    deal = await c.ctx.services.deals.launch(c.show_id, data)
    return {"deal": public_deal(deal)}


@command("deal.cancel")
async def deal_cancel(c: CommandContext, frame: dict[str, Any]) -> dict[str, Any]:
    deal_id = protocol.req_str(frame, "deal_id", max_len=64)
    deal = await c.ctx.services.deals.cancel(c.show_id, deal_id)
    return {"deal": public_deal(deal)}


@command("announce")
async def announce(c: CommandContext, frame: dict[str, Any]) -> dict[str, Any]:
    text = protocol.req_str(frame, "text", max_len=500)
    seq, _ = await c.ctx.services.bus.publish(c.show_id, "announcement", {"text": text})
    return {"seq": seq}


# ---- moderator ---------------------------------------------------------------------

async def _audit(c: CommandContext, action: str, target: str | None, **data: Any) -> dict[str, Any]:
    return await c.ctx.services.moderation.record(c.show_id, c.user(), action, target, data=data)


def _target_user(frame: dict[str, Any]) -> str:
    return protocol.req_str(frame, "user_id", max_len=128)


@command("chat.delete")
async def chat_delete(c: CommandContext, frame: dict[str, Any]) -> dict[str, Any]:
    message_id = protocol.req_str(frame, "message_id", max_len=64)
    mod = c.ctx.services.moderation
    await mod.mark_deleted(c.show_id, message_id)
    entry = await _audit(c, "chat.delete", message_id)
    await c.ctx.services.bus.publish(c.show_id, "chat.deleted", {"message_id": message_id})
    pinned = await mod.pinned_message(c.show_id)
    if pinned and pinned.get("id") == message_id:
        await mod.set_pinned_message(c.show_id, None)
        await c.ctx.services.bus.publish(c.show_id, "chat.unpinned", {"message_id": message_id})
    return {"message_id": message_id, "audit_id": entry["id"]}


@command("chat.pin")
async def chat_pin(c: CommandContext, frame: dict[str, Any]) -> dict[str, Any]:
    message_id = protocol.req_str(frame, "message_id", max_len=64)
    mod = c.ctx.services.moderation
    message = await mod.message(c.show_id, message_id)
    await mod.set_pinned_message(c.show_id, message)
    await _audit(c, "chat.pin", message_id)
    await c.ctx.services.bus.publish(c.show_id, "chat.pinned", {"message": message})
    return {"message_id": message_id}


@command("chat.unpin")
async def chat_unpin(c: CommandContext, frame: dict[str, Any]) -> dict[str, Any]:
    mod = c.ctx.services.moderation
    pinned = await mod.pinned_message(c.show_id)
    await mod.set_pinned_message(c.show_id, None)
    message_id = pinned.get("id") if pinned else None
    await _audit(c, "chat.unpin", message_id)
    if message_id:
        await c.ctx.services.bus.publish(c.show_id, "chat.unpinned", {"message_id": message_id})
    return {"message_id": message_id}


@command("user.timeout")
async def user_timeout(c: CommandContext, frame: dict[str, Any]) -> dict[str, Any]:
    user_id = _target_user(frame)
    seconds = protocol.req_int(frame, "seconds", lo=1, hi=7 * 86_400)
    until = await c.ctx.services.moderation.timeout(c.show_id, user_id, seconds)
    await _audit(c, "user.timeout", user_id, seconds=seconds, until=until)
    return {"user_id": user_id, "until": until}


@command("user.ban")
async def user_ban(c: CommandContext, frame: dict[str, Any]) -> dict[str, Any]:
    user_id = _target_user(frame)
    await c.ctx.services.moderation.ban(c.show_id, user_id)
    await _audit(c, "user.ban", user_id)
    return {"user_id": user_id}


@command("user.unban")
async def user_unban(c: CommandContext, frame: dict[str, Any]) -> dict[str, Any]:
    user_id = _target_user(frame)
    await c.ctx.services.moderation.unban(c.show_id, user_id)
    await _audit(c, "user.unban", user_id)
    return {"user_id": user_id}


@command("chat.slow_mode")
async def chat_slow_mode(c: CommandContext, frame: dict[str, Any]) -> dict[str, Any]:
    seconds = protocol.req_int(frame, "seconds", lo=0, hi=3600)
    await c.ctx.services.moderation.set_slow_mode(c.show_id, seconds)
    await _audit(c, "chat.slow_mode", None, seconds=seconds)
    return {"seconds": seconds}


@command("chat.filter")
async def chat_filter(c: CommandContext, frame: dict[str, Any]) -> dict[str, Any]:
    words = frame.get("words")
    if not isinstance(words, list) or len(words) > 500 or not all(
            isinstance(w, str) and 0 < len(w) <= 100 for w in words):
        raise BadRequest("`words` must be a list of up to 500 non-empty strings")
    await c.ctx.services.moderation.set_filter(c.show_id, words)
    await _audit(c, "chat.filter", None, words=words)
    return {"words": words}


@command("chat.approve")
async def chat_approve(c: CommandContext, frame: dict[str, Any]) -> dict[str, Any]:
    message_id = protocol.req_str(frame, "message_id", max_len=64)
    mod = c.ctx.services.moderation
    message = await mod.take_held(c.show_id, message_id)
    await mod.remember(c.show_id, message)
    await _audit(c, "chat.approve", message_id)
    await c.ctx.services.bus.publish(c.show_id, "chat.message", {"message": message})
    RECORDER.count(c.show_id, "chat")
    return {"message_id": message_id}


@command("chat.reject")
async def chat_reject(c: CommandContext, frame: dict[str, Any]) -> dict[str, Any]:
    message_id = protocol.req_str(frame, "message_id", max_len=64)
    await c.ctx.services.moderation.take_held(c.show_id, message_id)
    await _audit(c, "chat.reject", message_id)
    return {"message_id": message_id}


__all__ = ["HANDLERS", "CommandContext", "Forbidden", "LiveCoreError", "NotFound", "run_command"]
