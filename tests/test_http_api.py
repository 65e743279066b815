"""REST API over a real server: tokens, catalogue, shows, bad input."""

from __future__ import annotations

import httpx
import jwt

from tests.support import ADMIN, TOKENS, ServerProc, create_show, mint

AUTH = {"authorization": f"Bearer {ADMIN}"}


def product_body(**over: object) -> dict[str, object]:
    import secrets

    body: dict[str, object] = {"sku": f"S-{secrets.token_hex(5)}", "name": "Lamp", "price_cents": 1999,
                               "currency": "EUR", "image_url": "https://x.test/a.png", "stock": 5}
    body.update(over)
    return body


async def test_health_ready_metrics(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/readyz")).status_code == 200
    metrics = await http.get("/metrics")
    assert metrics.status_code == 200
    assert "livecore_http_requests_total" in metrics.text


async def test_product_and_show_roundtrip(http: httpx.AsyncClient) -> None:
    resp = await http.post("/api/v1/products", headers=AUTH, json=product_body())
    assert resp.status_code == 201
    product = resp.json()
    assert product["id"] and product["price_cents"] == 1999 and product["currency"] == "EUR"
    show = await http.post("/api/v1/shows", headers=AUTH, json={"title": "Spring drop", "scheduled_at": 1})
    assert show.status_code == 201
    assert show.json()["status"] == "scheduled"
    got = await http.get(f"/api/v1/shows/{show.json()['id']}")
    assert got.status_code == 200
    body = got.json()
    assert body["pinned"] is None and body["deal"] is None and body["viewers"] == 0


async def test_token_minting_and_refusals(http: httpx.AsyncClient) -> None:
    show_id, _ = await create_show(http)
    resp = await http.post("/api/v1/tokens", headers=AUTH,
                           json={"sub": "u1", "name": "U", "role": "host", "show": show_id, "ttl_s": 60})
    assert resp.status_code == 201
    token = resp.json()["token"]
    assert TOKENS.verify(token).role == "host"
    assert resp.json()["expires_at"] > 0
    # a host may not mint tokens
    denied = await http.post("/api/v1/tokens", headers={"authorization": f"Bearer {token}"},
                             json={"sub": "u", "name": "U", "role": "admin", "show": "*", "ttl_s": 60})
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "forbidden"
    forged = jwt.encode({"sub": "a", "name": "A", "role": "admin", "show": "*", "exp": 9999999999},
                        "another-secret-another-secret", algorithm="HS256")
    none_alg = jwt.encode({"sub": "a", "name": "A", "role": "admin", "show": "*", "exp": 9999999999},
                          None, algorithm="none")
    expired = mint("admin", "*", ttl_s=-10)
    for bad in (forged, none_alg, expired, "garbage"):
        r = await http.post("/api/v1/products", headers={"authorization": f"Bearer {bad}"}, json=product_body())
        assert r.status_code == 401, bad
        assert r.json()["error"]["code"] == "unauthenticated"
    missing = await http.post("/api/v1/products", json=product_body())
    assert missing.status_code == 401
    viewer = await http.post("/api/v1/products", headers={"authorization": f"Bearer {mint('viewer', show_id)}"},
                             json=product_body())
    assert viewer.status_code == 403


async def test_guest_token(http: httpx.AsyncClient) -> None:
    show_id, _ = await create_show(http)
    resp = await http.post(f"/api/v1/shows/{show_id}/guest")
    assert resp.status_code == 201
    claims = TOKENS.verify(resp.json()["token"])
    assert claims.role == "viewer" and claims.show == show_id and claims.sub.startswith("guest")
    assert (await http.post("/api/v1/shows/nope/guest")).status_code == 404


async def test_bad_input_gets_documented_errors(http: httpx.AsyncClient, server: ServerProc) -> None:
    cases = [
        (product_body(price_cents=-1), 422, "price_cents"),
        (product_body(price_cents="12"), 422, "price_cents"),
        (product_body(currency="XYZ"), 422, "currency"),
        (product_body(stock=1.5), 422, "stock"),
        ({"name": "x"}, 422, "sku"),
        ([1, 2], 422, None),
    ]
    for body, status, field in cases:
        r = await http.post("/api/v1/products", headers=AUTH, json=body)
        assert r.status_code == status, (body, r.text)
        err = r.json()["error"]
        assert err["code"] == "validation_error" and err["message"]
        if field:
            assert field in err["message"]
    malformed = await http.post("/api/v1/products", headers={**AUTH, "content-type": "application/json"},
                                content=b"{not json")
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "bad_request"
    huge = await http.post("/api/v1/products", headers=AUTH, content=b"x" * (2 * 1024 * 1024))
    assert huge.status_code == 413
    assert huge.json()["error"]["code"] == "payload_too_large"
    assert (await http.get("/api/v1/shows/does-not-exist")).json()["error"]["code"] == "not_found"
    unknown = await http.get("/api/v1/nothing-here")
    assert unknown.status_code == 404 and "error" in unknown.json()
    # still serving
    assert (await http.get("/readyz")).status_code == 200


async def test_pages_served_with_csp(http: httpx.AsyncClient) -> None:
    for path in ("/", "/host", "/moderator"):
        r = await http.get(path)
        assert r.status_code == 200
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
    assert (await http.get("/static/livecore.js")).status_code == 200
