"""The authorization matrix: every HTTP endpoint and every socket command ×
role × show × token state, against the tables below.

Principals are `role@show`: `@own` is the show under test, `@other` another
show, `@*` an admin token for every show. Token states: valid, expired, forged
(payload edited, signature kept), alg none, wrong secret; any state but valid
must be refused (401 / 4401) wherever a token is looked at.

Beyond the tables: nobody acts on another show (ids of the other show's deal,
messages and held messages are refused or stay in their own show), nobody
but the holder confirms or releases a reservation (not even an admin), and
viewers never see `chat.flagged` or `mod.action`.
"""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import orjson
import websockets

from tests.reliability.helpers import AUTH, assert_error_body, hello, make_show, ws_connect
from tests.support import WS, ServerProc, mint

ROLES_AT = ["viewer@own", "viewer@other", "host@own", "host@other", "moderator@own", "moderator@other",
            "admin@own", "admin@other", "admin@*"]
STATES = ["valid", "expired", "forged", "alg_none", "wrong_secret"]
PUBLIC = {"anon", *ROLES_AT}
ANY_HOST = {"host@own", "host@other", "admin@own", "admin@other", "admin@*"}
OWN_STAFF = {"host@own", "admin@own", "admin@*"}

# HTTP: endpoint -> principals (valid tokens) allowed. Everything else is
# refused: 401 without a usable token, 403 with a valid one.
HTTP_TABLE: dict[str, set[str]] = {
    "POST /api/v1/tokens": {"admin@own", "admin@*"},
    "POST /api/v1/products": ANY_HOST,
    "GET /api/v1/products": ANY_HOST | {"moderator@own", "moderator@other"},
    "GET /api/v1/products/{product}": PUBLIC,
    "POST /api/v1/shows": ANY_HOST,
    "GET /api/v1/shows/{show}": PUBLIC,
    "POST /api/v1/shows/{show}/guest": PUBLIC,
    "GET /api/v1/shows/{show}/orders": OWN_STAFF,
    "POST /api/v1/shows/{show}/deals": OWN_STAFF,
    "GET /api/v1/shows/{show}/deals/{deal}": PUBLIC,
    "POST /api/v1/shows/{show}/deals/{deal}/claims": OWN_STAFF | {"viewer@own", "moderator@own"},
    "GET /api/v1/shows/{show}/moderation": OWN_STAFF | {"moderator@own"},
    "POST /api/v1/shows/{show}/faq": OWN_STAFF,
    # only the holder (az-viewer), with a token for the reservation's show
    "POST /api/v1/reservations/{held}/confirm": {"viewer@own"},
    "DELETE /api/v1/reservations/{held2}": {"viewer@own"},
    "GET /api/v1/shows/{show}/analytics": OWN_STAFF,
    # webhooks receive every show's events: only a global admin manages them
    "POST /api/v1/webhooks": {"admin@*"},
    "GET /api/v1/webhooks": {"admin@*"},
    "GET /api/v1/webhooks/{webhook}": {"admin@*"},
    "GET /api/v1/webhooks/{webhook}/deliveries": {"admin@*"},
    "DELETE /api/v1/webhooks/{webhook2}": {"admin@*"},
    "POST /whip/{show}": OWN_STAFF,
    "POST /whep/{show}": {"anon", "viewer@own", "host@own", "moderator@own", "admin@own", "admin@*"},
    "POST /video/sfu-auth publish": OWN_STAFF,
    "POST /video/sfu-auth read": {"anon", "viewer@own", "host@own", "moderator@own", "admin@own", "admin@*"},
    "GET /healthz": PUBLIC, "GET /readyz": PUBLIC, "GET /": PUBLIC, "GET /host": PUBLIC,
    "GET /moderator": PUBLIC, "GET /host/report": PUBLIC,
}
# Endpoints that never look at a token: any token state is let through.
IGNORES_TOKENS = {k for k, v in HTTP_TABLE.items() if v == PUBLIC}

