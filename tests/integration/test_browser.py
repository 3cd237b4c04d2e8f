"""A real user in a real browser: log in through nginx, open one room in two
pages, send from one, see it in the other (Playwright + Debian's Chromium)."""
import json
import time
import uuid

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.stack import ROOT

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
UI_TIMEOUT_MS = 20_000


@pytest.mark.browser
def test_logged_in_user_chats_between_two_pages(native_stack, tmp_path):
    username, password = f"bt{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    native_stack.manage(
        "shell", "-c",
        "import os; from django.contrib.auth import get_user_model; "
        "get_user_model().objects.create_user(os.environ['BT_USER'], password=os.environ['BT_PASS'])",
        env={"BT_USER": username, "BT_PASS": password},
    )
    room = f"browser-{uuid.uuid4().hex[:8]}"
    room_path = f"/chat/{room}/"
    text = f"hello from the browser {uuid.uuid4().hex[:6]}"
    results = ROOT / "test-results"
    results.mkdir(exist_ok=True)

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path="/usr/bin/chromium", headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            sender = context.new_page()
            sent_frames, received_frames = [], []
            sender.on("websocket", lambda ws: (ws.on("framesent", lambda f: sent_frames.append(f)),
                                               ws.on("framereceived", lambda f: received_frames.append(f))))
            sender.goto(f"{native_stack.http_url}/accounts/login/?next={room_path}")
            sender.fill("#id_username", username)
            sender.fill("#id_password", password)
            sender.click("form button[type=submit]")
            sender.wait_for_url(f"**{room_path}", timeout=UI_TIMEOUT_MS)
            expect(sender.locator("#status")).to_have_attribute("data-state", "open", timeout=UI_TIMEOUT_MS)
            expect(sender.locator("#status")).to_contain_text(username)

            receiver = context.new_page()  # same browser profile: same logged-in user
            receiver.goto(f"{native_stack.http_url}{room_path}")
            expect(receiver.locator("#status")).to_have_attribute("data-state", "open", timeout=UI_TIMEOUT_MS)

            sender.fill("#message-input", text)
            sender.click("#send-button")
            arrived = receiver.locator("#messages li", has_text=text)
            expect(arrived).to_be_visible(timeout=UI_TIMEOUT_MS)
            expect(arrived.locator(".user")).to_have_text(username)
            expect(sender.locator("#messages li", has_text=text)).to_be_visible(timeout=UI_TIMEOUT_MS)
            # The page sends with a client id (idempotent resend) and the server acknowledges it.
            sent = [json.loads(f) for f in sent_frames if text in f]
            assert len(sent) == 1 and sent[0].get("client_msg_id"), sent_frames
            cid = sent[0]["client_msg_id"]
            deadline = time.monotonic() + 10
            while not any('"chat.ack"' in f for f in received_frames) and time.monotonic() < deadline:
                sender.wait_for_timeout(50)  # lets Playwright deliver the frame events
            acks = [json.loads(f) for f in received_frames if '"chat.ack"' in f]
            assert [a["client_msg_id"] for a in acks] == [cid], received_frames
            receiver.screenshot(path=str(results / "browser-chat.png"), full_page=True)
        finally:
            context.close()


# Every text the status line ever shows, and whether a stale "not sent" line is
# on the page: recorded by the page itself, so no transient state is missed.
STATUS_RECORDER = """
window.__statuses = [];
document.addEventListener("DOMContentLoaded", () => {
  const el = document.getElementById("status");
  if (!el) return;
  window.__statuses.push(el.textContent);
  new MutationObserver(() => window.__statuses.push(el.textContent))
    .observe(el, {childList: true, characterData: true, subtree: true});
});
"""


@pytest.mark.browser
def test_reconnect_status_and_unsent_notice(native_stack, tmp_path):
    """A worker restart (close 1012) and an outage, as the page shows them: never
    "reconnecting in 0 s…", and the "message not sent" line goes once the socket is back.

    Playwright's WebSocket routing stands in for the outage: while `down` is set,
    the page's handshakes are refused (close 1011) without reaching the stack;
    otherwise each socket is passed through to the real server.
    """
    room = f"browser-{uuid.uuid4().hex[:8]}"
    live, down = [], {"on": False}

    def route(ws):
        if down["on"]:
            ws.close(code=1011, reason="test outage")
            return
        ws.connect_to_server()
        live.append(ws)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.add_init_script(STATUS_RECORDER)
            page.route_web_socket("**/ws/chat/**", route)
            page.goto(f"{native_stack.http_url}/chat/{room}/")
            status = page.locator("#status")
            expect(status).to_have_attribute("data-state", "open", timeout=UI_TIMEOUT_MS)

            down["on"] = True
            live[-1].close(code=1012, reason="worker restarting")  # what a draining worker sends
            expect(status).to_have_attribute("data-state", "reconnecting", timeout=UI_TIMEOUT_MS)
            page.fill("#message-input", "typed during the outage")
            page.click("#send-button")
            unsent = page.locator("#messages li.notice", has_text="message not sent")
            expect(unsent).to_have_count(1, timeout=UI_TIMEOUT_MS)

            down["on"] = False  # the next retry (backoff under a few seconds) gets through
            expect(status).to_have_attribute("data-state", "open", timeout=UI_TIMEOUT_MS)
            statuses = page.evaluate("window.__statuses")
            assert any(s.startswith("reconnecting") for s in statuses), statuses
            assert not [s for s in statuses if " in 0 s" in s], statuses
            expect(unsent).to_have_count(0, timeout=UI_TIMEOUT_MS)
            # Queued with its client id while down, sent (once) when the socket is back.
            sent = page.locator("#messages li:not(.notice)", has_text="typed during the outage")
            expect(sent).to_have_count(1, timeout=UI_TIMEOUT_MS)
        finally:
            browser.close()
