"""Bad input against the real native stack, through nginx (the only public entry).

Why a live stack: the limits that matter most sit in front of the app (daphne's
frame limit, nginx's limit_conn, client_max_body_size, X-Forwarded-For
overwrite, log redaction), so only real processes show what a client sees.
Each test asserts the refusal a client gets and that the stack keeps serving;
the module ends by checking every worker is still the same live process and
prints the figures (inputs tried, refusals by kind, crashes).
"""
import asyncio
import json
import re
import secrets
import time

import pytest
import requests
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.security.figures import Figures
from tests.stack import NativeStack

pytestmark = [pytest.mark.slow]

MAX_CONN_PER_IP = 12
AUTH_RECHECK_SECONDS = 2  # CHAT_AUTH_RECHECK_SECONDS: a revoked token's open socket closes within this
TIMEOUT = 10
GOOD_ORIGIN = "http://localhost:8080"
FIGURES = Figures("live stack")


@pytest.fixture(scope="module")
def stack():
    # A small limit_conn keeps the socket-per-IP test cheap, a short credentials recheck the
    # revocation test; everything else is the default.
    with NativeStack(workers=2, env={"NGINX_MAX_CONN_PER_IP": str(MAX_CONN_PER_IP),
                                     "CHAT_AUTH_RECHECK_SECONDS": str(AUTH_RECHECK_SECONDS)}) as s:
        s.start_pids = {i: s.pid("ws", i) for i in (1, 2)}
        s.start_pids["web"] = s.pid("web")
        yield s
        FIGURES.report()


def ws_url(stack, room, query=""):
    return f"{stack.ws_base}/ws/chat/{room}/" + (f"?{query}" if query else "")


async def open_ws(url, origin=GOOD_ORIGIN, headers=None, **kw):
    """A client socket past its welcome frame (bounded handshake and wait)."""
    ws = await connect(url, origin=origin, additional_headers=headers or {}, open_timeout=TIMEOUT,
                       max_size=2**22, **kw)
    welcome = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    assert welcome["type"] == "chat.welcome", welcome
    return ws


async def close_code(ws):
    """Read until the server closes; the close code it sent."""
    deadline = time.monotonic() + TIMEOUT
    with pytest.raises(ConnectionClosed) as info:
        while time.monotonic() < deadline:
            await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
    return info.value.rcvd.code if info.value.rcvd else None


async def refused_with(url, origin=GOOD_ORIGIN, headers=None):
    """Close code of a socket the server accepts only to close (4400/4401/4403)."""
    async with connect(url, origin=origin, additional_headers=headers or {}, open_timeout=TIMEOUT) as ws:
        return await close_code(ws)


async def still_works(stack, room):
    """Two fresh clients in one room: a message sent by one reaches the other."""
    a = await open_ws(ws_url(stack, room))
    b = await open_ws(ws_url(stack, room))
    try:
        await a.send(json.dumps({"message": "still serving"}))
        for _ in range(20):
            frame = json.loads(await asyncio.wait_for(b.recv(), TIMEOUT))
            if frame.get("message") == "still serving":
                return
        pytest.fail("message did not reach the other client")
    finally:
        await a.close()
        await b.close()


def logs_text(stack):
    return "\n".join(p.read_text(errors="replace") for p in sorted((stack.state_dir / "log").glob("*.log")))


def wait_for_log(stack, pattern, deadline=TIMEOUT):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if re.search(pattern, logs_text(stack)):
            return True
        time.sleep(0.1)
    return False


# --- WebSocket ----------------------------------------------------------------

async def test_oversized_frame_closes_1009_and_worker_survives(stack):
    limit = int(stack.settings["WS_MAX_MESSAGE_BYTES"])
    for size in (limit + 1, limit * 4):
        FIGURES.tried("oversized frame")
        ws = await open_ws(ws_url(stack, "big"))
        await ws.send("x" * size)
        assert await close_code(ws) == 1009
        FIGURES.refused("close 1009")
    await still_works(stack, "big")