# Sockets: endpoint -> principals (valid tokens) welcomed; others get 4401/4403.
WS_TABLE: dict[str, set[str]] = {
    "viewer": {"anon", "viewer@own", "host@own", "moderator@own", "admin@own", "admin@*"},
    "host": OWN_STAFF,
    "moderator": {"moderator@own", "admin@own", "admin@*"},
}
# Commands -> endpoints that accept them (on any other endpoint: `forbidden`).
COMMAND_TABLE: dict[str, set[str]] = {
    "ping": {"viewer", "host", "moderator"}, "chat.send": {"viewer", "host", "moderator"},
    "react": {"viewer"}, "deal.claim": {"viewer"},
    "show.start": {"host"}, "product.pin": {"host"}, "product.unpin": {"host"}, "deal.launch": {"host"},
    "deal.cancel": {"host"}, "announce": {"host"}, "show.end": {"host"},
    "chat.delete": {"moderator"}, "chat.pin": {"moderator"}, "chat.unpin": {"moderator"},
    "user.timeout": {"moderator"}, "user.ban": {"moderator"}, "user.unban": {"moderator"},
    "chat.slow_mode": {"moderator"}, "chat.filter": {"moderator"}, "chat.approve": {"moderator"},
    "chat.reject": {"moderator"},
}
NEEDS_USER = {"chat.send", "deal.claim"}  # anonymous viewers: `unauthenticated`


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token_for(principal: str, state: str, own: str, other: str) -> str | None:
    if principal == "anon":
        return None
    role, _, where = principal.partition("@")
    show = {"own": own, "other": other, "*": "*"}[where]
    sub = {"viewer": "az-viewer", "host": "az-host", "moderator": "az-mod", "admin": "az-admin"}[role]
    payload = {"sub": sub, "name": sub, "role": role, "show": show, "exp": 9_999_999_999}
    if state == "valid":
        return mint(role, show, sub, sub)
    if state == "expired":
        return mint(role, show, sub, sub, ttl_s=-30)
    if state == "forged":
        # a real viewer token of the other show, payload rewritten to this principal
        head, _, sig = mint("viewer", other, sub).split(".")
        return f"{head}.{b64(orjson.dumps(payload))}.{sig}"
    if state == "alg_none":
        return jwt.encode(payload, None, algorithm="none")
    return jwt.encode(payload, "wrong-secret-wrong-secret-wrong-secret", algorithm="HS256")


@dataclass
class World:
    node: ServerProc
    own: str
    other: str
    product: str
    deal: str
    other_deal: str
    held: str
    held2: str
    webhook: str
    webhook2: str


async def build_world(node: ServerProc) -> World:
    async with httpx.AsyncClient(base_url=node.base_url, timeout=30) as c:
        own, product = await make_show(c, stock=100_000)
        other, _ = await make_show(c)
        deals = []
        for show in (own, other):
            r = await c.post(f"/api/v1/shows/{show}/deals", headers=AUTH, json={
                "product_id": product, "price_cents": 5, "quantity": 500, "duration_s": 600, "per_user_limit": 50})
            assert r.status_code == 201, r.text
            deals.append(r.json()["id"])
        holder = {"authorization": f"Bearer {mint('viewer', own, 'az-viewer')}"}
        held = []
        for _ in range(2):
            r = await c.post(f"/api/v1/shows/{own}/deals/{deals[0]}/claims", headers=holder, json={"qty": 1})
            assert r.status_code == 201, r.text
            held.append(r.json()["id"])
        hooks = []
        for _ in range(2):
            r = await c.post("/api/v1/webhooks", headers=AUTH, json={"url": "https://hooks.invalid/authz",
                                                                     "events": ["show.ended"]})
            assert r.status_code == 201, r.text
            hooks.append(r.json()["id"])
    return World(node, own, other, product, deals[0], deals[1], held[0], held[1], hooks[0], hooks[1])


