"""HTTPS and wss:// on one host (TLS_MODE=files): nginx terminates TLS with a
certificate from `make tls_certs`, and clients trust only that test CA.

One native TLS stack (`tls_stack` in tests/conftest.py, 2 ws workers),
shared with the browser test. What a user and an operator
see: HTTPS pages over HTTP/2, chat over wss:// across both workers, the HTTP
port redirecting, HSTS only with TLS, Django treating requests as secure
(CSRF passes for the HTTPS origin, fails for a foreign one), Mozilla
intermediate protocols/ciphers, a certificate swap picked up by
`reload-nginx` while a wss:// socket stays open, and a clear error naming the
file when the certificate is missing.
"""
import asyncio
import re
import shutil
import ssl
import uuid

import pytest

from tests.integration.wsclient import new_room, open_chat, recv_message, send_text
from tests.stack import NativeStack, StackError
from tests.tls import client_context, handshake, https_get, make_certs, peer_serial


def test_https_page_over_http2_with_hsts(tls_stack, tls_ctx, tls_certs):
    with handshake("127.0.0.1", tls_stack.ports["HTTPS_PORT"], client_context(tls_certs.ca_cert, ["h2", "http/1.1"])) as s:
        assert s.selected_alpn_protocol() == "h2", "pages must be offered over HTTP/2"
        assert s.version() in ("TLSv1.2", "TLSv1.3")
    status, headers, body = https_get(f"{tls_stack.https_url}/", tls_ctx)
    assert status == 200 and b"<html" in body
    # Exactly one HSTS header (nginx's; Django's copy is hidden), with Django's max-age.
    assert headers["strict-transport-security"] == f"max-age={tls_stack.settings['DJANGO_HSTS_SECONDS']}"
    # Django sees the request as secure: its cookies carry Secure.
    assert any("csrftoken=" in c and "Secure" in c for c in headers["_set_cookie_list"]), headers
    assert tls_stack.settings["DJANGO_TLS"] == "true", "TLS_MODE=files must set DJANGO_TLS=true"


def test_http_redirects_to_https_except_acme_and_probe(tls_stack, tls_ctx):
    port = tls_stack.ports["HTTPS_PORT"]
    status, headers, _ = https_get(f"{tls_stack.http_url}/chat/lobby/?x=1", tls_ctx)
    assert status == 301
    assert headers["location"] == f"https://127.0.0.1:{port}/chat/lobby/?x=1"
    assert "strict-transport-security" not in headers, "no HSTS over plain HTTP"
    # The WebSocket path too: ws:// is never served in clear once TLS is on.
    status, headers, _ = https_get(f"{tls_stack.http_url}/ws/chat/lobby/", tls_ctx)
    assert status == 301 and headers["location"].startswith("https://")
    # ACME HTTP-01 challenges are answered over plain HTTP from the webroot.
    token = uuid.uuid4().hex
    challenge = tls_stack.state_dir / "acme" / ".well-known" / "acme-challenge"
    challenge.mkdir(parents=True, exist_ok=True)
    (challenge / token).write_text("key-authorization")
    status, _, body = https_get(f"{tls_stack.http_url}/.well-known/acme-challenge/{token}", tls_ctx)
    assert (status, body) == (200, b"key-authorization")
    status, _, _ = https_get(f"{tls_stack.http_url}/nginx-health", tls_ctx)
    assert status == 200


def test_no_hsts_without_tls(native_stack):
    """The plain stack (TLS_MODE=off, as behind an external TLS load balancer) is unchanged."""
    status, headers, _ = https_get(f"{native_stack.http_url}/", None)
    assert status == 200
    assert "strict-transport-security" not in headers
    assert not (native_stack.state_dir / "nginx" / "tls" / "server-tls.conf").exists()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_mozilla_intermediate_protocols_and_ciphers(tls_stack, tls_certs):
    port = tls_stack.ports["HTTPS_PORT"]
    old = client_context(tls_certs.ca_cert)
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        handshake("127.0.0.1", port, old).close()
    # TLS 1.2 with a static-RSA / CBC suite (not in the intermediate list): refused.
    weak = client_context(tls_certs.ca_cert)
    weak.maximum_version = ssl.TLSVersion.TLSv1_2
    weak.set_ciphers("AES128-SHA:AES256-SHA")
    with pytest.raises(ssl.SSLError):
        handshake("127.0.0.1", port, weak).close()
    tls12 = client_context(tls_certs.ca_cert)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with handshake("127.0.0.1", port, tls12) as s:
        assert s.version() == "TLSv1.2" and s.cipher()[0].startswith("ECDHE-")


def _login_form(tls_stack, tls_ctx):
    status, headers, body = https_get(f"{tls_stack.https_url}/accounts/login/", tls_ctx)
    assert status == 200
    cookie = next(c for c in headers["_set_cookie_list"] if c.startswith("csrftoken="))
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1).decode()
    return cookie.split(";", 1)[0], token


