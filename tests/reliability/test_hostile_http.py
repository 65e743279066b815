"""Hostile input on every HTTP endpoint: fuzzed paths, headers, bodies, methods.

Every answer is < 500 and every error is `{"error": {"code", "message"}}`
JSON; the node keeps serving (readyz, an observer socket still gets events)
and logs no crash. Routes come from gateway.http_api itself, so a route
added later is fuzzed without touching this file.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest_asyncio
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import http_analytics, http_api
from tests.reliability.helpers import AUTH, LogCursor, assert_error_body, crash_lines, make_show
from tests.reliability.strategies import NASTY_TEXT, json_value
from tests.support import ROOT, WS, ServerProc, mint

FUZZ = settings(max_examples=int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "300")), deadline=None,
                print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Every operation of the OpenAPI document, and the routes it does not describe
# (video sessions and the SFU hook, pages, static files), each checked to exist
# in the app so that neither list can drift away from the server.
OPENAPI = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
DOCUMENTED = [(path, sorted(m.upper() for m in ops if m in ("get", "post", "put", "patch", "delete")))
              for path, ops in OPENAPI["paths"].items()]
UNDOCUMENTED = [("/whip/{show}/{session}", ["DELETE", "PATCH"]), ("/whep/{show}/{session}", ["DELETE", "PATCH"]),
                ("/video/sfu-auth", ["POST"]), ("/", ["GET"]), ("/host", ["GET"]), ("/moderator", ["GET"]),
                ("/host/report", ["GET"]), ("/static/{file}", ["GET"])]
ROUTES = DOCUMENTED + UNDOCUMENTED
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
INTS = st.sampled_from([0, 1, -1, 3600, 86_400, 86_401, 2**31, 2**53, 2**63, 10**30]) | st.integers(-5, 500)
BODY_FIELDS: dict[str, dict[str, Any]] = {
    "/api/v1/tokens": {"sub": "text", "name": "text", "role": st.sampled_from(["viewer", "host", "admin", "x"]),
                       "show": "show", "ttl_s": "int"},
    "/api/v1/products": {"sku": "text", "name": "text", "price_cents": "int", "stock": "int",
                         "currency": st.sampled_from(["USD", "EUR", "JPY", "KWD", "XYZ", "usd", ""]),
                         "image_url": st.sampled_from(["https://x.test/a.png", "javascript:alert(1)", "/p.png"])},
    "/api/v1/shows": {"title": "text", "scheduled_at": "int"},
    "/api/v1/shows/{show}/deals": {"product_id": "product", "price_cents": "int", "quantity": "int",
                                   "duration_s": "int", "per_user_limit": "int", "hold_ttl_s": "int"},
    "/api/v1/shows/{show}/deals/{deal}/claims": {"qty": "int"},
    "/api/v1/reservations/{reservation}/confirm": {"payment_ref": "text"},
    "/api/v1/shows/{show}/faq": {"patterns": st.lists(st.text(max_size=120), max_size=25), "answer": "text"},
    "/api/v1/webhooks": {"url": st.sampled_from(["https://hooks.invalid/x", "http://127.0.0.1:9/x", "ftp://x",
                                                  "javascript:alert(1)", "https://user:pw@hooks.invalid/",
                                                  "https://" + "h" * 3000 + ".invalid/"]),
                         "events": st.lists(st.sampled_from(["order.paid", "deal.ended", "nope", ""]), max_size=25),
                         "secret": "text", "description": "text"},
    "/video/sfu-auth": {"action": st.sampled_from(["publish", "read", "api", ""]), "path": "show",
                        "token": "token", "password": "token", "query": st.text(max_size=40)},
}


@dataclass
class Target:
    node: ServerProc = field(repr=False)
    ids: dict[str, list[str]]
    tokens: list[str | None]
    observer: WS
    host: WS
    cursor: LogCursor
    statuses: dict[int, int] = field(default_factory=dict)


@pytest_asyncio.fixture(scope="module")
async def target(edge: ServerProc) -> Any:
    cursor = LogCursor(edge)
    async with httpx.AsyncClient(base_url=edge.base_url, timeout=30) as client:
        show_id, product_id = await make_show(client, stock=100_000)
        deal = await client.post(f"/api/v1/shows/{show_id}/deals", headers=AUTH, json={
            "product_id": product_id, "price_cents": 5, "quantity": 1000, "duration_s": 600, "per_user_limit": 1000})
        assert deal.status_code == 201, deal.text
        deal_id = deal.json()["id"]
        buyer = mint("viewer", show_id, "http-fuzz-buyer")
        held = await client.post(f"/api/v1/shows/{show_id}/deals/{deal_id}/claims",
                                 headers={"authorization": f"Bearer {buyer}"}, json={"qty": 1})
        assert held.status_code == 201, held.text
        hook = await client.post("/api/v1/webhooks", headers=AUTH, json={
            "url": "https://hooks.invalid/fuzz", "events": ["order.paid"]})
        assert hook.status_code == 201, hook.text
    expired = mint("admin", "*", ttl_s=-30)
    none_alg = jwt.encode({"sub": "a", "name": "A", "role": "admin", "show": "*", "exp": 9_999_999_999},
                          None, algorithm="none")
    tokens: list[str | None] = [None, mint("admin", "*"), mint("host", show_id), buyer, mint("moderator", show_id),
                                expired, none_alg, "garbage", "", "Bearer", "eyJ.eyJ.x"]
    ids = {"show": [show_id, "s_unknown"], "product": [product_id], "deal": [deal_id],
           "reservation": [held.json()["id"], f"r.{deal_id}.0000"], "session": ["nope"],
           "webhook": [hook.json()["id"], "wh_nope"],
           "file": ["livecore.js", "style.css", "..%2F..%2Fetc%2Fpasswd", "nope.js"]}
    observer = await WS.open(edge.ws_url("viewer", show_id), None)
    host = await WS.open(edge.ws_url("host", show_id), mint("host", show_id))
    yield Target(edge, ids, tokens, observer, host, cursor)
    await observer.close()
    await host.close()


def value_of(draw: st.DrawFn, kind: Any, t: Target) -> Any:
    if not isinstance(kind, str):
        return draw(kind)
    if draw(st.integers(0, 9)) == 0:
        return draw(json_value)
    if kind == "int":
        return draw(INTS)
    if kind == "text":
        return draw(st.text(max_size=300) | st.sampled_from(NASTY_TEXT))
    if kind == "token":
        return draw(st.sampled_from([tok for tok in t.tokens if tok]) | st.text(max_size=20))
    return draw(st.sampled_from([*t.ids.get(kind, []), "x"]) | st.sampled_from(NASTY_TEXT))


@st.composite
def request_of(draw: st.DrawFn, t: Target) -> dict[str, Any]:
    """Half of the requests are well-formed around their fuzzed content (the
    route's own method, a valid token, a JSON body of the route's fields), so
    that the fuzz gets past authentication and parsing into the handlers; the
    other half are wrong everywhere."""
    template, methods = draw(st.sampled_from(ROUTES))
    well_formed = draw(st.booleans())
    method = draw(st.sampled_from(methods)) if well_formed or draw(st.integers(0, 7)) else \
        draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]))

    def param(m: re.Match[str]) -> str:
        name = m.group(1)
        ids = t.ids.get(name, ["x"])
        raw = draw(st.sampled_from(ids)) if well_formed and draw(st.integers(0, 3)) else \
            draw(st.sampled_from(ids) | st.text(min_size=1, max_size=80) | st.sampled_from([n for n in NASTY_TEXT if n]))
        return quote(raw, safe="%/." if name == "file" else "")

    path = re.sub(r"{(\w+)}", param, template)
    headers: dict[str, str] = {}
    token = draw(st.sampled_from(t.tokens[1:5] if well_formed else t.tokens))
    if token is not None:
        prefix = "Bearer " if well_formed else \
            draw(st.sampled_from(["Bearer ", "bearer ", "Basic ", "", "Bearer  "]))
        value = prefix + token
        if value.strip():
            headers["authorization"] = value.strip()
    if well_formed and template in BODY_FIELDS:
        headers["content-type"] = "application/json"
    elif draw(st.booleans()):
        kind = draw(st.sampled_from(["application/json", "application/sdp", "text/plain",
                                     "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"])
                    | HEADER_TEXT).strip()
        if kind:
            headers["content-type"] = kind
    if draw(st.booleans()):
        key = draw(HEADER_TEXT | st.just("k" * 300)).strip()
        if key:
            headers["idempotency-key"] = key
    body_kind = draw(st.integers(0, 2 if well_formed else 5))
    content: bytes | None = None
    if body_kind <= 2 and template in BODY_FIELDS:
        body = {k: value_of(draw, kind, t) for k, kind in BODY_FIELDS[template].items()
                if draw(st.integers(0, 7))}
        content = json.dumps(body, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    elif body_kind == 3:
        content = json.dumps(draw(json_value)).encode()
    elif body_kind == 4:
        content = draw(st.binary(max_size=300))
    query = draw(st.sampled_from(["", "?after=0&limit=5", "?after=-1&limit=999999", "?after=x",
                                  "?after=99999999999999999999", "?limit=%00", "?token=abc&show=%00"]))
    return {"method": method, "url": path + query, "headers": headers, "content": content}


def test_fuzzed_routes_are_the_servers_routes() -> None:
    """The documented and the extra routes together are exactly the app's HTTP routes."""
    served = {(r.path, m) for r in [*http_api.routes, *http_analytics.routes] for m in r.methods - {"HEAD"}}
    fuzzed = {(path, m) for path, methods in ROUTES for m in methods}
    assert served <= fuzzed, served - fuzzed