def http_request(w: World, endpoint: str, token: str | None) -> dict[str, Any]:
    method, path = endpoint.split(" ")[0], "/" + endpoint.split(" /", 1)[1].split(" ")[0]
    path = path.format(show=w.own, product=w.product, deal=w.deal, held=w.held, held2=w.held2,
                       webhook=w.webhook, webhook2=w.webhook2)
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    body: Any = None
    if path == "/api/v1/tokens":
        body = {"sub": "u", "name": "U", "role": "viewer", "show": w.own, "ttl_s": 60}
    elif path == "/api/v1/products":
        body = {"sku": f"AZ-{uuid.uuid4().hex[:10]}", "name": "n", "price_cents": 1, "currency": "USD", "stock": 1}
    elif path == "/api/v1/shows":
        body = {"title": "authz"}
    elif path.endswith("/deals"):
        body = {"product_id": w.product, "price_cents": 1, "quantity": 1, "duration_s": 60}
    elif path.endswith("/claims"):
        body = {"qty": 1}
        headers["idempotency-key"] = f"az-{uuid.uuid4().hex}"
    elif path.endswith("/confirm"):
        body = {"payment_ref": "pay-1"}
    elif path == "/api/v1/webhooks" and method == "POST":
        body = {"url": "https://hooks.invalid/matrix", "events": ["deal.ended"]}
    elif path.endswith("/faq"):
        body = {"patterns": ["ship"], "answer": "Yes"}
    elif path.startswith(("/whip", "/whep")):
        headers["content-type"] = "application/sdp"
        return {"method": method, "url": path, "headers": headers, "content": b"v=0\r\n"}
    elif path == "/video/sfu-auth":
        headers.pop("authorization", None)
        body = {"action": endpoint.rsplit(" ", 1)[1], "path": f"live/{w.own}", "token": token}
    return {"method": method, "url": path, "headers": headers,
            "content": None if body is None else orjson.dumps(body)}


def expected_http(endpoint: str, principal: str, state: str) -> str:
    if endpoint in IGNORES_TOKENS:
        return "allow"
    if principal == "host@*":  # correctly signed, but only admin tokens may span shows
        return "401"
    if principal == "anon":
        return "allow" if "anon" in HTTP_TABLE[endpoint] else "401"
    if state != "valid":
        return "401"
    return "allow" if principal in HTTP_TABLE[endpoint] else "403"


def test_http_table_covers_every_route() -> None:
    """A route added to the app without a row here fails this test."""
    from gateway import http_analytics, http_api

    def shape(path: str) -> str:
        return re.sub(r"{\w+}", "{}", path)

    served = {f"{m} {shape(r.path)}" for r in [*http_api.routes, *http_analytics.routes]
              for m in r.methods - {"HEAD"}}
    served |= {"POST /whip/{}", "POST /whep/{}", "POST /video/sfu-auth"}
    table = {shape(" ".join(k.split(" ")[:2])) for k in HTTP_TABLE}
    assert served <= table, served - table


async def test_http_matrix(edge: ServerProc) -> None:
    w = await build_world(edge)
    cells: list[tuple[str, str, str]] = []
    for endpoint in HTTP_TABLE:
        cells.append((endpoint, "anon", "valid"))
        for principal in [*ROLES_AT, "host@*"]:
            for state in STATES:
                cells.append((endpoint, principal, state))
    sem = asyncio.Semaphore(16)
    mismatches: list[str] = []
    async with httpx.AsyncClient(base_url=w.node.base_url, timeout=30) as client:

        async def check(endpoint: str, principal: str, state: str) -> None:
            token = token_for(principal, state, w.own, w.other)
            want = expected_http(endpoint, principal, state)
            async with sem:
                resp = await client.request(**http_request(w, endpoint, token))
            got = "401" if resp.status_code == 401 else "403" if resp.status_code == 403 else "allow"
            if resp.status_code >= 500:
                got = f"5xx {resp.status_code}"
            if resp.status_code >= 400:
                assert_error_body(resp)
            if got != want:
                mismatches.append(f"{endpoint} as {principal} ({state}): want {want}, got "
                                  f"{resp.status_code} {resp.text[:120]}")

        await asyncio.gather(*[check(*cell) for cell in cells])
    assert mismatches == [], "\n".join(mismatches)
    assert len(cells) >= 900


