"""Chromium loads the HTTPS page and chats over wss://, trusting the test CA the
way a user's browser would after importing it: the CA sits in the NSS database
of the browser's HOME (tests/tls.py nss_home), no certificate error is ignored.
An untrusted certificate would fail page.goto with net::ERR_CERT_AUTHORITY_INVALID."""
import uuid

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect, sync_playwright

from tests.integration.test_browser import CHROMIUM_ARGS, UI_TIMEOUT_MS
from tests.tls import nss_home


def _goto(page, url: str, attempts: int = 3):
    """page.goto, again (bounded) when Chromium aborts with ERR_NETWORK_CHANGED: other
    processes on the machine (Docker creating bridges) change interfaces under it.
    Any other error, a certificate error above all, fails at once."""
    for attempt in range(attempts):
        try:
            return page.goto(url)
        except PlaywrightError as exc:
            if "ERR_NETWORK_CHANGED" not in str(exc) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@pytest.mark.browser
def test_browser_chats_over_wss_trusting_the_test_ca(tls_stack, tls_certs, tmp_path):
    home = nss_home(tmp_path / "home", tls_certs.ca_cert)
    room_url = f"{tls_stack.https_url}/chat/tls-browser-{uuid.uuid4().hex[:8]}/"
    text = f"hello over wss {uuid.uuid4().hex[:6]}"
    sockets = []
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path="/usr/bin/chromium", headless=True,
            args=CHROMIUM_ARGS, env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        )
        try:
            pages = []
            for _ in range(2):
                page = context.new_page()
                page.on("websocket", lambda ws: sockets.append(ws.url))
                response = _goto(page, room_url)
                assert response.status == 200 and page.evaluate("location.protocol") == "https:"
                expect(page.locator("#status")).to_have_attribute("data-state", "open", timeout=UI_TIMEOUT_MS)
                pages.append(page)
            # The page itself came over HTTP/2 (the WebSocket over HTTP/1.1 Upgrade).
            assert pages[0].evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol") == "h2"
            sender, receiver = pages
            sender.fill("#message-input", text)
            sender.click("#send-button")
            expect(receiver.locator("#messages li", has_text=text)).to_be_visible(timeout=UI_TIMEOUT_MS)
        finally:
            context.close()
    assert sockets and all(url.startswith(f"wss://localhost:{tls_stack.ports['HTTPS_PORT']}/ws/chat/")
                           for url in sockets), sockets
