"""Issue 7: the three pages, open at once, against a real server.

A host runs a show, a guest viewer buys from a flash deal, a moderator cleans
up the chat, hostile chat text stays text, and all three pages come back on
their own after the server restarts. The screenshots in docs/screenshots/ are
taken here.
"""

from __future__ import annotations

import re

from playwright.sync_api import Browser, Locator, expect

from tests.support import ServerProc, mint

from .helpers import Tab, number, open_tab, outcome, page_url, seed_show, wait_number_below

XSS = "<img src=x onerror=alert(1)>"


def chat(tab: Tab, text: str) -> str:
    """Send a chat message from `tab`; return its message id once it is back in the list."""
    page = tab.page
    page.fill("#chat-input", text)
    page.click("#chat-send")
    expect(page.locator("#chat-input")).to_have_value("")  # acked
    item = page.locator("#chat-list li[data-message-id]").filter(has_text=text).last
    expect(item).to_be_visible()
    message_id = item.get_attribute("data-message-id")
    assert message_id
    return message_id


def message(tab: Tab, message_id: str) -> Locator:
    return tab.page.locator(f'#chat-list li[data-message-id="{message_id}"]')


def test_host_viewer_moderator_live_show(browser: Browser, live_server: ServerProc) -> None:
    base = live_server.base_url
    show, product = seed_show(base, title="Spring drop: wireless audio", product="Aurora wireless earbuds",
                              price_cents=7999, stock=40)
    host = open_tab(browser, "host", page_url(base, "/host", show, mint("host", show, "host-hana", "Hana (host)")))
    moderator = open_tab(browser, "moderator",
                         page_url(base, "/moderator", show, mint("moderator", show, "mod-omar", "Omar (mod)")))
    viewer = open_tab(browser, "viewer", page_url(base, "/", show), width=1280, height=900)  # joins as a guest
    tabs = (host, moderator, viewer)
    for tab in tabs:
        tab.status()
        assert "token=" not in tab.page.url, f"{tab.name}: token left in the address bar"
    expect(viewer.page.locator("#user-name-text")).to_have_text(re.compile(r"^Guest "))

    # The host starts the show and pins the product.
    expect(host.page.locator("#show-status")).to_have_attribute("data-state", "scheduled")
    started = outcome(host.page, "#host-message", lambda: host.page.click("#show-start"))
    assert started == "Show started.", started
    for tab in tabs:
        expect(tab.page.locator("#show-status")).to_have_attribute("data-state", "live")
    pin = host.page.locator(f'#product-list [data-pin-product="{product}"]')
    pinned = outcome(host.page, "#host-message", pin.click)
    assert pinned == "Product pinned.", pinned
    expect(pin).to_have_attribute("aria-pressed", "true")
    card = viewer.page.locator("#pinned-card")
    expect(card).to_be_visible()
    expect(card).to_have_attribute("data-product-id", product)
    expect(viewer.page.locator("#pinned-name")).to_have_text("Aurora wireless earbuds")
    expect(viewer.page.locator("#pinned-price")).to_have_text("$79.99")

    # ... and launches a 10-unit flash deal (long enough to outlive the restart below).
    host.page.select_option("#deal-product", product)
    host.page.fill("#deal-price", "59.50")
    host.page.fill("#deal-quantity", "10")
    host.page.fill("#deal-duration", "300")
    host.page.fill("#deal-limit", "1")
    launched = outcome(host.page, "#host-message", lambda: host.page.click("#deal-launch"))
    assert launched == "Deal launched.", launched
    expect(host.page.locator("#host-deal")).to_have_attribute("data-state", "live")
    banner = viewer.page.locator("#deal-banner")
    expect(banner).to_be_visible()
    expect(banner).to_have_attribute("data-state", "live")
    expect(viewer.page.locator("#deal-quantity")).to_have_text("10")
    expect(viewer.page.locator("#deal-remaining")).to_have_text("10")
    expect(viewer.page.locator("#deal-price")).to_have_text("$59.50")
    expect(viewer.page.locator("#deal-original-price")).to_have_text("$79.99")

    # The viewer's countdown runs down.
    expect(viewer.page.locator("#deal-countdown")).to_have_text(re.compile(r"^\d+$"))
    wait_number_below(viewer.page, "#deal-countdown", number(viewer.page, "#deal-countdown"))

    # The viewer buys one and gets the order confirmation.
    buy = viewer.page.locator("#buy-button")
    expect(buy).to_have_attribute("data-state", "ready")
    buy.click()
    expect(viewer.page.locator("#confirm-form")).to_be_visible()
    expect(viewer.page.locator("#reservation-price")).to_have_text("$59.50")
    expect(viewer.page.locator("#payment-ref")).to_have_value("test_ok")
    viewer.page.click("#confirm-button")
    order = viewer.page.locator("#order-confirmation")
    expect(order).to_be_visible()
    expect(order).to_have_attribute("data-status", "paid")
    expect(viewer.page.locator("#order-id")).to_have_text(re.compile(r"\S"))
    expect(viewer.page.locator("#order-total")).to_have_text("$59.50")
    expect(viewer.page.locator("#confirm-form")).to_be_hidden()
    expect(buy).to_have_attribute("data-state", "limit_reached")  # per-user limit 1: bought
    expect(buy).to_be_disabled()
    for tab in (viewer, host):
        expect(tab.page.locator("#deal-remaining")).to_have_text("9")
    expect(host.page.locator("#stats-orders")).to_have_text("1")

    # The moderator deletes a viewer's message: it disappears everywhere.
    spam = chat(viewer, "FIRST!!! follow me for free stuff")
    for tab in (host, moderator):
        expect(message(tab, spam)).to_be_visible()
    deleted = outcome(moderator.page, "#mod-message",
                      message(moderator, spam).locator('button[data-action="delete"]').click)
    assert deleted == "Message deleted.", deleted
    for tab in tabs:
        expect(message(tab, spam)).to_have_count(0)
    expect(moderator.page.locator('#audit-log li[data-action="chat.delete"]')).to_have_count(1)

    # Markup in chat is text on every page, and runs nothing.
    hostile = chat(viewer, XSS)
    kept = chat(viewer, "Do they come in black?")
    chat(host, "Yes! Black and silver, both in this deal.")
    for tab in tabs:
        expect(message(tab, hostile).locator(".chat-text")).to_have_text(XSS)
        expect(message(tab, kept)).to_be_visible()
        assert tab.page.locator("#chat-list img").count() == 0, tab.name
        assert tab.page.evaluate("() => document.querySelectorAll('img[src=\"x\"]').length") == 0, tab.name

    expect(host.page.locator("#stats-chat-per-min")).not_to_have_text("0")  # the host's live stats count chat
    for tab, name in ((viewer, "viewer.png"), (host, "host.png"), (moderator, "moderator.png")):
        tab.screenshot(name)

    # The server restarts; every page reconnects on its own and picks up where it was.
    seq_before = viewer.page.evaluate("() => window.livecorePage.state.client.lastSeq")
    live_server.stop()
    for tab in tabs:
        expect(tab.page.locator("#connection-status")).to_have_attribute("data-state", "reconnecting")
    live_server.start()
    for tab in tabs:
        expect(tab.page.locator("#connection-status")).to_have_attribute("data-state", "live", timeout=45_000)
        expect(tab.page.locator("#connection-status")).to_have_text("live")
    welcome = viewer.page.evaluate("() => window.livecorePage.state.client.welcome")
    assert welcome["seq"] >= seq_before, (welcome, seq_before)
    for tab in tabs:
        expect(tab.page.locator("#show-status")).to_have_attribute("data-state", "live")
        expect(message(tab, hostile)).to_have_count(1)
        expect(message(tab, spam)).to_have_count(0)
    expect(card).to_have_attribute("data-product-id", product)
    expect(banner).to_have_attribute("data-state", "live")
    expect(order).to_be_visible()
    expect(buy).to_have_attribute("data-state", "limit_reached")
    expect(host.page.locator("#host-deal")).to_have_attribute("data-state", "live")
    wait_number_below(viewer.page, "#deal-countdown", number(viewer.page, "#deal-countdown"))
    # Fresh traffic flows both ways on the new connections.
    after = chat(host, "We're back. Nine left!")
    for tab in (viewer, moderator):
        expect(message(tab, after)).to_be_visible()
    reply = chat(viewer, "Still here")
    expect(message(moderator, reply)).to_be_visible()

    for tab in tabs:
        assert tab.dialogs == [], (tab.name, tab.dialogs)
        assert tab.errors == [], (tab.name, tab.errors)
