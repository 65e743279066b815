"""The fanout hub: one per gateway node.

Each show with local subscribers has a ShowChannel that tails the show's
Redis streams (events, staff, vol) with one blocking XREAD. Every event
arrives as final frame text (seq already inside), so the hub never encodes
per connection: it pushes the same `str` to every connection, the socket
layer turns it into frame bytes once (gateway/wire.py) and each push is one
`transport.write`. The broadcast loop has no `await` per connection, and a
slow client can only hurt itself: its frames wait in its bounded queue,
droppable ones are skipped for it, and when the queue overflows it is closed 1013.

Ticks, viewer counts, reactions and host stats are generated here per node on
timers, one encode per show per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis

from gateway.wire import text_frame, text_frames
from livecore.bus import EventBus
from livecore.ids import now_ms
from livecore.keys import Keys
from livecore.metrics import CONNECTIONS, DROPPED, FANOUT_DELAY, FRAMES_OUT, SLOW_CLOSED
from livecore.settings import Settings
from livecore.tasks import spawn

log = logging.getLogger("gateway.hub")

class Sink(Protocol):
    """What a Conn writes to: the connection's socket (gateway/socket_protocol.py)."""

    def write_text(self, data: str) -> None: ...

    def write_texts(self, datas: list[str]) -> None: ...

    def raw_writer(self) -> Callable[[bytes], None] | None:
        """Where frame bytes can go as they are (None: each frame must be compressed)."""

    def close(self, code: int, reason: str) -> None: ...


class Conn:
    """One client socket as the hub sees it: a bounded queue in front of the transport.

    While the socket's transport accepts writes (`ready`), `push` writes at once: no
    queue, task, future or await per frame. When the transport's buffer passes its
    high-water mark (a slow client), the socket calls `pause`; frames then wait in
    `queue`, droppable ones are skipped when it is full, and overflow closes the
    client 1013. `resume` (the buffer drained) writes the queue out in order.
    Until `start` (welcome and replay queued) nothing is written.
    """

    __slots__ = (
        "batch_ok",
        "closing",
        "direct",
        "live",
        "max_queue",
        "paused",
        "pending",
        "queue",
        "ready",
        "role",
        "show_id",
        "sink",
        "staff",
        "started",
        "user_id",
    )

    def __init__(self, show_id: str, role: str, user_id: str | None, sink: Sink,
                 max_queue: int, batch_ok: bool = True) -> None:
        self.show_id = show_id
        self.role = role
        self.user_id = user_id
        self.staff = role in ("host", "moderator", "admin")
        self.sink = sink
        self.max_queue = max_queue
        self.batch_ok = batch_ok
        # A list, not a deque: an empty deque is 624 bytes, and this is empty nearly always
        # (pop(0) on a queue bounded at send_queue_max is cheap).
        self.queue: list[str] = []
        self.closing = False
        # Until the welcome (and any replay) is queued, live events wait here.
        self.live = False
        self.pending: list[tuple[int, str, str]] = []
        self.started = False
        self.paused = False
        self.ready = False  # started and not paused: push writes straight through
        # While ready, the transport's write itself (the hub's broadcast loops call it with
        # the shared frame bytes: no call through push and the socket per viewer).
        self.direct: Callable[[bytes], None] | None = None

    def push(self, data: str, droppable: bool = False) -> None:
        if self.ready:
            self.sink.write_text(data)
            return
        if self.closing:
            return
        if len(self.queue) >= self.max_queue:
            if droppable:
                DROPPED.inc()
                return
            SLOW_CLOSED.inc()
            self.close(1013, "too slow: send queue overflowed")
            return
        self.queue.append(data)

    def push_many(self, datas: list[str]) -> None:
        """Several events as separate frames (a client that said batch:false), in one write."""
        if self.ready:
            self.sink.write_texts(datas)
            return
        for data in datas:
            self.push(data)

    def start(self) -> None:
        """The welcome (and replay) are queued: write them, then write through."""
        self.started = True
        if not self.paused:
            self.resume()

    def pause(self) -> None:
        self.paused = True
        self.ready = False
        self.direct = None

    def resume(self) -> None:
        self.paused = False
        queue = self.queue
        # A write may pause the transport again (pause() runs inside it): stop there.
        while queue and not self.paused and not self.closing:
            self.sink.write_text(queue.pop(0))
        self.ready = self.started and not self.paused and not self.closing
        self.direct = self.sink.raw_writer() if self.ready else None

    def close(self, code: int, reason: str = "") -> None:
        if not self.closing:
            self.gone()
            self.sink.close(code, reason)

    def gone(self) -> None:
        """Nothing more is written (closing, or the socket is already closed)."""
        self.closing = True
        self.ready = False
        self.direct = None
        self.queue.clear()


