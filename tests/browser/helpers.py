"""Page helpers for the browser tests."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx
from playwright.sync_api import Browser, Dialog, Page, expect

from tests.support import ADMIN, ROOT

SCREENSHOTS = ROOT / "docs" / "screenshots"
# Generous: CI machines are slow, and nothing here asserts on timing.
TIMEOUT_MS = 15_000


@dataclass
class Tab:
    """A page plus what it did that a test should know about."""

    name: str
    page: Page
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # uncaught exceptions, CSP violations

    def status(self) -> None:
        """Wait until the page's socket is live."""
        expect(self.page.locator("#connection-status")).to_have_attribute("data-state", "live")

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / name
        # From the top, without a focus ring: the top bar is sticky, and a
        # full-page shot taken while scrolled draws it in mid-page.
        self.page.evaluate("() => { document.activeElement?.blur(); window.scrollTo(0, 0); }")
        self.page.screenshot(path=str(path), full_page=True, animations="disabled", caret="hide")
        return path


def open_tab(browser: Browser, name: str, url: str, *, width: int = 1280, height: int = 860) -> Tab:
    context = browser.new_context(viewport={"width": width, "height": height}, locale="en-US",
                                  timezone_id="UTC", color_scheme="dark")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    tab = Tab(name, page)

    def on_dialog(dialog: Dialog) -> None:
        tab.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: tab.errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: tab.errors.append(f"console: {msg.text}")
            if msg.type == "error" and msg.text.startswith("CSP ") else None)
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', "
        "(e) => console.error('CSP ' + e.violatedDirective + ' ' + e.blockedURI));")
    page.goto(url)
    return tab


def page_url(base_url: str, path: str, show: str, token: str | None = None) -> str:
    query = {"show": show, "lang": "en"}
    if token:
        query["token"] = token
    return f"{base_url}{path}?{urlencode(query)}"


def seed_show(base_url: str, *, title: str, product: str, price_cents: int, stock: int = 50,
              image: str = "/static/product-0.svg") -> tuple[str, str]:
    """A product and a scheduled show, made over the admin API: (show_id, product_id)."""
    auth = {"authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=base_url, headers=auth, timeout=30) as http:
        made = http.post("/api/v1/products", json={
            "sku": f"SKU-{secrets.token_hex(4).upper()}", "name": product, "price_cents": price_cents,
            "currency": "USD", "image_url": image, "stock": stock})
        assert made.status_code == 201, made.text
        show = http.post("/api/v1/shows", json={"title": title})
        assert show.status_code == 201, show.text
    return show.json()["id"], made.json()["id"]


def number(page: Page, selector: str) -> int:
    return int(page.locator(selector).text_content() or "0")


def wait_number_below(page: Page, selector: str, value: int) -> None:
    """Wait until the integer text of `selector` is below `value` (e.g. a countdown ticking)."""
    page.wait_for_function(
        "([sel, v]) => { const t = document.querySelector(sel)?.textContent ?? '';"
        " return /^\\d+$/.test(t) && Number(t) < v; }",
        arg=[selector, value])


def wait_number_above(page: Page, selector: str, attribute: str, value: int) -> None:
    """Wait until the integer attribute of `selector` is above `value`."""
    page.wait_for_function(
        "([sel, attr, v]) => Number(document.querySelector(sel)?.getAttribute(attr) ?? 0) > v",
        arg=[selector, attribute, value])


def outcome(page: Page, selector: str, act: Callable[[], object]) -> str:
    """Run `act` (a click that sends a command) and return the status line it leaves in `selector`.

    The line is cleared first, so an earlier message can't be mistaken for this one, and
    read as soon as it appears, before it fades: a failing command reports its error.
    """
    page.locator(selector).evaluate("(node) => { node.textContent = ''; delete node.dataset.kind; }")
    act()
    page.wait_for_function("(sel) => document.querySelector(sel)?.dataset.kind", arg=selector)
    return page.locator(selector).text_content() or ""