async def test_flood_gets_rate_limited_then_4429(stack):
    burst = int(stack.settings["CHAT_RATE_BURST"])
    violations = int(stack.settings["CHAT_RATE_MAX_VIOLATIONS"])
    ws = await open_ws(ws_url(stack, "flood"))
    n = burst + violations + 30
    for i in range(n):
        FIGURES.tried("flood frame")
        try:
            await ws.send(json.dumps({"message": f"f{i}"}))
        except ConnectionClosed:
            break
    kinds = {"chat.message": 0, "rate_limited": 0}
    code = None
    try:
        for _ in range(n + 1):
            frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            kinds[frame["type"] if frame["type"] == "chat.message" else frame["code"]] += 1
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else None
    assert kinds["chat.message"] >= burst and kinds["rate_limited"] == violations, kinds
    assert code == 4429
    for _ in range(kinds["rate_limited"]):
        FIGURES.refused("rate_limited")
    FIGURES.refused("close 4429")
    await still_works(stack, "flood")


async def test_too_many_sockets_per_ip_get_429_while_others_keep_working(stack):
    held = []
    try:
        # Every socket is one nginx connection; open up to the limit from 127.0.0.1.
        for _ in range(MAX_CONN_PER_IP):
            held.append(await open_ws(ws_url(stack, "conn")))
        FIGURES.tried("socket over limit_conn")
        with pytest.raises(InvalidStatus) as info:
            await open_ws(ws_url(stack, "conn"))
        assert info.value.response.status_code == 429
        FIGURES.refused("HTTP 429 limit_conn")
        # Another client address is a different limit_conn key: it still gets in and talks
        # to the held sockets (loopback is a /8, so 127.0.0.2 is a distinct client).
        other = await open_ws(ws_url(stack, "conn"), local_addr=("127.0.0.2", 0))
        await other.send(json.dumps({"message": "from another ip"}))
        for _ in range(20):
            frame = json.loads(await asyncio.wait_for(held[0].recv(), TIMEOUT))
            if frame.get("message") == "from another ip":
                break
        else:
            pytest.fail("held socket never received the other client's message")
        await other.close()
    finally:
        for ws in held:
            await ws.close()


async def test_foreign_origin_refused_4403_with_log_line(stack):
    for origin in ("http://evil.example", "null", "http://localhost.evil.example:8080"):
        FIGURES.tried("foreign origin")
        assert await refused_with(ws_url(stack, "origin"), origin=origin) == 4403
        FIGURES.refused("close 4403")
    assert wait_for_log(stack, r"origin refused.*evil\.example"), "no log line says why the origin was refused"


async def test_bad_room_and_bad_token_refused(stack):
    for room in ("a" * 65, "bad%20room", "%F0%9F%92%A9", ".."):
        FIGURES.tried("bad room")
        assert await refused_with(ws_url(stack, room)) == 4400
        FIGURES.refused("close 4400")
    for token in ("x", "A" * 43, "A" * 300):
        FIGURES.tried("bad token")
        assert await refused_with(ws_url(stack, "tok", f"token={token}")) == 4401
        FIGURES.refused("close 4401")


async def test_xff_spoofing_has_no_effect(stack):
    """The app sees nginx's $remote_addr, never a client-sent X-Forwarded-For."""
    spoofed = "203.0.113.77"
    FIGURES.tried("spoofed X-Forwarded-For")
    code = await refused_with(ws_url(stack, "xff"), origin="http://spoof-check.example",
                              headers={"X-Forwarded-For": spoofed, "X-Real-IP": spoofed})
    assert code == 4403
    assert wait_for_log(stack, r"origin refused.*spoof-check\.example.*client=127\.0\.0\.1"), \
        "refusal log line does not show the real client address"
    assert spoofed not in logs_text(stack).replace(f'"{spoofed}"', ""), "the spoofed address reached a log as the client"
    FIGURES.refused("XFF ignored")


