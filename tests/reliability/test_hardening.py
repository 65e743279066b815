"""Hardening: security headers, CORS closed by default, tokens never in the
logs (at the most verbose log level), request and frame size limits."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator

import httpx
import jwt
import orjson
import pytest_asyncio
import websockets

from tests.reliability.helpers import (
    AUTH,
    JWT,
    assert_error_body,
    close_code_of,
    crash_lines,
    hello,
    log_text,
    make_show,
    node_env,
    nodes,
    ws_connect,
)
from tests.support import ROOT, Backends, ServerProc, mint

PAGES = ("/", "/host", "/moderator")
SHOP = "https://shop.example"


async def test_security_headers_on_pages_and_api(edge_http: httpx.AsyncClient) -> None:
    show_id, _ = await make_show(edge_http)
    for path in PAGES:
        r = await edge_http.get(path, params={"show": show_id})
        assert r.status_code == 200
        csp = r.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
        assert directives["frame-ancestors"] == "'none'", csp
        assert directives["default-src"] == "'self'" and directives["script-src"] == "'self'", csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, csp
        assert directives["base-uri"] == "'none'" and directives["form-action"] == "'self'"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
    for resp in (await edge_http.get(f"/api/v1/shows/{show_id}"), await edge_http.get("/api/v1/nothing"),
                 await edge_http.get("/static/livecore.js"), await edge_http.post("/api/v1/products", json={}),
                 await edge_http.get("/healthz")):
        assert resp.headers["x-content-type-options"] == "nosniff", resp.url
        assert resp.headers["referrer-policy"] == "no-referrer", resp.url
        assert resp.headers.get("x-request-id")
    js = await edge_http.get("/static/livecore.js")
    assert js.headers["content-type"].startswith(("text/javascript", "application/javascript"))


async def test_cors_is_closed_by_default(edge_http: httpx.AsyncClient) -> None:
    evil = {"origin": "https://evil.example"}
    pre = await edge_http.options("/api/v1/products", headers={
        **evil, "access-control-request-method": "POST", "access-control-request-headers": "authorization"})
    assert pre.status_code in (400, 404, 405)
    assert not any(h.startswith("access-control-") for h in pre.headers)
    for resp in (await edge_http.get("/api/v1/products", headers={**evil, **AUTH}),
                 await edge_http.post("/api/v1/shows", headers={**evil, **AUTH}, json={"title": "cors"}),
                 await edge_http.get("/", headers=evil)):
        assert not any(h.startswith("access-control-") for h in resp.headers), resp.headers
    # a socket from a foreign page is accepted (browsers send Origin; tokens, not
    # cookies, carry identity, so there is no ambient authority to ride on)
    show_id, _ = await make_show(edge_http)
    conn = await ws_connect(str(edge_http.base_url).replace("http", "ws", 1) + f"/ws/viewer/{show_id}",
                            origin="https://evil.example")
    await conn.send(hello(None))
    assert orjson.loads(await conn.recv())["user"]["id"] is None
    await conn.close()


async def test_body_and_frame_limits(edge: ServerProc, edge_http: httpx.AsyncClient) -> None:
    show_id, _ = await make_show(edge_http)
    big = b'{"title":"' + b"x" * (1_048_576 + 10) + b'"}'
    targets = ["/api/v1/shows", "/api/v1/products", f"/api/v1/shows/{show_id}/deals", "/api/v1/tokens",
               f"/whip/{show_id}", "/video/sfu-auth"]
    for path in targets:
        declared = await edge_http.post(path, headers={**AUTH, "content-type": "application/json"}, content=big)
        assert declared.status_code == 413, (path, declared.text[:200])
        assert assert_error_body(declared)["code"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit applies while streaming
        for _ in range(40):
            yield b"x" * 65_536

    streamed = await edge_http.post("/api/v1/shows", headers=AUTH, content=chunks())
    assert streamed.status_code == 413 and assert_error_body(streamed)["code"] == "payload_too_large"
    for length in (b"99999999999999999999", b"2000000"):  # declared, never sent
        with socket.create_connection(("127.0.0.1", edge.port), timeout=15) as s:
            s.sendall(b"POST /api/v1/shows HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n{}")
            status = s.recv(200).split(b"\r\n", 1)[0]
        assert status in (b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 413 Request Entity Too Large"), status
    # just under the limit is parsed (and refused on its merits)
    under = b'{"title":"' + b"x" * 1_000_000 + b'"}'
    ok = await edge_http.post("/api/v1/shows", headers={**AUTH, "content-type": "application/json"}, content=under)
    assert ok.status_code == 422
    # frames: over 64 KiB closes 1009, and only that socket
    url = edge.ws_url("viewer", show_id)
    bystander = await ws_connect(url)
    await bystander.send(hello(None))
    await bystander.recv()
    conn = await ws_connect(url)
    await conn.send(hello(mint("viewer", show_id)))
    await conn.recv()
    with contextlib.suppress(websockets.ConnectionClosed):
        await conn.send("x" * 70_000)
    assert await close_code_of(conn) == 1009
    await bystander.send('{"type":"ping","id":"still"}')
    while orjson.loads(await asyncio.wait_for(bystander.recv(), 15)).get("re") != "still":
        pass
    await bystander.close()


@pytest_asyncio.fixture(scope="module")
async def chatty(backends: Backends, prefix: str) -> AsyncIterator[ServerProc]:
    """A node at uvicorn's most verbose level: trace (ASGI messages, frame dumps);
    CORS opened for one origin."""
    env = node_env(backends.redis_url, backends.database_url, prefix, LIVECORE_LOG_LEVEL="trace",
                   LIVECORE_CORS_ORIGINS=orjson.dumps([SHOP]).decode())
    async with nodes(env) as (node,):
        yield node


async def test_cors_opens_only_to_configured_origins(chatty: ServerProc) -> None:
    async with httpx.AsyncClient(base_url=chatty.base_url, timeout=30) as c:
        ask = {"access-control-request-method": "POST",
               "access-control-request-headers": "authorization,content-type,idempotency-key"}
        pre = await c.options("/api/v1/products", headers={"origin": SHOP, **ask})
        assert pre.status_code == 200, pre.text
        assert pre.headers["access-control-allow-origin"] == SHOP
        assert "POST" in pre.headers["access-control-allow-methods"]
        assert "authorization" in pre.headers["access-control-allow-headers"].lower()
        got = await c.get("/api/v1/products", headers={"origin": SHOP, **AUTH})
        assert got.status_code == 200 and got.headers["access-control-allow-origin"] == SHOP
        assert "access-control-allow-credentials" not in got.headers  # tokens, never cookies
        evil = await c.options("/api/v1/products", headers={"origin": "https://evil.example", **ask})
        assert evil.status_code == 400 and "access-control-allow-origin" not in evil.headers
        plain = await c.get("/api/v1/products", headers={"origin": "https://evil.example", **AUTH})
        assert "access-control-allow-origin" not in plain.headers


async def test_tokens_never_in_logs(chatty: ServerProc) -> None:
    node = chatty
    async with httpx.AsyncClient(base_url=node.base_url, timeout=30) as c:
        show_id, _ = await make_show(c)
        minted = (await c.post("/api/v1/tokens", headers=AUTH, json={
            "sub": "log-u", "name": "L", "role": "viewer", "show": show_id})).json()["token"]
        guest = (await c.post(f"/api/v1/shows/{show_id}/guest")).json()["token"]
        host = mint("host", show_id, "log-host")
        viewer = mint("viewer", show_id, "log-viewer")
        expired = mint("viewer", show_id, "log-old", ttl_s=-60)
        other = mint("viewer", "s_elsewhere", "log-x")
        forged = viewer.rsplit(".", 1)[0] + "." + "A" * 43
        none_alg = jwt.encode({"sub": "n", "role": "admin", "show": "*", "exp": 9_999_999_999}, None,
                              algorithm="none")
        secrets_ = [ADMIN_TOKEN, minted, guest, host, viewer, expired, other, forged]
        # pages and API, tokens in query strings, headers and bodies; errors included
        await c.get(f"/host?show={show_id}&token={host}")
        await c.get(f"/?show={show_id}&token={viewer}")
        await c.get(f"/api/v1/shows/{show_id}?token={viewer}")
        for tok in (viewer, expired, forged, none_alg, other, "Bearer-garbage"):
            await c.get(f"/api/v1/shows/{show_id}/orders", headers={"authorization": f"Bearer {tok}"})
        await c.post("/api/v1/products", headers={"authorization": f"Bearer {expired}"}, json={"token": viewer})
        await c.post("/api/v1/shows", headers=AUTH, content=b'{"title": "' + viewer.encode() + b'"')
        await c.post("/video/sfu-auth", json={"action": "publish", "path": show_id, "token": viewer,
                                              "query": f"token={host}"})
        await c.post(f"/whip/{show_id}", headers={"authorization": f"Bearer {host}",
                                                  "content-type": "application/sdp"}, content=b"v=0\r\n")
        await c.post(f"/whep/{show_id}", headers={"authorization": f"Bearer {expired}",
                                                  "content-type": "application/sdp"}, content=b"v=0\r\n")
    # sockets: token in hello (valid, expired, forged), in the URL, in an Authorization header
    for tok, path_token in ((viewer, None), (expired, None), (forged, None), (guest, viewer), (minted, host)):
        url = node.ws_url("viewer", show_id) + (f"?token={path_token}" if path_token else "")
        conn = await ws_connect(url, additional_headers={"Authorization": f"Bearer {host}"})
        with contextlib.suppress(websockets.ConnectionClosed):
            await conn.send(hello(tok))
            await conn.recv()
            await conn.send(orjson.dumps({"type": "chat.send", "id": "t", "text": f"my token is {tok}"}).decode())
            await conn.send(orjson.dumps({"type": "hello", "token": tok}).decode())
            await asyncio.wait_for(conn.recv(), 5)
        await conn.close()
    hconn = await ws_connect(node.ws_url("host", show_id))
    await hconn.send(orjson.dumps({"resume_from": None, "batch": True, "type": "hello", "token": host}).decode())
    await hconn.recv()
    await hconn.close()
    # a raw request that breaks mid-way with a token in it
    with socket.create_connection(("127.0.0.1", node.port)) as s:
        s.sendall(f"GET /api/v1/shows/{show_id}?token={viewer} HTTP/1.1\r\nAuthorization: Bearer {host}\r\n"
                  .encode() + b"\x00\r\n\r\n")
        s.recv(1000)
    await asyncio.sleep(0.5)  # let the node flush its log
    text = log_text(node)
    assert "TRACE" in text or "ASGI" in text, "the node did not log at trace level"
    assert JWT.findall(text) == []
    for tok in secrets_:
        sig = tok.rsplit(".", 1)[1]
        # no signature, and no 12-character piece of one (frame dumps cut tokens short)
        pieces = {sig[i:i + 12] for i in range(0, len(sig) - 11)}
        found = [p for p in pieces if p in text]
        assert found == [], (tok[:20], found[:3])
    assert not re.search(r"token=(?!\[token\])[\w.-]{8,}", text), re.findall(r"token=\S{0,40}", text)[:3]
    assert crash_lines(text) == []


ADMIN_TOKEN = AUTH["authorization"].split(" ", 1)[1]



async def test_tokens_never_ride_in_websocket_urls(edge: ServerProc, edge_http: httpx.AsyncClient) -> None:
    """The server takes a socket's identity from hello only: a token in the URL
    query (where proxies and access logs keep it) authenticates nobody; and the
    browser client builds socket URLs from role and show alone."""
    show_id, _ = await make_show(edge_http)
    host = mint("host", show_id, "url-host")
    conn = await ws_connect(edge.ws_url("host", show_id) + f"?token={host}")
    with contextlib.suppress(websockets.ConnectionClosed):
        await conn.send(hello(None))
    assert await close_code_of(conn) == 4401
    conn = await ws_connect(edge.ws_url("viewer", show_id) + f"?token={host}",
                            additional_headers={"Authorization": f"Bearer {host}"})
    await conn.send(hello(None))
    welcome = orjson.loads(await conn.recv())
    assert welcome["type"] == "welcome" and welcome["user"]["id"] is None, welcome  # anonymous
    await conn.close()
    js = (ROOT / "gateway" / "static" / "livecore.js").read_text()
    body = js[js.index("function wsUrl("):]
    body = body[:body.index("\n}\n")]
    assert "token" not in body.lower(), body
    assert re.findall(r"new this\.WebSocketImpl\(([^)]*)\)", js) == ["wsUrl(this.baseUrl, this.role, this.show"]


SECRET_WORDS = re.compile(r"secret|token|signature|digest|password|passwd|api.?key|mac\b", re.I)


def test_secrets_are_compared_in_constant_time() -> None:
    """No `==` / `!=` / `in` between a secret-looking value and anything but a
    constant (None, a literal, a type tag): such comparisons must go through
    hmac.compare_digest. And the token verifier (PyJWT HS256) does."""
    import ast
    import inspect
    import itertools

    from jwt.algorithms import HMACAlgorithm

    def secretish(node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return bool(SECRET_WORDS.search(node.id))
        if isinstance(node, ast.Attribute):
            return bool(SECRET_WORDS.search(node.attr))
        if isinstance(node, ast.Call):
            return secretish(node.func)
        if isinstance(node, ast.Subscript):
            return secretish(node.value) or (isinstance(node.slice, ast.Constant)
                                             and bool(SECRET_WORDS.search(str(node.slice.value))))
        return False

    def constant(node: ast.expr) -> bool:
        return isinstance(node, ast.Constant | ast.Tuple | ast.List | ast.Set) or (
            isinstance(node, ast.Name) and node.id.isupper())

    found = []
    for path in sorted([*(ROOT / "livecore").rglob("*.py"), *(ROOT / "gateway").rglob("*.py")]):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            operands = [node.left, *node.comparators]
            for op, (left, right) in zip(node.ops, itertools.pairwise(operands), strict=True):
                if not isinstance(op, ast.Eq | ast.NotEq):
                    continue
                if (secretish(left) and not constant(right)) or (secretish(right) and not constant(left)):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert found == [], "\n".join(found)
    assert "compare_digest" in inspect.getsource(HMACAlgorithm.verify)
