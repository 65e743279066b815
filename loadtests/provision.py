"""The orchestrator's HTTP client: readiness, products, shows, deals, orders, show end."""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import Any

import httpx
import orjson

from livecore.auth import TokenService
from loadtests.safety import ws_base


def mint(secret: str, *, role: str, show: str, sub: str, name: str, ttl_s: int) -> str:
    token, _ = TokenService(secret).mint(sub=sub, name=name, role=role, show=show, ttl_s=ttl_s)
    return token


class ApiError(RuntimeError):
    pass


class Api:
    def __init__(self, base_url: str, admin_token: str, timeout: float = 30.0) -> None:
        self.base_url = base_url
        self.admin_token = admin_token
        self.client = httpx.Client(base_url=base_url, timeout=timeout,
                                   headers={"authorization": f"Bearer {admin_token}"})

    def close(self) -> None:
        self.client.close()

    def _json(self, resp: httpx.Response, *ok: int) -> Any:
        if resp.status_code not in ok:
            raise ApiError(f"{resp.request.method} {resp.request.url.path} -> {resp.status_code} "
                           f"{resp.text[:300]}")
        return resp.json()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                resp = self.client.get("/readyz", timeout=3)
                if resp.status_code == 200:
                    return
                last = f"{resp.status_code} {resp.text[:200]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.3)
        raise ApiError(f"{self.base_url} is not ready: {last}")

    def create_product(self, *, name: str, price_cents: int, stock: int, currency: str = "USD") -> dict[str, Any]:
        body = {"sku": f"LT-{secrets.token_hex(6)}", "name": name, "price_cents": price_cents,
                "currency": currency, "image_url": "https://example.invalid/loadtest.png", "stock": stock}
        product: dict[str, Any] = self._json(self.client.post("/api/v1/products", json=body), 201)
        return product

    def create_show(self, title: str) -> dict[str, Any]:
        show: dict[str, Any] = self._json(self.client.post("/api/v1/shows", json={"title": title}), 201)
        return show

    def show(self, show_id: str) -> dict[str, Any]:
        show: dict[str, Any] = self._json(self.client.get(f"/api/v1/shows/{show_id}"), 200)
        return show

    def deal(self, show_id: str, deal_id: str) -> dict[str, Any]:
        deal: dict[str, Any] = self._json(self.client.get(f"/api/v1/shows/{show_id}/deals/{deal_id}"), 200)
        return deal

    def orders(self, show_id: str) -> list[dict[str, Any]]:
        body = self._json(self.client.get(f"/api/v1/shows/{show_id}/orders"), 200)
        return list(body.get("orders", []))

    def product(self, product_id: str) -> dict[str, Any]:
        product: dict[str, Any] = self._json(self.client.get(f"/api/v1/products/{product_id}"), 200)
        return product

    def end_show(self, show_id: str) -> dict[str, Any]:
        """`show.end` over the host socket (an admin token may act as host): cancels a live deal."""
        from websockets.sync.client import connect

        url = f"{ws_base(self.base_url)}/ws/host/{show_id}"
        with connect(url, open_timeout=10, close_timeout=2, max_size=2**24) as ws:
            ws.send(orjson.dumps({"type": "hello", "token": self.admin_token, "batch": False}).decode())
            deadline = time.monotonic() + 15
            sent = False
            while time.monotonic() < deadline:
                frame = orjson.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
                if frame.get("type") == "welcome" and not sent:
                    ws.send(orjson.dumps({"type": "show.end", "id": "end"}).decode())
                    sent = True
                elif frame.get("re") == "end":
                    if frame.get("type") != "ack":
                        raise ApiError(f"show.end refused: {frame}")
                    result: dict[str, Any] = frame
                    return result
        raise ApiError("show.end got no reply")


def provision(api: Api, *, run_id: str, scenario: str, deal_stock: int) -> dict[str, Any]:
    """One show and three products (the first carries the deal stock)."""
    products = [api.create_product(name=f"Load-test deal item {run_id}", price_cents=4999,
                                   stock=max(1, deal_stock))]
    for i in (2, 3):
        products.append(api.create_product(name=f"Load-test item {i} {run_id}", price_cents=1500 * i,
                                           stock=100))
    show = api.create_show(f"Load test {scenario} {run_id}")
    return {"show_id": show["id"], "products": [p["id"] for p in products],
            "deal_product": products[0]["id"], "deal_stock": products[0]["stock"]}


def end_show_quietly(api: Api, show_id: str) -> str | None:
    """End the show; returns an error text instead of raising (cleanup must not hide results)."""
    with contextlib.suppress(Exception):
        api.end_show(show_id)
        return None
    return "could not end the show (see the server log)"