@FUZZ
@given(data=st.data())
async def test_fuzzed_requests_never_crash(target: Target, data: st.DataObject) -> None:
    req = data.draw(request_of(target), label="request")
    async with httpx.AsyncClient(base_url=target.node.base_url, timeout=30) as client:
        resp = await client.request(req["method"], req["url"], headers=req["headers"], content=req["content"])
    target.statuses[resp.status_code] = target.statuses.get(resp.status_code, 0) + 1
    assert resp.status_code < 500, (req, resp.status_code, resp.text[:300])
    if resp.status_code >= 400 and req["method"] != "HEAD":
        assert_error_body(resp)
    assert "Traceback" not in resp.text


async def test_every_route_with_every_nasty_path_parameter(target: Target) -> None:
    """The systematic half of the fuzz: every route × every nasty id × a valid
    admin token and a JSON body, so that rare draws (a NUL in a show id on the
    video routes) are not left to chance."""
    cases = []
    for template, methods in ROUTES:
        names = re.findall(r"{(\w+)}", template)
        for name in names:
            for nasty in [n for n in NASTY_TEXT if n] + ["%00", "%ff%fe", "\ud7ff", "a" * 2000]:
                path = template
                for other in names:
                    value = nasty if other == name else t_id(target, other)
                    path = path.replace("{" + other + "}", quote(value, safe="%" if value in ("%00", "%ff%fe") else ""))
                for method in methods:
                    cases.append((method, path))
    sem = asyncio.Semaphore(8)
    bad: list[str] = []
    async with httpx.AsyncClient(base_url=target.node.base_url, timeout=30) as client:

        async def one(method: str, path: str) -> None:
            async with sem:
                sdp = path.startswith(("/whip", "/whep"))
                resp = await client.request(
                    method, path, headers={**AUTH, "content-type": "application/sdp" if sdp else "application/json"},
                    content=(b"v=0\r\n" if sdp else b"{}") if method in ("POST", "PATCH") else None)
            target.statuses[resp.status_code] = target.statuses.get(resp.status_code, 0) + 1
            if resp.status_code >= 500:
                bad.append(f"{method} {path[:120]} -> {resp.status_code} {resp.text[:200]}")
            elif resp.status_code >= 400:
                assert_error_body(resp)

        await asyncio.gather(*[one(*c) for c in cases])
    assert bad == [], "\n".join(bad)
    assert len(cases) > 500