async def test_reservations_belong_to_their_holder_and_show(edge: ServerProc) -> None:
    """Nobody but the holder confirms or releases, not even an admin; the
    holder's token for another show does not do either; the holder does."""
    w = await build_world(edge)
    async with httpx.AsyncClient(base_url=w.node.base_url, timeout=30) as c:
        others = [mint("viewer", w.own, "someone-else"), mint("host", w.own, "az-host"),
                  mint("moderator", w.own, "az-mod"), mint("admin", "*", "az-admin"),
                  mint("viewer", w.other, "az-viewer"), mint("admin", w.other, "az-viewer")]
        for tok in others:
            h = {"authorization": f"Bearer {tok}"}
            for resp in (await c.post(f"/api/v1/reservations/{w.held}/confirm", headers=h,
                                      json={"payment_ref": "x"}),
                         await c.delete(f"/api/v1/reservations/{w.held}", headers=h)):
                assert resp.status_code == 403, resp.text
                assert assert_error_body(resp)["code"] == "forbidden"
        mine = {"authorization": f"Bearer {mint('viewer', w.own, 'az-viewer')}"}
        first = await c.post(f"/api/v1/reservations/{w.held}/confirm", headers=mine, json={"payment_ref": "p"})
        again = await c.post(f"/api/v1/reservations/{w.held}/confirm", headers=mine, json={"payment_ref": "p"})
        assert first.status_code == again.status_code == 201 and first.json()["id"] == again.json()["id"]
        assert (await c.delete(f"/api/v1/reservations/{w.held2}", headers=mine)).status_code == 204
        # a claim through this show's URL on the other show's deal is no claim
        cross = await c.post(f"/api/v1/shows/{w.own}/deals/{w.other_deal}/claims", headers=mine, json={})
        assert cross.status_code == 404
        assert (await c.get(f"/api/v1/shows/{w.own}/deals/{w.other_deal}")).status_code == 404
        orders = await c.get(f"/api/v1/shows/{w.own}/orders", headers=AUTH)
        assert [o["reservation_id"] for o in orders.json()["orders"]] == [w.held]


async def handshake(url: str, token: str | None) -> tuple[Any, websockets.ClientConnection | None]:
    conn = await ws_connect(url)
    try:
        await conn.send(hello(token))
        frame = orjson.loads(await asyncio.wait_for(conn.recv(), 20))
        return frame, conn
    except websockets.ConnectionClosed:
        return conn.close_code, None


async def test_socket_handshake_matrix(edge: ServerProc) -> None:
    async with httpx.AsyncClient(base_url=edge.base_url, timeout=30) as c:
        own, _ = await make_show(c)
        other, _ = await make_show(c)
    cells = [(ep, "anon", "valid") for ep in WS_TABLE]
    cells += [(ep, p, s) for ep in WS_TABLE for p in [*ROLES_AT, "host@*"] for s in STATES]
    sem = asyncio.Semaphore(16)
    mismatches: list[str] = []

    async def check(endpoint: str, principal: str, state: str) -> None:
        if principal == "anon":
            want: Any = "welcome" if "anon" in WS_TABLE[endpoint] else 4401
        elif state != "valid" or principal == "host@*":
            want = 4401
        else:
            want = "welcome" if principal in WS_TABLE[endpoint] else 4403
        async with sem:
            got, conn = await handshake(edge.ws_url(endpoint, own), token_for(principal, state, own, other))
            if conn is not None:
                got = got["type"]
                await conn.close()
        if got != want:
            mismatches.append(f"/ws/{endpoint} as {principal} ({state}): want {want}, got {got}")

    await asyncio.gather(*[check(*cell) for cell in cells])
    assert mismatches == [], "\n".join(mismatches)