def test_csrf_passes_for_the_https_origin_and_fails_for_a_foreign_one(tls_stack, tls_ctx):
    username, password = f"tls{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    tls_stack.manage("shell", "-c",
                     "import os; from django.contrib.auth import get_user_model; "
                     "get_user_model().objects.create_user(os.environ['U'], password=os.environ['P'])",
                     env={"U": username, "P": password})
    origin = tls_stack.https_url
    cookie, token = _login_form(tls_stack, tls_ctx)
    form = f"csrfmiddlewaretoken={token}&username={username}&password={password}".encode()
    headers = {"Cookie": cookie, "Origin": origin, "Referer": f"{origin}/accounts/login/",
               "Content-Type": "application/x-www-form-urlencoded"}
    status, resp_headers, _ = https_get(f"{origin}/accounts/login/", tls_ctx, headers=headers, method="POST", body=form)
    assert status == 302, "login over HTTPS from the site's own origin must pass CSRF"
    assert any(c.startswith("sessionid=") and "Secure" in c for c in resp_headers["_set_cookie_list"])

    cookie, token = _login_form(tls_stack, tls_ctx)
    form = f"csrfmiddlewaretoken={token}&username={username}&password={password}".encode()
    for foreign in ("https://evil.example", f"http://localhost:{tls_stack.ports['HTTPS_PORT']}"):
        status, _, body = https_get(f"{origin}/accounts/login/", tls_ctx, method="POST", body=form, headers={
            **headers, "Cookie": cookie, "Origin": foreign, "Referer": f"{foreign}/"})
        assert status == 403, f"Origin {foreign} must fail CSRF, got {status}"


async def _sockets_on_both_workers(base, room, ssl_ctx, attempts=30):
    """wss:// sockets through nginx until one sits on each of the 2 workers."""
    by_worker, spare = {}, []
    for _ in range(attempts):
        ws, welcome = await open_chat(base, room, ssl=ssl_ctx)
        if welcome["worker"] in by_worker:
            spare.append(ws)
        else:
            by_worker[welcome["worker"]] = ws
        if len(by_worker) == 2:
            break
    for ws in spare:
        await ws.close()
    assert len(by_worker) == 2, f"{attempts} wss:// sockets reached only {list(by_worker)}"
    return list(by_worker.values())


async def test_wss_chat_spans_both_workers(tls_stack, tls_ctx):
    room = new_room("tls")
    a, b = await _sockets_on_both_workers(tls_stack.wss_base, room, tls_ctx)
    try:
        await send_text(a, "over wss from a")
        await recv_message(b, "over wss from a")
        await send_text(b, "over wss from b")
        await recv_message(a, "over wss from b")
    finally:
        await a.close()
        await b.close()


async def test_certificate_swap_reloads_nginx_and_keeps_open_sockets(tls_stack, tls_certs, tls_ctx):
    """Operator replaces the files (`make tls_certs` again, or a real renewal), runs reload-nginx."""
    port = tls_stack.ports["HTTPS_PORT"]
    before = peer_serial("127.0.0.1", port, tls_ctx)
    room = new_room("tls-swap")
    a, b = await _sockets_on_both_workers(tls_stack.wss_base, room, tls_ctx)
    try:
        await asyncio.to_thread(make_certs, tls_certs.dir, force=True)
        await asyncio.to_thread(tls_stack.reload_nginx)
        deadline = asyncio.get_running_loop().time() + 10
        while (after := peer_serial("127.0.0.1", port, tls_ctx)) == before:
            assert asyncio.get_running_loop().time() < deadline, "nginx still serves the old certificate"
            await asyncio.sleep(0.2)
        assert after != before
        # Sockets opened before the reload still carry the chat both ways.
        await send_text(a, "after the swap")
        await recv_message(b, "after the swap")
        await send_text(b, "and back")
        await recv_message(a, "and back")
    finally:
        await a.close()
        await b.close()


def test_missing_certificate_stops_with_an_error_naming_the_file(tmp_path):
    empty = tmp_path / "no-tls_certs"
    empty.mkdir()
    stack = NativeStack(workers=1, tls={"TLS_MODE": "files", "TLS_CERT_DIR": str(empty)},
                        state_dir=tmp_path / "state")
    try:
        with pytest.raises(StackError) as err:
            stack.up("nginx")  # nginx checks before anything starts
        assert f"{empty}/localhost.crt" in str(err.value)
        assert "TLS_CERT_DIR" in str(err.value)
        assert stack.pid("nginx") is None, "nginx must not be running (nor restarting)"
    finally:
        stack.down()
        shutil.rmtree(tmp_path / "state", ignore_errors=True)