def issue_token(stack):
    username = f"sec{secrets.token_hex(4)}"
    stack.manage("shell", "-c",
                 f"from django.contrib.auth import get_user_model; get_user_model().objects.create_user({username!r})")
    return username, stack.manage("issue_token", username).stdout.strip()


async def test_tokens_never_reach_any_log(stack):
    _, token = issue_token(stack)
    bogus = "leakcheck" + secrets.token_urlsafe(24)
    FIGURES.tried("token in query string")
    ws = await open_ws(ws_url(stack, "tokens", f"token={token}"))
    await ws.send(json.dumps({"message": "authenticated"}))
    assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["type"] == "chat.message"
    await ws.close()
    # Refused tokens, a repeated parameter and a percent-encoded name must not leak either.
    for query in (f"token={bogus}", f"after=0&token={bogus}&x=1", f"token={bogus}&token={bogus}2",
                  f"%74oken={bogus}3"):
        FIGURES.tried("token in query string")
        try:
            await refused_with(ws_url(stack, "tokens", query))
        except ConnectionClosed:
            pass
    # The same on plain HTTP pages (gunicorn's access log records the request line).
    requests.get(f"{stack.http_url}/?token={bogus}4", timeout=TIMEOUT)
    assert wait_for_log(stack, r"REDACTED"), "nginx access log shows no redacted request"
    text = logs_text(stack)
    assert token not in text, "a valid API token was written to a log"
    leaks = [line[:160] for line in text.splitlines() if bogus in line]
    assert leaks == [], "token text reached the logs:\n" + "\n".join(leaks)
    FIGURES.refused("token redacted")


async def test_a_revoked_tokens_open_socket_is_closed_4401(stack):
    """A leaked token revoked with `manage.py revoke_token` while its socket is open
    through nginx: the worker closes that socket with 4401 within the recheck and says
    why in its log; a socket with another live token stays open."""
    _, token = issue_token(stack)
    _, other = issue_token(stack)
    FIGURES.tried("token revoked while its socket is open")
    ws = await open_ws(ws_url(stack, "revoked", f"token={token}"))
    bystander = await open_ws(ws_url(stack, "revoked", f"token={other}"))
    stack.manage("revoke_token", token[:8])
    started = time.monotonic()  # the next check after the revocation closes it
    assert await close_code(ws) == 4401
    assert time.monotonic() - started < AUTH_RECHECK_SECONDS + 3, "closed later than the recheck allows"
    assert wait_for_log(stack, r"ws credentials ended \(token revoked\): closing with 4401"), \
        "no log line says why the socket was closed"
    await bystander.send(json.dumps({"message": "still here"}))
    assert json.loads(await asyncio.wait_for(bystander.recv(), TIMEOUT))["message"] == "still here"
    await bystander.close()
    FIGURES.refused("close 4401 token revoked")


# --- HTTP ---------------------------------------------------------------------

