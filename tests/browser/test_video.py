"""The host page publishes Chromium's fake camera over WHIP; the viewer page plays it over WHEP,
also again after the server restarts."""

from __future__ import annotations

from playwright.sync_api import Browser, expect

from tests.support import ServerProc, mint

from .helpers import open_tab, page_url, seed_show, wait_number_above

# WebRTC set-up, ICE and the viewer's WHEP retry (every 2-5 s until the host is on air).
VIDEO_TIMEOUT_MS = 30_000
# After a restart both ends first have to notice the old peer connections are dead: ICE
# consent failure on the host (about 10 s), the stall watchdog on the viewer (10 s).
RESUME_TIMEOUT_MS = 45_000


def test_host_camera_plays_on_viewer_page(browser: Browser, live_server: ServerProc) -> None:
    base = live_server.base_url
    show, _ = seed_show(base, title="Camera check", product="Camera check product", price_cents=1000)
    host = open_tab(browser, "host", page_url(base, "/host", show, mint("host", show, "host-cam", "Cam host")))
    viewer = open_tab(browser, "viewer", page_url(base, "/", show))
    for tab in (host, viewer):
        tab.status()
    host.page.click("#show-start")
    expect(viewer.page.locator("#show-status")).to_have_attribute("data-state", "live")
    expect(viewer.page.locator("#video-waiting")).to_be_visible()

    camera = host.page.locator("#publish-video")
    camera.click()
    expect(camera).to_have_attribute("data-state", "live", timeout=VIDEO_TIMEOUT_MS)
    expect(camera).to_have_attribute("aria-pressed", "true")
    expect(host.page.locator("#publish-status")).to_have_attribute("data-state", "live")

    video = viewer.page.locator("#video")
    expect(video).to_have_attribute("data-state", "playing", timeout=VIDEO_TIMEOUT_MS)
    wait_number_above(viewer.page, "#video", "data-frames", 0)
    first = int(video.get_attribute("data-frames") or "0")
    viewer.page.wait_for_function(
        "(n) => Number(document.getElementById('video').dataset.frames) > n + 10", arg=first,
        timeout=VIDEO_TIMEOUT_MS)
    expect(viewer.page.locator("#video-waiting")).to_be_hidden()

    # The server restarts: the host page publishes again on its own, the viewer page plays again.
    old_session = host.page.evaluate("() => window.livecorePage.state.camera.session.location")
    viewer.page.evaluate(
        "() => { window.__videoResets = 0;"
        " document.getElementById('video').addEventListener('emptied', () => { window.__videoResets += 1; }); }")
    live_server.stop()
    live_server.start()
    for tab in (host, viewer):
        tab.status()
    host.page.wait_for_function(
        "(old) => { const s = window.livecorePage.state.camera.session; return s && s.location !== old; }",
        arg=old_session, timeout=RESUME_TIMEOUT_MS)
    expect(camera).to_have_attribute("data-state", "live")
    viewer.page.wait_for_function(
        "() => window.__videoResets > 0 && document.getElementById('video').dataset.state === 'playing'"
        " && Number(document.getElementById('video').dataset.frames) > 10", timeout=RESUME_TIMEOUT_MS)

    # The camera button stops and starts publishing.
    camera.click()
    expect(camera).to_have_attribute("data-state", "off")
    expect(camera).to_have_attribute("aria-pressed", "false")
    camera.click()
    expect(camera).to_have_attribute("data-state", "live", timeout=VIDEO_TIMEOUT_MS)

    # The show ends: the host's camera goes off, the viewer stops playing and says why.
    host.page.click("#show-end")
    expect(camera).to_have_attribute("data-state", "off")
    expect(viewer.page.locator("#show-status")).to_have_attribute("data-state", "ended")
    expect(video).to_have_attribute("data-state", "idle")
    expect(viewer.page.locator("#video-waiting")).to_have_text("This show has ended. Thanks for watching!")

    for tab in (host, viewer):
        assert tab.dialogs == [], (tab.name, tab.dialogs)
        assert tab.errors == [], (tab.name, tab.errors)