async def ask(ws: WS, command: str, **fields: Any) -> dict[str, Any]:
    """The reply to a command, or {"type": "none"} for a command that sends none
    (react): a ping right behind it bounds the wait."""
    rid, pid = f"c-{uuid.uuid4().hex[:8]}", f"p-{uuid.uuid4().hex[:8]}"
    await ws.send({"type": command, "id": rid, **fields})
    await ws.send({"type": "ping", "id": pid})
    reply: dict[str, Any] = {"type": "none"}
    while True:
        frame = await ws.recv(20)
        if frame.get("re") == rid and frame.get("type") in ("ack", "error", "pong"):
            reply = frame
        elif frame.get("re") == pid and frame.get("type") == "pong":
            return reply


async def collect_until(ws: WS, text: str, timeout: float = 30) -> list[dict[str, Any]]:
    """Every frame up to the announcement `text` (broadcast events keep coming
    after it, so the deadline is for the whole read)."""
    seen: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise TimeoutError(f"no announcement {text!r} among {[f.get('type') for f in seen][-30:]}")
        frame = await ws.recv(left)
        seen.append(frame)
        if frame.get("type") == "announcement" and frame.get("text") == text:
            return seen


async def test_socket_command_matrix_and_staff_only_events(edge: ServerProc) -> None:
    async with httpx.AsyncClient(base_url=edge.base_url, timeout=30) as c:
        own, product = await make_show(c, stock=10_000)
        other, _ = await make_show(c)
        other_deal = (await c.post(f"/api/v1/shows/{other}/deals", headers=AUTH, json={
            "product_id": product, "price_cents": 5, "quantity": 10, "duration_s": 600})).json()["id"]
    # the other show: a chat message, a held message, its staff listening
    o_mod = await WS.open(edge.ws_url("moderator", other), mint("moderator", other, "o-mod"))
    o_host = await WS.open(edge.ws_url("host", other), mint("host", other, "o-host"))
    o_viewer = await WS.open(edge.ws_url("viewer", other), mint("viewer", other, "o-viewer"))
    o_msg = (await o_viewer.request("chat.send", text="a normal message"))["message_id"]
    o_held = await o_viewer.request("chat.send", text="buy at http://spam.example now")
    assert o_held.get("held") is True, o_held
    # spies: every principal that may join this show's viewer endpoint
    spies = {p: await WS.open(edge.ws_url("viewer", own), token_for(p, "valid", own, other))
             for p in sorted(WS_TABLE["viewer"])}
    for p, spy in spies.items():
        assert "held" not in spy.welcome and "moderation" not in spy.welcome, p
    staff_mod = await WS.open(edge.ws_url("moderator", own), mint("moderator", own, "watch-mod"))
    staff_host = await WS.open(edge.ws_url("host", own), mint("host", own, "watch-host"))
    quiet_mod = await WS.open(edge.ws_url("moderator", own), mint("moderator", own, "quiet-mod"))
    assert "held" in staff_mod.welcome

    args: dict[str, dict[str, Any]] = {
        "chat.send": {"text": "hi"}, "react": {"emoji": "🔥"}, "deal.claim": {"deal_id": other_deal},
        "product.pin": {"product_id": product}, "deal.launch": {"product_id": product, "price_cents": 1,
                                                                "quantity": 1, "duration_s": 30},
        "deal.cancel": {"deal_id": other_deal}, "announce": {"text": "matrix"},
        "chat.delete": {"message_id": o_msg}, "chat.pin": {"message_id": o_msg},
        "user.timeout": {"user_id": "o-viewer", "seconds": 60}, "user.ban": {"user_id": "o-viewer"},
        "user.unban": {"user_id": "nobody"}, "chat.slow_mode": {"seconds": 0}, "chat.filter": {"words": ["zz"]},
        "chat.approve": {"message_id": o_held["message_id"]}, "chat.reject": {"message_id": o_held["message_id"]},
    }
    sessions: list[tuple[str, str, WS]] = []
    for endpoint, allowed in WS_TABLE.items():
        for p in sorted(allowed):
            sessions.append((endpoint, p, await WS.open(edge.ws_url(endpoint, own),
                                                        token_for(p, "valid", own, other))))
    mismatches: list[str] = []
    cross_show: dict[str, set[str]] = {}
    checked = 0
    # show.end last: it ends the show for everyone after it
    for command in [c for c in COMMAND_TABLE if c != "show.end"] + ["show.end"]:
        for endpoint, p, ws in sessions:
            reply = await ask(ws, command, **args.get(command, {}))
            checked += 1
            code = reply.get("code") if reply["type"] == "error" else "ok"
            if endpoint not in COMMAND_TABLE[command]:
                want = {"forbidden"}
            elif command in NEEDS_USER and p == "anon":
                want = {"unauthenticated"}
            else:
                want = None
            if want is not None and code not in want:
                mismatches.append(f"{command} on /ws/{endpoint} as {p}: want {want}, got {reply}")
            elif want is None and code in ("forbidden", "unauthenticated", "internal"):
                mismatches.append(f"{command} on /ws/{endpoint} as {p}: refused {reply}")
            elif want is None:
                cross_show.setdefault(command, set()).add(code)
    assert mismatches == [], "\n".join(mismatches)
    assert checked == len(COMMAND_TABLE) * len(sessions) == 21 * 12
    # ids of the other show are refused, and the other show is untouched
    assert cross_show["deal.claim"] == {"deal_not_live"}  # the socket's claim codes (PROTOCOL §5)
    assert cross_show["deal.cancel"] == {"not_found"}
    assert cross_show["chat.pin"] == {"not_found"}
    assert cross_show["chat.approve"] == cross_show["chat.reject"] == {"not_found"}
    async with httpx.AsyncClient(base_url=edge.base_url, timeout=30) as c:
        assert (await c.get(f"/api/v1/shows/{other}")).json()["deal"]["id"] == other_deal
        assert (await c.get(f"/api/v1/shows/{other}")).json()["status"] != "ended"
    assert (await o_mod.request("chat.approve", message_id=o_held["message_id"]))["type"] == "ack"
    assert (await o_mod.request("chat.pin", message_id=o_msg))["type"] == "ack"
    assert (await o_viewer.request("chat.send", text="still allowed to talk"))["type"] == "ack"

    # a held message in this show: staff see chat.flagged, viewers never do
    talker = await WS.open(edge.ws_url("viewer", own), mint("viewer", own, "talker"))
    await talker.request("chat.send", text="visit http://spam.example")
    flagged = await staff_mod.wait_for("chat.flagged")
    assert flagged["reason"]
    ban = await staff_mod.request("user.ban", user_id="talker")
    assert ban["type"] == "ack"
    await staff_host.wait_for(lambda f: f.get("type") == "mod.action" and f["action"]["action"] == "user.ban"
                              and f["action"]["target"] == "talker")
    await quiet_mod.wait_for(lambda f: f.get("type") == "mod.action" and f["action"]["target"] == "talker")
    marker = f"end of matrix {uuid.uuid4().hex[:6]}"
    await staff_host.request("announce", text=marker)
    for p, spy in spies.items():
        seen = await collect_until(spy, marker)
        leaked = [f["type"] for f in seen if f.get("type") in ("chat.flagged", "mod.action")]
        assert leaked == [], (p, leaked)
    # staff of the other show never saw this show's moderation
    o_marker = f"other end {uuid.uuid4().hex[:6]}"
    # announced from another socket: request() skips broadcasts that beat its ack
    announcer = await WS.open(edge.ws_url("host", other), mint("host", other, "o-announcer"))
    await announcer.request("announce", text=o_marker)
    await announcer.close()
    for ws in (o_mod, o_host):
        seen = await collect_until(ws, o_marker)
        foreign = [f for f in seen if f.get("type") == "mod.action" and f["action"]["show_id"] != other]
        assert foreign == []
    for ws in [*spies.values(), *(s[2] for s in sessions), staff_mod, staff_host, quiet_mod, talker, o_mod, o_host,
               o_viewer]:
        await ws.close()