@dataclass
class DealView:
    id: str
    remaining: int
    ends_at: int


@dataclass
class ShowChannel:
    show_id: str
    conns: set[Conn] = field(default_factory=set)
    last_seq: int = 0
    last_ids: dict[str, str] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None
    deal: DealView | None = None
    reactions: Counter[str] = field(default_factory=Counter)
    chat_count: int = 0
    claim_count: int = 0
    last_viewers: int = -1
    last_tick_ms: int = 0
    viewers_total: int = 0
    peak: int = 0


class Hub:
    def __init__(self, redis: Redis, blocking_redis: Redis, keys: Keys, bus: EventBus,
                 settings: Settings, node_id: str) -> None:
        self.redis = redis
        self.blocking = blocking_redis
        self.keys = keys
        self.bus = bus
        self.settings = settings
        self.node_id = node_id
        self.channels: dict[str, ShowChannel] = {}
        self.timers: list[asyncio.Task[None]] = []
        self._stats_pending: Counter[tuple[str, str]] = Counter()
        self._stats_flushing = False
        self.stats_source: Callable[[str], Awaitable[dict[str, int]]] | None = None
        self.deal_source: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None
        self.faq_cache: dict[str, Any] = {}
        self.conn_count = 0
        bus.seq_floor = lambda show_id: self.channels[show_id].last_seq if show_id in self.channels else 0

    # ---- lifecycle ------------------------------------------------------

    def start(self) -> None:
        # Checked ten times per tick interval: a tick goes out on its own only when none rode
        # along with an event lately (see _dispatch_events), at most one interval apart.
        self.timers = [asyncio.ensure_future(self._timer(self.settings.tick_interval_s / 10, self._ticks, True)),
                       asyncio.ensure_future(self._timer(self.settings.viewers_interval_s, self._presence)),
                       asyncio.ensure_future(self._timer(self.settings.reactions_interval_s, self._reactions)),
                       asyncio.ensure_future(self._timer(self.settings.stats_interval_s, self._stats))]

    async def stop(self, code: int = 1012) -> None:
        for ch in list(self.channels.values()):
            for conn in list(ch.conns):
                conn.close(code, "server restarting")
        await asyncio.sleep(0.05)
        for task in self.timers:
            task.cancel()
        readers = [ch.reader for ch in self.channels.values() if ch.reader]
        for task in readers:
            task.cancel()
        # Wait for them: the app closes the blocking Redis client next, and a
        # reader still inside XREAD would log that as a failure.
        await asyncio.gather(*readers, *self.timers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.redis.hdel(self.keys.prefix + ":nodes", self.node_id)

    async def _timer(self, interval: float, fn: Callable[[], Awaitable[None]], fixed_rate: bool = False) -> None:
        # fixed_rate: every `interval` from the start, not interval + run time. A 10 000-viewer
        # tick broadcast takes ~0.15 s, and deal.tick must come at least once a second (PROTOCOL §4).
        loop = asyncio.get_running_loop()
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()) if fixed_rate else interval)
            next_at = max(next_at + interval, loop.time())
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("hub timer %s failed", getattr(fn, "__name__", fn), exc_info=True)

    # ---- membership -----------------------------------------------------

    async def join(self, conn: Conn) -> ShowChannel:
        ch = self.channels.get(conn.show_id)
        if ch is None:
            ch = ShowChannel(conn.show_id)
            self.channels[conn.show_id] = ch
            ch.reader = asyncio.ensure_future(self._read_loop(ch))
        ch.conns.add(conn)
        self.conn_count += 1
        CONNECTIONS.labels(conn.role).inc()
        await ch.ready.wait()
        return ch

    def leave(self, conn: Conn) -> None:
        ch = self.channels.get(conn.show_id)
        if ch is None or conn not in ch.conns:
            return
        ch.conns.discard(conn)
        self.conn_count -= 1
        CONNECTIONS.labels(conn.role).dec()
        if not ch.conns:
            # Keep the channel a moment: reconnects are common and cheap to serve warm.
            asyncio.get_running_loop().call_later(30, self._maybe_drop, conn.show_id)

    def _maybe_drop(self, show_id: str) -> None:
        ch = self.channels.get(show_id)
        if ch is not None and not ch.conns:
            if ch.reader:
                ch.reader.cancel()
            del self.channels[show_id]
            spawn(self._presence_remove(show_id))

    async def _presence_remove(self, show_id: str) -> None:
        with contextlib.suppress(Exception):
            await self.redis.hdel(self.keys.show(show_id, "presence"), self.node_id)

    def go_live(self, conn: Conn, after_seq: int) -> None:
        """Welcome (and replay up to `after_seq`) are queued; release buffered events."""
        for seq, data, type_ in conn.pending:
            if seq > after_seq:
                self._deliver(conn, data, type_)
        conn.pending = []
        conn.live = True

    # ---- reading the show's streams -------------------------------------

    async def _read_loop(self, ch: ShowChannel) -> None:
        ev, staff, vol = self.bus.stream_keys(ch.show_id)
        backoff = 0.1
        recovering = False
        while True:
            try:
                if not ch.ready.is_set():
                    await self._init_channel(ch, ev, staff, vol)
                    ch.ready.set()
                    backoff = 0.1
                elif recovering:
                    # Redis is answering again; it may have lost its data. Put the
                    # seq floor back before anything else, so that the window in which
                    # a node without this show's floor re-issues old seqs stays short.
                    await self._check_seq_reset(ch)
                    recovering, backoff = False, 0.1
                resp: Any = await self.blocking.xread(
                    {ev: ch.last_ids[ev], staff: ch.last_ids[staff], vol: ch.last_ids[vol]},
                    block=2000, count=500)
                if not resp:
                    await self._check_seq_reset(ch)
                    continue
                for stream, entries in resp:
                    if not entries:
                        continue
                    ch.last_ids[stream] = entries[-1][0]
                    datas = [e[1]["d"] for e in entries]
                    if stream == ev:
                        self._dispatch_events(ch, datas)
                    elif stream == staff:
                        for d in datas:
                            self._broadcast(ch, d, staff_only=True)
                    else:
                        for d in datas:
                            self._on_volatile(ch, orjson.loads(d))
                if self.settings.batch_window_ms > 0:
                    # Fixed window: what arrives meanwhile goes out as one batch frame
                    # (PROTOCOL §5 allows up to 100 ms). 0 = adaptive: a batch is
                    # whatever piled up while the last one was being sent.
                    await asyncio.sleep(self.settings.batch_window_ms / 1000)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("show %s reader failed; retrying", ch.show_id, exc_info=not recovering)
                recovering = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    async def _init_channel(self, ch: ShowChannel, ev: str, staff: str, vol: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for key in (ev, staff, vol):
            pipe.xrevrange(key, count=1)
        pipe.get(self.keys.show(ch.show_id, "seq"))
        ev_last, staff_last, vol_last, seq = await pipe.execute()
        ch.last_ids = {ev: ev_last[0][0] if ev_last else "0-0",
                       staff: staff_last[0][0] if staff_last else "0-0",
                       vol: vol_last[0][0] if vol_last else "0-0"}
        stream_seq = int(ev_last[0][0].split("-")[0]) if ev_last else 0
        ch.last_seq = max(stream_seq, int(seq or 0), ch.last_seq)
        if ch.last_ids[ev] == "0-0" and ch.last_seq:
            ch.last_ids[ev] = f"{ch.last_seq}-0"
        if self.deal_source is not None:
            deal = await self.deal_source(ch.show_id)
            ch.deal = DealView(deal["id"], deal["remaining"], deal["ends_at"]) if deal else None

    async def _check_seq_reset(self, ch: ShowChannel) -> None:
        """Redis lost the show's seq (restart without persistence): put our floor back."""
        key = self.keys.show(ch.show_id, "seq")
        value = await self.redis.get(key)
        if ch.last_seq and (value is None or int(value) < ch.last_seq):
            await self.redis.set(key, ch.last_seq)
            log.warning("show %s seq was reset in Redis; restored floor %s", ch.show_id, ch.last_seq)

    def _dispatch_events(self, ch: ShowChannel, datas: list[str]) -> None:
        now = now_ms()
        parsed: list[tuple[int, str, str]] = []
        for data in datas:
            event = orjson.loads(data)
            seq = int(event.get("seq", 0))
            if seq <= ch.last_seq and ch.last_seq:
                continue
            ch.last_seq = seq
            type_ = str(event.get("type"))
            self._apply_state(ch, type_, event)
            FANOUT_DELAY.observe(max(0, now - int(event.get("ts", now))) / 1000)
            parsed.append((seq, data, type_))
        if not parsed:
            return
        singles = [p[1] for p in parsed]
        # A deal.tick due soon rides along in the same write as the events (one broadcast
        # instead of two: at 10 000 viewers a broadcast is ~100 ms, and a chat message that
        # arrived during a tick's broadcast waited for all of it).
        tick = self._tick_frame(ch, now) if self._tick_due(ch, now, early=True) else None
        if tick is not None:
            singles.append(tick)
        batch_frame = None
        if len(singles) > 1:
            batch_frame = '{"type":"batch","events":[' + ",".join(singles) + "]}"
        # Framed once here; a ready connection gets the bytes straight into its transport.
        wire = text_frame(batch_frame if batch_frame is not None else singles[0])
        frames = 0
        for conn in list(ch.conns):
            if not conn.live:
                conn.pending.extend(parsed)  # (not the tick: a newer one will come)
                continue
            direct = conn.direct
            if batch_frame is None or conn.batch_ok:
                if direct is not None:
                    direct(wire)
                else:
                    conn.push(batch_frame or singles[0])
                frames += 1
            else:
                if direct is not None:
                    direct(text_frames(singles))
                else:
                    conn.push_many(singles)
                frames += len(singles)
        # Counted per broadcast: a Counter.inc per frame (it takes a lock) cost as much as the write.
        FRAMES_OUT.inc(frames)

    def _deliver(self, conn: Conn, data: str, type_: str) -> None:
        FRAMES_OUT.inc()
        conn.push(data)

    def _apply_state(self, ch: ShowChannel, type_: str, event: dict[str, Any]) -> None:
        if type_ == "deal.started":
            d = event["deal"]
            ch.deal = DealView(d["id"], int(d["remaining"]), int(d["ends_at"]))
        elif type_ == "deal.ended" and ch.deal and ch.deal.id == event.get("deal_id"):
            ch.deal = None
        elif type_ == "chat.message":
            ch.chat_count += 1

    def _on_volatile(self, ch: ShowChannel, payload: dict[str, Any]) -> None:
        if "deal_id" in payload and ch.deal and ch.deal.id == payload["deal_id"]:
            ch.deal.remaining = int(payload["remaining"])
            self._send_tick(ch)
        elif "reactions" in payload:
            frame = orjson.dumps({"type": "reactions", "counts": payload["reactions"],
                                  "ts": now_ms()}).decode()
            self._broadcast(ch, frame, droppable=True)

    def _broadcast(self, ch: ShowChannel, data: str, *, staff_only: bool = False,
                   droppable: bool = False, hosts_only: bool = False) -> None:
        wire = text_frame(data)
        frames = 0
        for conn in list(ch.conns):
            if not conn.live or (staff_only and not conn.staff):
                continue
            if hosts_only and conn.role not in ("host", "admin"):
                continue
            direct = conn.direct
            if direct is not None:
                direct(wire)
            else:
                conn.push(data, droppable)
            frames += 1
        FRAMES_OUT.inc(frames)

    # ---- node-local generated events --------------------------------------

    def _tick_due(self, ch: ShowChannel, now: int, early: bool = False) -> bool:
        """A tick is due one interval after the last (less a timer step, so the gap never
        exceeds the interval); `early`: with an event going out anyway, from 0.8 of it."""
        if ch.deal is None:
            return False
        interval = self.settings.tick_interval_s * 1000
        return now - ch.last_tick_ms >= (0.8 * interval if early else 0.9 * interval)

    def _tick_frame(self, ch: ShowChannel, now: int) -> str:
        assert ch.deal is not None
        ch.last_tick_ms = now
        return orjson.dumps({"type": "deal.tick", "deal_id": ch.deal.id,
                             "remaining": ch.deal.remaining, "ends_at": ch.deal.ends_at,
                             "server_time": now, "ts": now}).decode()

    def _send_tick(self, ch: ShowChannel) -> None:
        if ch.deal is None:
            return
        self._broadcast(ch, self._tick_frame(ch, now_ms()), droppable=True)

    async def _ticks(self) -> None:
        now = now_ms()
        for ch in list(self.channels.values()):
            if ch.deal is not None and ch.deal.ends_at + 2000 < now:
                ch.deal = None  # deal.ended will follow from the sweeper
            if self._tick_due(ch, now):
                self._send_tick(ch)

    def local_viewers(self, ch: ShowChannel) -> int:
        return sum(1 for c in ch.conns if c.role == "viewer")

    async def _presence(self) -> None:
        if not self.channels:
            return
        now = now_ms()
        ttl_ms = int(self.settings.presence_ttl_s * 1000)
        chans = list(self.channels.values())
        pipe = self.redis.pipeline(transaction=False)
        for ch in chans:
            key = self.keys.show(ch.show_id, "presence")
            pipe.hset(key, self.node_id, f"{self.local_viewers(ch)}:{now}")
            pipe.hgetall(key)
        results = await pipe.execute()
        for i, ch in enumerate(chans):
            entries: dict[str, str] = results[2 * i + 1]
            total, stale = 0, []
            for node, value in entries.items():
                count, _, ts = value.partition(":")
                if int(ts or 0) + ttl_ms < now:
                    stale.append(node)
                else:
                    total += int(count or 0)
            if stale:
                await self.redis.hdel(self.keys.show(ch.show_id, "presence"), *stale)
            ch.viewers_total = total
            ch.peak = max(ch.peak, total)
            if total != ch.last_viewers:
                ch.last_viewers = total
                frame = orjson.dumps({"type": "viewers", "count": total, "ts": now}).decode()
                self._broadcast(ch, frame, droppable=True)

    async def viewers(self, show_id: str) -> int:
        ch = self.channels.get(show_id)
        if ch is not None and ch.last_viewers >= 0:
            return ch.viewers_total
        entries: dict[str, str] = await self.redis.hgetall(self.keys.show(show_id, "presence"))  # type: ignore[assignment]
        now, ttl_ms, total = now_ms(), int(self.settings.presence_ttl_s * 1000), 0
        for value in entries.values():
            count, _, ts = value.partition(":")
            if int(ts or 0) + ttl_ms >= now:
                total += int(count or 0)
        if ch is not None:
            total = max(total, self.local_viewers(ch))
        return total

    def react(self, show_id: str, emoji: str) -> None:
        ch = self.channels.get(show_id)
        if ch is not None:
            ch.reactions[emoji] += 1

    async def _reactions(self) -> None:
        for ch in list(self.channels.values()):
            if ch.reactions:
                counts, ch.reactions = dict(ch.reactions), Counter()
                await self.bus.publish_volatile(ch.show_id, {"reactions": counts, "node": self.node_id})
                self._note_stat(ch.show_id, "reactions", sum(counts.values()))

    def note_claim(self, show_id: str) -> None:
        self._note_stat(show_id, "claims")

    def note_chat(self, show_id: str) -> None:
        self._note_stat(show_id, "chat")

    def _note_stat(self, show_id: str, field_: str, n: int = 1) -> None:
        # Not awaited: an ack must not wait behind a stats write. Counts made
        # while a write is in flight go out together in the next one, so a burst
        # of 2 000 claims costs a few pipelines, not 2 000.
        self._stats_pending[(show_id, field_)] += n
        if not self._stats_flushing:
            self._stats_flushing = True
            spawn(self._flush_stats())

    async def _flush_stats(self) -> None:
        try:
            while self._stats_pending:
                pending, self._stats_pending = self._stats_pending, Counter()
                bucket = int(time.time() // 10)
                by_show: dict[str, list[tuple[str, int]]] = {}
                for (show_id, field_), n in pending.items():
                    by_show.setdefault(show_id, []).append((field_, n))
                await asyncio.gather(*(self._write_stats(show_id, bucket, items)
                                       for show_id, items in by_show.items()))
        finally:
            self._stats_flushing = False

    async def _write_stats(self, show_id: str, bucket: int, items: list[tuple[str, int]]) -> None:
        # One pipeline per show: its keys share the show's hash slot.
        pipe = self.redis.pipeline(transaction=False)
        for field_, n in items:
            pipe.hincrby(self.keys.show(show_id, f"stats:{bucket}"), field_, n)
            pipe.hincrby(self.keys.show(show_id, "stats"), field_, n)
        pipe.expire(self.keys.show(show_id, f"stats:{bucket}"), 120)
        with contextlib.suppress(Exception):
            await pipe.execute()

    async def _stats(self) -> None:
        for ch in list(self.channels.values()):
            if not any(c.role in ("host", "admin") for c in ch.conns):
                continue
            bucket = int(time.time() // 10)
            pipe = self.redis.pipeline(transaction=False)
            for b in range(bucket - 5, bucket + 1):
                pipe.hmget(self.keys.show(ch.show_id, f"stats:{b}"), ["chat", "reactions"])
            pipe.hget(self.keys.show(ch.show_id, "stats"), "claims")
            pipe.get(self.keys.show(ch.show_id, "peak"))
            res = await pipe.execute()
            chat = sum(int(r[0] or 0) for r in res[:6])
            reactions = sum(int(r[1] or 0) for r in res[:6])
            # One reading: _presence may update viewers_total during the awaits below.
            viewers = ch.viewers_total
            peak = max(int(res[7] or 0), ch.peak, viewers)
            if peak > int(res[7] or 0):
                await self.redis.set(self.keys.show(ch.show_id, "peak"), peak)
            extra = await self.stats_source(ch.show_id) if self.stats_source else {}
            frame = orjson.dumps({"type": "stats", "viewers": viewers, "peak_viewers": peak,
                                  "chat_per_min": chat, "reactions_per_min": reactions,
                                  "claims": int(res[6] or 0), **extra,
                                  "server_time": (now := now_ms()), "ts": now}).decode()
            self._broadcast(ch, frame, hosts_only=True, droppable=True)

    def invalidate_faq(self, show_id: str) -> None:
        self.faq_cache.pop(show_id, None)
