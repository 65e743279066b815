"""Browser tests: Debian's Chromium, driven by Playwright (sync API), against a real
`livecore serve` process of their own.

The sync API marks its event loop as the thread's running loop for as long as
Playwright is started, which would break pytest-asyncio fixtures running in
between; so Playwright lives only inside the function-scoped `browser` fixture,
and these tests use no async fixtures.

The server is dedicated to this package (same Redis, PostgreSQL and key prefix
as the shared `server`, so the two form one cluster) because a test restarts it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from playwright import sync_api

from livecore.embedded import free_port
from tests.support import Backends, ServerProc, server_env

from .helpers import TIMEOUT_MS

# Debian's chromium (/usr/bin/chromium): Playwright never downloads a browser here.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]

# Generous waits (the default is 5 s): CI machines are slow, and nothing here asserts on
# timing. Pages get the same through `context.set_default_timeout` in helpers.open_tab.
sync_api.expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def live_server(backends: Backends, prefix: str) -> Iterator[ServerProc]:
    proc = ServerProc(free_port(), server_env(backends.redis_url, backends.database_url, prefix)).start()
    yield proc
    proc.stop()


@pytest.fixture
def browser(live_server: ServerProc) -> Iterator[sync_api.Browser]:
    if CHROMIUM is None:
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