def t_id(t: Target, name: str) -> str:
    return t.ids.get(name, ["x"])[0]


async def test_http_fuzz_left_everything_serving(target: Target) -> None:
    assert sum(target.statuses.values()) > 0
    async with httpx.AsyncClient(base_url=target.node.base_url, timeout=15) as client:
        assert (await client.get("/readyz")).status_code == 200
    text = f"after http fuzz {uuid.uuid4().hex[:6]}"
    await target.host.request("announce", text=text)
    await target.observer.wait_for(lambda f: f.get("type") == "announcement" and f.get("text") == text, 20)
    assert crash_lines(target.cursor.read()) == []
    # the fuzzer got past authentication and validation, not only refusals
    assert any(200 <= s < 300 for s in target.statuses), target.statuses
    assert {400, 401, 403, 404, 422} <= set(target.statuses), target.statuses


def raw_exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


async def test_malformed_http_is_refused_by_the_server(target: Target) -> None:
    """Requests that are not HTTP never reach the app: uvicorn answers 400 itself
    (plain text, outside our JSON error format: documented)."""
    port = target.node.port
    cases = [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64),  # a TLS hello
             b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
             b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
             b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
             b"POST /api/v1/shows HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
             b"GET / HTTP/9.9\r\n\r\n", b"\r\n\r\n\r\n", b"GET " + b"/a" * 40_000 + b" HTTP/1.1\r\n\r\n",
             b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 5000 + b"\r\n"]
    answers = await asyncio.gather(*[asyncio.to_thread(raw_exchange, port, c) for c in cases])
    for case, answer in zip(cases, answers, strict=True):
        status = answer.split(b"\r\n", 1)[0]
        assert not status.startswith(b"HTTP/1.1 5"), (case[:60], answer[:200])
    async with httpx.AsyncClient(base_url=target.node.base_url, timeout=15) as client:
        assert (await client.get("/readyz")).status_code == 200
    assert crash_lines(target.cursor.read()) == []
