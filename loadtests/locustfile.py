"""Locust users that speak LiveCore's real protocol (PROTOCOL.md §4–6).

Run through `python -m loadtests` (which builds the plan, the show and the
report). By hand, e.g. as a distributed worker:

    LIVECORE_SECRET=... locust -f loadtests/locustfile.py --worker --master-host 10.0.0.5

Locust monkeypatches the process with gevent; websocket-client is pure
sockets, so every user's reader greenlet yields while it waits. Each user
holds one socket and one reader greenlet; replies are matched to requests by
`id`, batches are unpacked, `seq` gaps are counted.

What goes to locust's request events (and so to its CSV/HTML):
- `WS  handshake <endpoint>`: TCP + upgrade + hello -> welcome;
- `EVENT <type>`: delivery latency of every received event
  (receive time + clock offset - the event's `ts`/`server_time`);
- `CLAIM <via> <outcome>`: claim round trip by outcome (ok, sold_out,
  limit_reached, deal_not_live … are successes; transport/5xx are failures);
- `WS <command> <outcome>`: acks of chat, moderation and host commands;
- `RATE frames/s` and `RATE events/s`: once a second per load process, the
  frames/events that process received in that second, as the response *size*
  (locust's "Average size" column is frames per second per process);
- plain HTTP calls (confirm, release, launch) as `POST …`/`DELETE …`.
Per-second records (recorder.py) go to the master, which writes them to the
run's report folder for the summary, charts and the correctness check.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, ClassVar

import gevent
import orjson
import psutil
import websocket
from gevent.event import AsyncResult
from gevent.queue import Empty, Queue
from locust import User, events, task
from locust.contrib.fasthttp import FastHttpSession
from locust.runners import STATE_CLEANUP, STATE_STOPPED, STATE_STOPPING, MasterRunner, WorkerRunner

from loadtests.recorder import Recorder, now_ms
from loadtests.safety import ws_base

EXPECTED_CLAIM = {"ok", "sold_out", "limit_reached", "deal_not_live", "rate_limited", "interrupted"}
EXPECTED_CHAT = {"ok", "rate_limited", "muted", "slow_mode", "banned"}
PHRASES = ["love this!", "does it come in blue?", "how much is shipping?", "🔥🔥🔥", "just bought one",
           "what size should I get?", "hi from Lisbon", "is there a discount code?", "wow",
           "can you show the back?", "how much is it?", "take my money", "restock please"]
EMOJI = ["❤️", "🔥", "👏", "😂", "😮", "🛒", "👍", "🎉"]


class Proc:
    """Per-process state (after any fork): recorder, plan cache, token source."""

    recorder: Recorder = Recorder("unset")
    tag = "p"
    same_clock = False  # targets on this host: the offset is exactly 0, estimates are only reported
    pings = 0
    plan_raw = ""
    plan: ClassVar[dict[str, Any]] = {}
    seq = itertools.count(1)
    env: Any = None
    tokens: Any = None


def plan_of(environment: Any) -> dict[str, Any]:
    raw = getattr(environment.parsed_options, "lc_plan", "") or ""
    if raw != Proc.plan_raw:
        Proc.plan_raw = raw
        Proc.plan = json.loads(raw) if raw else {}
    return Proc.plan


# ---- tokens ------------------------------------------------------------------------

class Tokens:
    """Mint offline from LIVECORE_SECRET, else through POST /api/v1/tokens with an admin token."""

    def __init__(self, environment: Any, target: str) -> None:
        secret = os.environ.get("LIVECORE_SECRET")
        self.service = None
        if secret:
            from livecore.auth import TokenService

            self.service = TokenService(secret)
        self.admin = os.environ.get("LOADTEST_ADMIN_TOKEN")
        if self.service is None and not self.admin:
            raise RuntimeError("set LIVECORE_SECRET or LOADTEST_ADMIN_TOKEN in the load process")
        self.http = FastHttpSession(target, request_event=environment.events.request, user=None)

    def mint(self, role: str, show: str, sub: str, name: str, ttl_s: int) -> str:
        if self.service is not None:
            token, _ = self.service.mint(sub=sub, name=name, role=role, show=show, ttl_s=ttl_s)
            return token
        resp = self.http.post("/api/v1/tokens", name="POST /api/v1/tokens", json={
            "sub": sub, "name": name, "role": role, "show": show, "ttl_s": ttl_s},
            headers={"Authorization": f"Bearer {self.admin}"})
        if resp.status_code != 201:
            raise RuntimeError(f"token minting failed: {resp.status_code} {resp.text}")
        return str(resp.json()["token"])


# ---- one protocol session -----------------------------------------------------------

class Refused(Exception):
    pass


class Session:
    """One socket: handshake, a reader greenlet, request/ack matching."""

    def __init__(self, user: LiveUser) -> None:
        self.user = user
        self.rec = Proc.recorder
        self.ws: websocket.WebSocket | None = None
        self.pending: dict[str, tuple[float, str, AsyncResult | None]] = {}
        self.ids = itertools.count(1)
        self.node = ""
        self.offset = 0.0
        self.closed = False
        self.reader: gevent.Greenlet | None = None
        self.welcome: dict[str, Any] = {}
        self.ping_sent: dict[str, float] = {}

    def open(self, token: str | None, resume_from: int | None) -> dict[str, Any]:
        user = self.user
        url = f"{ws_base(user.target)}/ws/{user.endpoint}/{user.show}"
        name = f"handshake {user.endpoint}"
        start = time.perf_counter()
        ws = websocket.WebSocket(skip_utf8_validation=True, enable_multithread=True)
        try:
            ws.connect(url, timeout=15, suppress_origin=True)
            sent = now_ms()
            ws.send(orjson.dumps({"type": "hello", "token": token, "resume_from": resume_from,
                                  "batch": True}).decode())
            opcode, data = ws.recv_data()
            received = now_ms()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                raise Refused(f"closed {code} {data[2:].decode(errors='replace')}")
            welcome = orjson.loads(data)
            if welcome.get("type") != "welcome":
                raise Refused(f"expected welcome, got {welcome.get('type')!r}")
        except Exception as exc:
            with contextlib.suppress(Exception):
                ws.close(timeout=0.1)
            ms = (time.perf_counter() - start) * 1000
            self.rec.handshake_fail[type(exc).__name__] += 1
            user.environment.events.request.fire(request_type="WS", name=name, response_time=ms,
                                                 response_length=0, exception=exc, context={})
            raise
        ms = (time.perf_counter() - start) * 1000
        self.rec.handshake(ms)
        user.environment.events.request.fire(request_type="WS", name=name, response_time=ms,
                                             response_length=len(data), exception=None, context={})
        self.node = str(welcome.get("node") or user.target)
        self.rec.clocks.observe(self.node, sent, received, welcome.get("server_time") or received)
        self.offset = self.clock_offset()
        self.welcome = welcome
        # Before the reader runs: a fresh join (or a resume the history could not serve)
        # starts counting from the welcome's seq; a recovered resume continues from ours.
        if user.last_seq is None or not welcome.get("recovered"):
            user.last_seq = int(welcome.get("seq") or 0)
        ws.settimeout(None)
        self.ws = ws
        self.rec.conns[user.endpoint] += 1
        self.reader = gevent.spawn(self._read_loop)
        if Proc.pings < 32 or random.random() < 0.02:
            Proc.pings += 1  # one more clock sample (pong.server_time), cheaper than a welcome
            rid = f"clock{next(self.ids)}"
            self.pending[rid] = (time.perf_counter(), "ping", None)
            self.ping_sent[rid] = now_ms()
            with contextlib.suppress(Exception):
                self.send({"type": "ping", "id": rid})
        return welcome

    def clock_offset(self) -> float:
        return 0.0 if Proc.same_clock else self.rec.clocks.offset(self.node)

    # -- reading

    def _read_loop(self) -> None:
        ws = self.ws
        assert ws is not None
        rec = self.rec
        fire = self.user.environment.events.request.fire
        n = 0
        while True:
            try:
                opcode, data = ws.recv_data()
            except Exception as exc:
                self._closed(None, exc)
                return
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                self._closed(int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005, None)
                return
            received = now_ms()
            rec.frame(len(data))
            n += 1
            if n % 64 == 0:  # pick up a better clock estimate made by a later handshake
                self.offset = self.clock_offset()
            try:
                frame = orjson.loads(data)
            except orjson.JSONDecodeError:
                rec.outcome("bad_frame")
                continue
            if frame.get("type") == "batch":
                for event in frame.get("events") or ():
                    self._event(event, received, fire)
            else:
                self._event(frame, received, fire)

    def _event(self, event: dict[str, Any], received: float, fire: Any) -> None:
        type_ = event.get("type")
        if type_ in ("ack", "error", "pong"):
            self._reply(event, received)
            return
        ts = event.get("ts", event.get("server_time"))
        latency = received + self.offset - ts if isinstance(ts, int | float) else None
        self.rec.event(str(type_), latency)
        if latency is not None:
            fire(request_type="EVENT", name=str(type_), response_time=max(0.0, latency),
                 response_length=0, exception=None, context={})
        seq = event.get("seq")
        if isinstance(seq, int):
            last = self.user.last_seq
            if last is not None:
                if seq > last + 1:
                    self.rec.outcome("seq_gap", seq - last - 1)
                elif seq <= last:
                    self.rec.outcome("seq_dup")
            if last is None or seq > last:
                self.user.last_seq = seq
        try:
            self.user.on_event(str(type_), event)
        except Exception as exc:  # a bug in a user must not kill the reader
            self.rec.outcome(f"handler_error {type(exc).__name__}")

    def _reply(self, frame: dict[str, Any], received: float) -> None:
        rid = frame.get("re")
        entry = self.pending.pop(str(rid), None) if rid is not None else None
        if entry is None:
            self.rec.outcome(f"unmatched {frame.get('type')} {frame.get('code', '')}".strip())
            return
        start, name, result = entry
        if result is not None:
            result.set(frame)
            return
        sent = self.ping_sent.pop(str(rid), None)
        if sent is not None and isinstance(frame.get("server_time"), int):
            self.rec.clocks.observe(self.node, sent, received, frame["server_time"])
        ms = (time.perf_counter() - start) * 1000
        outcome = "ok" if frame.get("type") in ("ack", "pong") else str(frame.get("code"))
        self.rec.ack(f"{name} {outcome}", ms)
        exc = None if outcome in EXPECTED_CHAT else RuntimeError(f"{name}: {outcome}")
        self.user.environment.events.request.fire(
            request_type="WS", name=f"{name} {outcome}", response_time=ms, response_length=0,
            exception=exc, context={})
        self.user.on_reply(name, frame)

    def _closed(self, code: int | None, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.rec.conns[self.user.endpoint] -= 1
        for _, _, result in self.pending.values():
            if result is not None and not result.ready():
                result.set_exception(ConnectionError("socket closed"))
        self.pending.clear()
        if self.user.session is self:
            self.user.session = None
        if not self.user.stopping:
            label = str(code) if code is not None else type(exc).__name__
            self.rec.closes[label] += 1
            self.user.environment.events.request.fire(
                request_type="WS", name="closed unexpectedly", response_time=0, response_length=0,
                exception=ConnectionError(f"closed {label}"), context={})

    # -- writing

    def send(self, frame: dict[str, Any]) -> None:
        if self.ws is None or self.closed:
            raise ConnectionError("socket closed")
        self.ws.send(orjson.dumps(frame).decode())

    def call(self, type_: str, name: str, timeout: float = 15, **fields: Any) -> dict[str, Any]:
        """Send a command and wait for its ack/error; reports `WS <name> <outcome>`."""
        rid = str(next(self.ids))
        result: AsyncResult = AsyncResult()
        start = time.perf_counter()
        self.pending[rid] = (start, name, result)
        exc: Exception | None = None
        reply: dict[str, Any] = {}
        try:
            self.send({"type": type_, "id": rid, **fields})
            reply = result.get(timeout=timeout)
            outcome = "ok" if reply.get("type") in ("ack", "pong") else str(reply.get("code"))
        except gevent.Timeout:
            self.pending.pop(rid, None)
            outcome, exc = "timeout", TimeoutError(f"{name}: no reply in {timeout}s")
        except Exception as e:
            self.pending.pop(rid, None)
            outcome, exc = "disconnected", e
        ms = (time.perf_counter() - start) * 1000
        self.rec.ack(f"{name} {outcome}", ms)
        if exc is None and outcome not in self.user.expected_outcomes.get(name, {"ok"}):
            exc = RuntimeError(f"{name}: {outcome} {reply.get('message', '')}")
        self.user.environment.events.request.fire(
            request_type="WS", name=f"{name} {outcome}", response_time=ms, response_length=0,
            exception=exc, context={})
        reply.setdefault("_outcome", outcome)
        reply["_ms"] = ms
        return reply

    def cast(self, type_: str, name: str, **fields: Any) -> None:
        """Send a command whose ack is recorded when it arrives (does not block the user)."""
        rid = str(next(self.ids))
        self.pending[rid] = (time.perf_counter(), name, None)
        self.send({"type": type_, "id": rid, **fields})

    def close(self) -> None:
        # Stop the reader first (it holds the socket's read lock), then close politely.
        if self.reader is not None:
            self.reader.kill(block=False)
        ws = self.ws
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.close(timeout=0.2)
        self._closed(1000, None)


# ---- users ---------------------------------------------------------------------------

class LiveUser(User):
    abstract = True
    endpoint = "viewer"
    role = "viewer"
    expected_outcomes: ClassVar[dict[str, set[str]]] = {}

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.plan = plan_of(environment)
        self.targets: list[str] = self.plan.get("targets") or [environment.host]
        self.n = next(Proc.seq)
        self.target = self.targets[(self.n + hash(Proc.tag)) % len(self.targets)]
        self.show = self.plan["show_id"]
        self.sub = f"{self.plan.get('run_id', 'lt')}-{self.endpoint}-{Proc.tag}-{self.n}"
        self.display = f"{self.endpoint.title()} {Proc.tag}-{self.n}"
        self.token: str | None = None
        self.session: Session | None = None
        self.last_seq: int | None = None
        self.stopping = False
        self.backoff = 0.5
        self.http = FastHttpSession(self.target, request_event=environment.events.request, user=self,
                                    connection_timeout=10.0, network_timeout=30.0)

    def wants_token(self) -> bool:
        return True

    def on_start(self) -> None:
        if self.wants_token():
            self.token = Proc.tokens.mint(self.role, self.show, self.sub, self.display,
                                          int(self.plan.get("token_ttl_s", 3600)))
        self.ensure_connected()

    def on_stop(self) -> None:
        self.stopping = True
        if self.session is not None:
            self.session.close()
            self.session = None

    def ensure_connected(self) -> Session | None:
        """Connect (or reconnect with resume_from, backing off) when there is no live session."""
        if self.session is not None:
            return self.session
        session = Session(self)
        reconnect = self.last_seq is not None
        try:
            welcome = session.open(self.token, self.last_seq)
        except Exception:
            gevent.sleep(self.backoff * random.uniform(0.5, 1.5))
            self.backoff = min(10.0, self.backoff * 2)
            return None
        if reconnect:
            Proc.recorder.reconnects += 1
        self.backoff = 0.5
        self.session = session
        self.on_welcome(welcome)
        return session

    def on_welcome(self, welcome: dict[str, Any]) -> None:
        pass

    def on_event(self, type_: str, event: dict[str, Any]) -> None:
        pass

    def on_reply(self, name: str, frame: dict[str, Any]) -> None:
        pass

    def shutting_down(self) -> bool:
        runner = self.environment.runner
        return self.stopping or runner is None or runner.state in (STATE_STOPPING, STATE_STOPPED, STATE_CLEANUP)

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


class Audience(LiveUser):
    """What viewers and buyers share: a viewer token (or none), chat and reactions."""

    abstract = True
    section = "viewer"

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        cfg = self.plan.get(self.section, {})
        self.chat_rate = float(cfg.get("chat_per_min", 0.0)) / 60
        self.react_rate = float(cfg.get("react_per_min", 0.0)) / 60
        self.anonymous = random.random() < float(cfg.get("anonymous_ratio", 0.0))
        if self.anonymous:
            self.chat_rate = 0.0
        self.muted_until = 0.0

    def wants_token(self) -> bool:
        return not self.anonymous

    def wait_time(self) -> float:
        rate = self.chat_rate + self.react_rate
        return random.expovariate(rate) if rate > 0 else 5.0

    def chat_or_react(self) -> None:
        session = self.session
        rate = self.chat_rate + self.react_rate
        if session is None or rate <= 0:
            return
        try:
            if random.random() < self.chat_rate / rate and time.time() >= self.muted_until:
                text = f"{random.choice(PHRASES)} #{random.randint(1, 9999)}"
                session.cast("chat.send", "chat.send", text=text)
            else:
                session.send({"type": "react", "emoji": random.choice(EMOJI)})
        except Exception:
            Proc.recorder.outcome("send_failed")

    def on_event(self, type_: str, event: dict[str, Any]) -> None:
        if type_ == "mod.notice":
            Proc.recorder.outcome(f"mod.notice {event.get('action')}")
            until = event.get("until")
            if isinstance(until, int):
                self.muted_until = until / 1000

    def on_reply(self, name: str, frame: dict[str, Any]) -> None:
        if frame.get("code") == "muted" and isinstance(frame.get("until"), int):
            self.muted_until = frame["until"] / 1000


class Viewer(Audience):
    """Joins, says hello, receives everything; now and then chats or reacts."""

    @task
    def act(self) -> None:
        if self.ensure_connected() is not None:
            self.chat_or_react()


class Buyer(Audience):
    """Waits for deal.started, claims at once, confirms most holds, abandons some."""

    section = "buyer"

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.anonymous = False
        self.cfg = self.plan.get("buyer", {})
        self.wake: Queue = Queue()
        self.live: dict[str, dict[str, Any]] = {}
        self.state: dict[str, dict[str, Any]] = {}

    def wait_time(self) -> float:
        return 0.0

    # -- the socket tells us about deals

    def on_welcome(self, welcome: dict[str, Any]) -> None:
        deal = welcome.get("deal")
        if isinstance(deal, dict) and deal.get("id"):
            self._started(deal)

    def on_event(self, type_: str, event: dict[str, Any]) -> None:
        if type_ == "deal.started":
            self._started(event["deal"])
        elif type_ == "deal.tick":
            deal = self.live.get(event.get("deal_id", ""))
            if deal is not None:
                deal["remaining"] = event.get("remaining", 0)
                st = self.state.get(deal["id"])
                if st is not None and st.get("waiting") and deal["remaining"] > 0:
                    st["waiting"] = False
                    self.wake.put(deal["id"])
        elif type_ == "deal.ended":
            self.live.pop(event.get("deal_id", ""), None)
            self.wake.put("")
        else:
            super().on_event(type_, event)

    def _started(self, deal: dict[str, Any]) -> None:
        if deal["id"] in self.state:
            return
        self.live[deal["id"]] = dict(deal)
        self.state[deal["id"]] = {"attempts": 0, "units": 0, "done": False, "waiting": False}
        self.wake.put(deal["id"])

    # -- the shopping loop

    @task
    def shop(self) -> None:
        if self.ensure_connected() is None:
            return
        try:
            deal_id = self.wake.get(timeout=1.0)
        except Empty:
            self._maybe_chat()
            return
        if deal_id:
            self.pursue(deal_id)

    def _maybe_chat(self) -> None:
        rate = self.chat_rate + self.react_rate
        if rate > 0 and random.random() < rate:  # about `rate` actions per second of idling
            self.chat_or_react()

    def pursue(self, deal_id: str) -> None:
        deal = self.live.get(deal_id)
        st = self.state.get(deal_id)
        if deal is None or st is None or st["done"]:
            return
        limit = int(deal.get("per_user_limit", 1))
        if st["attempts"] >= int(self.cfg.get("max_claims", 12)):
            st["done"] = True
            return
        st["attempts"] += 1
        key = uuid.uuid4().hex
        outcome, res = self.claim(deal_id, key)
        if outcome == "ok":
            self.ledger_claim(deal_id, res)
            if random.random() < float(self.cfg.get("retry_same_key_ratio", 0)):
                again, res2 = self.claim(deal_id, key, label="retry")
                if again != "ok" or res2.get("id") != res.get("id"):
                    self.violation("idempotency", f"same key gave {again} {res2.get('id')} "
                                                  f"after {res.get('id')}")
            kept = self.after_hold(res)
            st["units"] += kept
            greedy = random.random() < float(self.cfg.get("greedy_ratio", 0))
            if kept and (greedy or st["units"] < limit) and deal_id in self.live:
                self.wake.put(deal_id)  # try for one more: limit_reached unless the limit allows
            else:
                st["done"] = True
        elif outcome == "sold_out":
            # Nothing left right now; a deal.tick with remaining > 0 (a hold expired or was
            # released) wakes us for another try.
            if deal_id in self.live:
                self.live[deal_id]["remaining"] = 0
            st["waiting"] = True
        elif outcome in ("rate_limited", "unavailable", "error", "timeout"):
            gevent.sleep(random.uniform(0.5, 1.5))
            self.wake.put(deal_id)
        else:  # limit_reached, deal_not_live, not_found, forbidden …
            st["done"] = True

    def claim(self, deal_id: str, key: str, label: str = "") -> tuple[str, dict[str, Any]]:
        via = self.cfg.get("claim_via", "http")
        if via == "mixed":
            via = "ws" if self.n % 2 else "http"
        return self.claim_ws(deal_id, key, label) if via == "ws" else self.claim_http(deal_id, key, label)

    def claim_http(self, deal_id: str, key: str, label: str) -> tuple[str, dict[str, Any]]:
        path = f"/api/v1/shows/{self.show}/deals/{deal_id}/claims"
        headers = {**self.bearer(), "Idempotency-Key": key}
        body: dict[str, Any] = {}
        with self.http.post(path, json={"qty": 1}, headers=headers, name="claim",
                            catch_response=True) as resp:
            status = resp.status_code
            with contextlib.suppress(Exception):
                body = resp.json() or {}
            if status == 201:
                outcome = "ok"
            elif status in (400, 401, 403, 404, 409, 422, 429) and isinstance(body.get("error"), dict):
                outcome = str(body["error"].get("code"))
            elif status in (429, 503):
                outcome = "rate_limited" if status == 429 else "unavailable"
            elif status == 0 and self.shutting_down():
                outcome = "interrupted"
            elif status == 0:
                outcome = "timeout" if "timeout" in repr(resp.error).lower() else "error"
            else:
                outcome = "error"
            ms = float(resp.request_meta["response_time"])
            resp.request_meta["request_type"] = "CLAIM"
            resp.request_meta["name"] = f"http {outcome}{' ' + label if label else ''}"
            if outcome in EXPECTED_CLAIM:
                resp.success()
            else:
                resp.failure(f"claim {status} {outcome}")
        Proc.recorder.claim(outcome, ms)
        return outcome, body if outcome == "ok" else {}

    def claim_ws(self, deal_id: str, key: str, label: str) -> tuple[str, dict[str, Any]]:
        session = self.session
        if session is None:
            return "error", {}
        rid = str(next(session.ids))
        result: AsyncResult = AsyncResult()
        start = time.perf_counter()
        session.pending[rid] = (start, "deal.claim", result)
        exc: Exception | None = None
        reply: dict[str, Any] = {}
        try:
            session.send({"type": "deal.claim", "id": rid, "deal_id": deal_id, "qty": 1,
                          "idempotency_key": key})
            reply = result.get(timeout=15)
            outcome = "ok" if reply.get("type") == "ack" else str(reply.get("code"))
        except gevent.Timeout:
            session.pending.pop(rid, None)
            outcome = "timeout"
        except Exception as e:
            session.pending.pop(rid, None)
            outcome, exc = "error", e
        ms = (time.perf_counter() - start) * 1000
        if exc is None and outcome not in EXPECTED_CLAIM:
            exc = RuntimeError(f"claim {outcome}")
        self.environment.events.request.fire(
            request_type="CLAIM", name=f"ws {outcome}{' ' + label if label else ''}", response_time=ms,
            response_length=0, exception=exc, context={})
        Proc.recorder.claim(outcome, ms)
        return outcome, (reply.get("reservation") or {}) if outcome == "ok" else {}

    def ledger_claim(self, deal_id: str, res: dict[str, Any]) -> None:
        Proc.recorder.note(k="claim", deal=deal_id, user=self.sub, rid=res.get("id"),
                           qty=int(res.get("qty", 1)), exp=res.get("expires_at"))

    def after_hold(self, res: dict[str, Any]) -> int:
        """Confirm, release or walk away. Returns the units kept (0 or qty)."""
        rid = res.get("id")
        if not rid:
            return 0
        pay_lo, pay_hi = self.cfg.get("pay_s", [0.2, 1.5])
        r = random.random()
        confirm = float(self.cfg.get("confirm_ratio", 0.8))
        release = float(self.cfg.get("release_ratio", 0.1))
        gevent.sleep(random.uniform(pay_lo, pay_hi))
        if r < confirm:
            order = self.confirm(rid)
            if order is None:
                return 0
            if random.random() < float(self.cfg.get("double_confirm_ratio", 0)):
                again = self.confirm(rid, label="again")
                if again is None or again.get("id") != order.get("id"):
                    self.violation("confirm_twice", f"{rid}: {order.get('id')} then "
                                                    f"{(again or {}).get('id')}")
            return int(order.get("qty", 1))
        if r < confirm + release:
            session = self.session
            offset = session.offset if session else 0.0
            uncertainty = 0.0 if Proc.same_clock else Proc.recorder.clocks.uncertainty(
                session.node if session else None)
            # When the DELETE left, on the server's clock, minus what we may be off by.
            sent = now_ms() + offset - uncertainty - 5
            resp = self.http.delete(f"/api/v1/reservations/{rid}", headers=self.bearer(),
                                    name="DELETE /api/v1/reservations/{id}")
            if resp.status_code == 204:
                Proc.recorder.note(k="release", rid=rid, t=round(sent, 1))
                Proc.recorder.outcome("released")
            return 0
        Proc.recorder.outcome("walked_away")
        return 0

    def confirm(self, rid: str, label: str = "") -> dict[str, Any] | None:
        name = "confirm" + (f" {label}" if label else "")
        with self.http.post(f"/api/v1/reservations/{rid}/confirm", headers=self.bearer(),
                            json={"payment_ref": f"pay-{uuid.uuid4().hex[:12]}"},
                            name=name, catch_response=True) as resp:
            body: dict[str, Any] = {}
            with contextlib.suppress(Exception):
                body = resp.json() or {}
            if resp.status_code == 201:
                resp.request_meta["name"] = f"{name} ok"
                resp.success()
            elif resp.status_code == 0 and self.shutting_down():
                resp.success()  # cut off by the end of the run, not the server's doing
                resp.request_meta["name"] = f"{name} interrupted"
                return None
            else:
                code = (body.get("error") or {}).get("code", resp.status_code)
                resp.request_meta["name"] = f"{name} {code}"
                if code == "reservation_expired":
                    resp.success()  # a slow payer; the engine is right to refuse
                else:
                    resp.failure(f"confirm {resp.status_code} {code}")
                Proc.recorder.outcome(f"confirm {code}")
                return None
        Proc.recorder.note(k="order", id=body.get("id"), rid=rid, user=self.sub,
                           deal=body.get("deal_id"), qty=int(body.get("qty", 1)))
        Proc.recorder.outcome("confirmed" if not label else "confirmed_again")
        return body

    def violation(self, what: str, detail: str) -> None:
        Proc.recorder.note(k="violation", what=what, detail=detail)
        self.environment.events.request.fire(
            request_type="CHECK", name=what, response_time=0, response_length=0,
            exception=AssertionError(detail), context={})


class Host(LiveUser):
    """Starts the show, pins products, announces, launches deals on a schedule."""

    endpoint = "host"
    role = "host"
    fixed_count = 1
    expected_outcomes: ClassVar[dict[str, set[str]]] = {"show.start": {"ok"}, "product.pin": {"ok"}, "announce": {"ok"}}

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.cfg = self.plan.get("host", {})
        self.deal_cfg = self.plan.get("deal")
        self.live_deal: str | None = None
        self.deals_launched = 0
        self.started_at = time.time()

    def wait_time(self) -> float:
        return 0.2

    def on_start(self) -> None:
        super().on_start()
        self.started_at = time.time()
        now = time.monotonic()
        self.next_pin = now + 0.5 if float(self.cfg.get("pin_every_s") or 0) > 0 else float("inf")
        self.next_announce = now + 1.0 if float(self.cfg.get("announce_every_s") or 0) > 0 else float("inf")
        every = float(self.cfg.get("deal_every_s") or 0)
        first = float(self.cfg.get("first_deal_after_s") or 0) + float(self.plan.get("ramp_s", 0))
        self.next_deal = now + first if (self.deal_cfg and every > 0) else float("inf")
        self.pin_cycle = itertools.cycle(self.plan.get("products") or [])
        if self.session is not None:
            self.session.call("show.start", "show.start")

    def on_welcome(self, welcome: dict[str, Any]) -> None:
        deal = welcome.get("deal")
        self.live_deal = deal.get("id") if isinstance(deal, dict) else None

    def on_event(self, type_: str, event: dict[str, Any]) -> None:
        if type_ == "deal.started":
            self.live_deal = event["deal"]["id"]
        elif type_ == "deal.ended" and event.get("deal_id") == self.live_deal:
            self.live_deal = None
            Proc.recorder.outcome(f"deal.ended {event.get('reason')}")

    @task
    def run_show(self) -> None:
        session = self.ensure_connected()
        if session is None:
            return
        now = time.monotonic()
        if now >= self.next_pin:
            self.next_pin = now + float(self.cfg["pin_every_s"])
            product = next(self.pin_cycle, None)
            if product:
                session.call("product.pin", "product.pin", product_id=product)
        if now >= self.next_announce:
            self.next_announce = now + float(self.cfg["announce_every_s"])
            session.call("announce", "announce", text=f"Live now! {time.strftime('%H:%M:%S')}")
        if self.deal_cfg and self.cfg.get("launch_when_ready") and self.deals_launched == 0:
            if self.ready():
                session.call("product.pin", "product.pin", product_id=self.plan["deal_product"])
                self.launch()
        elif now >= self.next_deal:
            self.next_deal = now + float(self.cfg["deal_every_s"])
            if self.live_deal is None:
                self.launch()

    def ready(self) -> bool:
        """Everyone is in (presence count) or the wait is over."""
        target = int(self.cfg.get("ready_viewers", 0))
        if time.time() - self.started_at > float(self.cfg.get("ready_timeout_s", 60)):
            Proc.recorder.outcome("launched_before_all_joined")
            return True
        resp = self.http.get(f"/api/v1/shows/{self.show}", name="GET /api/v1/shows/{id}")
        try:
            viewers = int(resp.json().get("viewers", 0))
        except Exception:
            return False
        if viewers < target:
            gevent.sleep(0.3)
            return False
        return True

    def launch(self) -> None:
        deal = self.deal_cfg
        assert deal is not None
        body = {"product_id": self.plan["deal_product"], "price_cents": deal["price_cents"],
                "quantity": deal["quantity"], "duration_s": deal["duration_s"],
                "per_user_limit": deal["per_user_limit"], "hold_ttl_s": deal["hold_ttl_s"]}
        with self.http.post(f"/api/v1/shows/{self.show}/deals", json=body, headers=self.bearer(),
                            name="POST /api/v1/shows/{id}/deals", catch_response=True) as resp:
            if resp.status_code == 201:
                created = resp.json()
                self.deals_launched += 1
                self.live_deal = created["id"]
                Proc.recorder.note(k="deal", id=created["id"], quantity=created["quantity"],
                                   per_user_limit=created["per_user_limit"],
                                   hold_ttl_s=created.get("hold_ttl_s", deal["hold_ttl_s"]),
                                   starts_at=created.get("starts_at"), ends_at=created.get("ends_at"))
                resp.success()
            elif resp.status_code == 409:
                resp.success()  # a deal is still live (or stock ran out): try next slot
                Proc.recorder.outcome("launch_conflict")
            else:
                resp.failure(f"launch {resp.status_code} {resp.text[:200]}")


class Moderator(LiveUser):
    """Deletes recent messages and times chatters out."""

    endpoint = "moderator"
    role = "moderator"
    fixed_count = 1
    expected_outcomes: ClassVar[dict[str, set[str]]] = {"chat.delete": {"ok", "not_found"}, "user.timeout": {"ok"}}

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.cfg = self.plan.get("moderator", {})
        self.recent: deque[tuple[str, str]] = deque(maxlen=200)

    def wait_time(self) -> float:
        return 0.25

    def on_start(self) -> None:
        super().on_start()
        now = time.monotonic()
        self.next_delete = now + random.uniform(0, float(self.cfg.get("delete_every_s") or 5))
        self.next_timeout = now + random.uniform(0, float(self.cfg.get("timeout_every_s") or 15))

    def on_event(self, type_: str, event: dict[str, Any]) -> None:
        if type_ == "chat.message":
            msg = event.get("message") or {}
            user = (msg.get("user") or {}).get("id") or ""
            if msg.get("id") and user and user != "bot" and (msg.get("user") or {}).get("role") == "viewer":
                self.recent.append((msg["id"], user))

    @task
    def moderate(self) -> None:
        session = self.ensure_connected()
        if session is None or not self.recent:
            return
        now = time.monotonic()
        if self.cfg.get("delete_every_s") and now >= self.next_delete:
            self.next_delete = now + float(self.cfg["delete_every_s"])
            message_id, _ = self.recent.pop()
            session.call("chat.delete", "chat.delete", message_id=message_id)
        if self.cfg.get("timeout_every_s") and now >= self.next_timeout:
            self.next_timeout = now + float(self.cfg["timeout_every_s"])
            _, user = random.choice(list(self.recent))
            session.call("user.timeout", "user.timeout", user_id=user,
                         seconds=int(self.cfg.get("timeout_s", 5)))


# ---- process wiring: plan, per-second records, stop file -------------------------------

USER_CLASSES = {"Viewer": Viewer, "Buyer": Buyer, "Host": Host, "Moderator": Moderator}


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    parser.add_argument("--lc-plan", default="", help="LiveCore load plan (JSON), see loadtests.scenarios")
    parser.add_argument("--lc-report-dir", default="", help="where the master writes per-second records")


class Sink:
    """On the master (or the only process): write records and ledger entries to files."""

    def __init__(self, report_dir: Path) -> None:
        report_dir.mkdir(parents=True, exist_ok=True)
        self.ts = open(report_dir / "timeseries.jsonl", "ab", buffering=0)
        self.ledger = open(report_dir / "ledger.jsonl", "ab", buffering=0)

    def write(self, record: dict[str, Any]) -> None:
        ledger = record.pop("ledger", None) or []
        self.ts.write(orjson.dumps(record) + b"\n")
        if ledger:
            node = record.get("node")
            self.ledger.write(b"".join(orjson.dumps({**e, "node": node}) + b"\n" for e in ledger))

    def meta(self, what: str, **extra: Any) -> None:
        self.ts.write(orjson.dumps({"meta": what, "t": round(time.time(), 3), **extra}) + b"\n")


SINK: Sink | None = None


def _flush(environment: Any, cpu: float | None) -> None:
    runner = environment.runner
    record = Proc.recorder.flush(cpu=cpu)
    if runner is None or (runner.user_count == 0 and not record["frames"] and not record["ledger"]
                          and not record["handshake_fail"]):
        return
    # One sample per second per load process; the count rides in the size column (locust's
    # "Average size"), so it does not distort the response-time percentiles and charts.
    fire = environment.events.request.fire
    fire(request_type="RATE", name="frames/s", response_time=0, response_length=record["frames"],
         exception=None, context={})
    fire(request_type="RATE", name="events/s", response_time=0,
         response_length=sum(record["events"].values()), exception=None, context={})
    runner.send_message("lc_ts", record)


def _flush_loop(environment: Any) -> None:
    proc = psutil.Process()
    proc.cpu_percent(None)
    while True:
        gevent.sleep(1.0 - (time.time() % 1.0))
        try:
            _flush(environment, proc.cpu_percent(None))
        except Exception:
            Proc.recorder.outcome("flush_failed")


def _watch_stop_file(environment: Any, path: Path) -> None:
    while not path.exists():
        gevent.sleep(0.5)
    if SINK is not None:
        SINK.meta("stop_requested")
    environment.runner.quit()


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    global SINK
    runner = environment.runner
    Proc.tag = f"{os.getpid():x}"
    Proc.recorder = Recorder(f"{os.uname().nodename}-{os.getpid()}")
    Proc.seq = itertools.count(1)
    Proc.env = environment
    plan = plan_of(environment)
    Proc.same_clock = bool(plan.get("same_host_clock"))
    # Only the dispatching process (master or local) needs the counts; workers are told.
    for name, count in (plan.get("classes") or {}).items():
        if name in USER_CLASSES:
            USER_CLASSES[name].fixed_count = int(count)
    if not isinstance(runner, WorkerRunner):
        report_dir = getattr(environment.parsed_options, "lc_report_dir", "")
        if report_dir:
            SINK = Sink(Path(report_dir))

            def on_ts(environment: Any, msg: Any, **_: Any) -> None:
                assert SINK is not None
                SINK.write(msg.data)

            runner.register_message("lc_ts", on_ts)
            gevent.spawn(_watch_stop_file, environment, Path(report_dir) / "STOP")
    if not isinstance(runner, MasterRunner):
        gevent.spawn(_flush_loop, environment)


@events.test_start.add_listener
def _on_test_start(environment: Any, **_: Any) -> None:
    Proc.same_clock = bool(plan_of(environment).get("same_host_clock"))  # workers learn it here
    if not isinstance(environment.runner, MasterRunner) and Proc.tokens is None:
        plan = plan_of(environment)
        targets = plan.get("targets") or [environment.host]
        Proc.tokens = Tokens(environment, targets[0])
    if SINK is not None:
        SINK.meta("test_start", plan=plan_of(environment).get("scenario"))


@events.spawning_complete.add_listener
def _on_spawned(user_count: int, **_: Any) -> None:
    if SINK is not None:
        SINK.meta("spawned", users=user_count)


@events.test_stop.add_listener
def _on_test_stop(environment: Any, **_: Any) -> None:
    if not isinstance(environment.runner, MasterRunner):
        with contextlib.suppress(Exception):
            _flush(environment, None)
    if SINK is not None:
        SINK.meta("test_stop")
