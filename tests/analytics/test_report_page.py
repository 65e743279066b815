"""The report page in Chromium against a real server: figures rendered, token
kept out of the URL, CSV download, no CSP violations or script errors.

Needs the gateway hooks (routes). Playwright's sync API owns the thread's
event loop while it runs, so this test is synchronous (like tests/browser)."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from pathlib import Path

import httpx
from playwright import sync_api

from tests.analytics.support import HANG_GUARD_S, WEBHOOK_ENV, fresh_database, start_server
from tests.browser.helpers import SCREENSHOTS
from tests.support import ADMIN, Backends, mint

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
AUTH = {"authorization": f"Bearer {ADMIN}"}
TIMEOUT_MS = 20_000


def seed(base_url: str) -> tuple[str, str]:
    """A show with one deal of 2 units, one sold at 7.00 EUR."""
    with httpx.Client(base_url=base_url, timeout=30) as http:
        product = http.post("/api/v1/products", headers=AUTH, json={
            "sku": f"R-{secrets.token_hex(5)}", "name": "Ceramic mug <b>", "price_cents": 900,
            "currency": "EUR", "image_url": "https://example.test/m.png", "stock": 10}).json()
        show = http.post("/api/v1/shows", headers=AUTH, json={"title": "Report show"}).json()
        deal = http.post(f"/api/v1/shows/{show['id']}/deals", headers=AUTH, json={
            "product_id": product["id"], "price_cents": 700, "quantity": 2, "duration_s": 600}).json()
        buyer = {"authorization": f"Bearer {mint('viewer', show['id'], 'buyer-1')}"}
        hold = http.post(f"/api/v1/shows/{show['id']}/deals/{deal['id']}/claims", headers=buyer)
        assert hold.status_code == 201, hold.text
        order = http.post(f"/api/v1/reservations/{hold.json()['id']}/confirm", headers=buyer,
                          json={"payment_ref": "p"})
        assert order.status_code == 201, order.text
        # The claim reaches PostgreSQL with the node's next analytics flush.
        deadline = time.monotonic() + HANG_GUARD_S
        while http.get(f"/api/v1/shows/{show['id']}/analytics", headers=AUTH).json()["claims"]["ok"] < 1:
            assert time.monotonic() < deadline, "the claim was never flushed"
            time.sleep(0.05)
    return show["id"], product["name"]


def test_report_page_renders_the_analytics(backends: Backends, tmp_path: Path) -> None:
    assert CHROMIUM, "Debian chromium is needed (make browser-deps)"
    db_url = asyncio.run(fresh_database(backends.database_url))
    proc = start_server(backends.redis_url, db_url, **WEBHOOK_ENV)
    try:
        show_id, product_name = seed(proc.base_url)
        token = mint("host", show_id, "host-1")
        problems: list[str] = []
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                context = browser.new_context(accept_downloads=True, locale="en-US")
                context.set_default_timeout(TIMEOUT_MS)
                page = context.new_page()
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: problems.append(str(e)))
                page.goto(f"{proc.base_url}/host/report?show={show_id}&token={token}")
                expect = sync_api.expect
                expect(page.locator("#m-orders")).to_have_text("1", timeout=TIMEOUT_MS)
                expect(page.locator("#show-title")).to_have_text("Report show")
                expect(page.locator("#m-gmv")).to_contain_text("7.00")
                expect(page.locator("#m-buyers")).to_have_text("1")
                expect(page.locator("#m-claims")).to_have_text("1")
                expect(page.locator("#m-conv-claims")).to_have_text("100%")
                deals = page.locator("#deals-list li")
                expect(deals).to_have_count(1)
                expect(deals.first).to_contain_text(product_name)  # as text, not markup
                expect(deals.first).to_contain_text("1 / 2 sold (50%)")
                assert "token=" not in page.url and f"show={show_id}" in page.url
                with page.expect_download() as download:
                    page.click("[data-export=deals]")
                csv_text = Path(download.value.path()).read_text()
                assert csv_text.startswith("id,product_id,product_name,") and product_name in csv_text
                page.screenshot(path=str(SCREENSHOTS / "report.png"), full_page=True)  # README/docs
                # A wrong token brings the login form back with the error.
                page2 = context.new_page()
                page2.goto(f"{proc.base_url}/host/report?show={show_id}&token=bad")
                expect(page2.locator("#login-form")).to_be_visible()
                expect(page2.locator("#login-error")).not_to_be_empty()
            finally:
                browser.close()
        csp = [p for p in problems if "Content Security Policy" in p or "Refused" in p]
        assert not csp, csp
        # the bad-token page logs its 401 fetch; nothing else may fail
        assert [p for p in problems if "401" not in p] == [], problems
    finally:
        proc.stop()