def test_token_endpoint_bad_methods_csrf_and_body_size(stack):
    s = requests.Session()
    username, _ = issue_token(stack)
    stack.manage("shell", "-c", "from django.contrib.auth import get_user_model; "
                 f"u = get_user_model().objects.get(username={username!r}); u.set_password('pw-not-secret-1'); u.save()")
    login = s.get(f"{stack.http_url}/accounts/login/", timeout=TIMEOUT)
    assert login.status_code == 200
    csrf = s.cookies["csrftoken"]
    r = s.post(f"{stack.http_url}/accounts/login/", timeout=TIMEOUT, allow_redirects=False,
               data={"username": username, "password": "pw-not-secret-1", "csrfmiddlewaretoken": csrf},
               headers={"Referer": f"{stack.http_url}/accounts/login/"})
    assert r.status_code == 302, r.status_code
    csrf = s.cookies["csrftoken"]
    url = f"{stack.http_url}/api/tokens/"

    for method in ("PUT", "PATCH", "DELETE"):
        FIGURES.tried("HTTP bad method")
        r = s.request(method, url, headers={"X-CSRFToken": csrf}, timeout=TIMEOUT)
        assert r.status_code == 405, (method, r.status_code)
        FIGURES.refused("HTTP 405")
    FIGURES.tried("HTTP POST without CSRF")
    r = s.post(url, data=b"{}", headers={"Content-Type": "application/json", "X-CSRFToken": "wrong" * 7},
               timeout=TIMEOUT)
    assert r.status_code == 403
    r = requests.post(url, cookies={"sessionid": s.cookies["sessionid"]}, json={}, timeout=TIMEOUT)
    assert r.status_code == 403
    FIGURES.refused("HTTP 403 CSRF")
    FIGURES.tried("HTTP oversized body")
    r = s.post(url, data=b"x" * (2 * 1024 * 1024), headers={"X-CSRFToken": csrf}, timeout=TIMEOUT)
    assert r.status_code == 413
    FIGURES.refused("HTTP 413")
    for body in (b"not json", b"[1]", json.dumps({"name": "x" * 500}).encode(), b"\xff\xfe",
                 json.dumps({"ttl_hours": "soon"}).encode(), json.dumps({"ttl_hours": -5}).encode()):
        FIGURES.tried("HTTP bad body")
        r = s.post(url, data=body, headers={"X-CSRFToken": csrf, "Content-Type": "application/json"},
                   timeout=TIMEOUT)
        assert r.status_code == 400, (body[:30], r.status_code, r.text[:200])
        FIGURES.refused("HTTP 400")
    r = s.post(url, json={"name": "ok"}, headers={"X-CSRFToken": csrf}, timeout=TIMEOUT)
    assert r.status_code in (200, 201), (r.status_code, r.text[:200])
    FIGURES.accepted()


def test_chat_pages_refuse_bad_input_without_5xx(stack):
    for path, method in (("/chat/" + "a" * 65 + "/", "GET"), ("/chat/bad%20room/", "GET"),
                         ("/chat/lobby/", "POST"), ("/chat/lobby/", "DELETE"), ("/api/tokens/", "GET"),
                         ("/api/tokens/nope/", "GET"), ("/%00/", "GET"), ("/chat/%F0%9F/", "GET")):
        FIGURES.tried("HTTP chat endpoint")
        r = requests.request(method, stack.http_url + path, timeout=TIMEOUT, allow_redirects=False)
        assert 300 <= r.status_code < 500, (method, path, r.status_code)
        FIGURES.refused(f"HTTP {r.status_code}")
    r = requests.get(stack.http_url + "/", headers={"Host": "evil.example"}, timeout=TIMEOUT)
    assert r.status_code == 400, r.status_code
    FIGURES.refused("HTTP 400 bad Host")


def test_zz_every_process_survived(stack):
    """Runs last (name order): same PIDs as at start, every health endpoint answers."""
    for i in (1, 2):
        assert stack.pid("ws", i) == stack.start_pids[i], f"ws worker {i} restarted or died"
        url = stack.ws_worker_urls[i - 1].replace("ws://", "http://") + "/healthz"
        r = requests.get(url, timeout=TIMEOUT)
        assert r.status_code == 200 and r.json()["status"] == "ok"
    assert stack.pid("web") == stack.start_pids["web"]
    assert requests.get(f"{stack.web_url}/healthz", timeout=TIMEOUT).status_code == 200
    assert requests.get(f"{stack.http_url}/nginx-health", timeout=TIMEOUT).status_code == 200
    lines = logs_text(stack).splitlines()
    # Each crash with the log line before it (what failed) and its last line (the exception).
    crashes = []
    for i, line in enumerate(lines):
        if re.search(r"Traceback|CRITICAL|worker .*(exited|killed)|segfault", line):
            tail = next((t for t in lines[i + 1:i + 80] if t and not t.startswith((" ", "Traceback"))), "")
            crashes.append(f"{lines[i - 1][:200] if i else ''} | {tail[:200]}")
    FIGURES.crashes = len(crashes)
    assert crashes == [], "\n".join(crashes[:20])
