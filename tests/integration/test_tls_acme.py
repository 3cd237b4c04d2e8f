"""ACME for real (TLS_MODE=acme, natively): Pebble, Let's Encrypt's ACME test
server (Debian's `pebble`), issues a certificate to certbot (Debian's
`certbot`) through the HTTP-01 challenge that nginx serves from its webroot;
nginx then serves it; a forced renewal (`scripts/local renew-certs --force`)
replaces it and certbot's deploy hook reloads nginx while a wss:// socket
stays open and keeps chatting.

Pebble gets its own HTTPS certificate from a throwaway CA (scripts/certs);
certbot trusts it through ACME_CA_BUNDLE. Pebble checks HTTP-01 on the
stack's HTTP_PORT (its `httpPort`), as Let's Encrypt checks port 80.
"""
import asyncio
import json
import os
import socket
import subprocess
import time
import urllib.request

import pytest

from tests.integration.wsclient import new_room, open_chat, recv_message, send_text
from tests.stack import NativeStack, free_port
from tests.tls import client_context, https_get, make_certs, peer_serial


def _wait_port(port: int, proc: subprocess.Popen, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"pebble exited {proc.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"pebble not listening on {port} after {seconds}s")


@pytest.fixture(scope="module")
def acme(tmp_path_factory):
    """Pebble on free ports, pointed at a stack (not started yet) whose HTTP_PORT it validates."""
    tmp = tmp_path_factory.mktemp("acme")
    pebble_certs = make_certs(tmp / "pebble-tls", "localhost", "127.0.0.1")
    stack = NativeStack(workers=1)  # ports picked now; TLS settings added below
    acme_port, mgmt_port = free_port(), free_port()
    config = tmp / "pebble-config.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{acme_port}", "managementListenAddress": f"127.0.0.1:{mgmt_port}",
        "certificate": str(pebble_certs.cert), "privateKey": str(pebble_certs.key),
        "httpPort": stack.ports["HTTP_PORT"], "tlsPort": free_port(),
        "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
    log = open(tmp / "pebble.log", "w")
    # NOSLEEP: no random validation delay; NONCEREJECT=0: no deliberate badNonce errors.
    proc = subprocess.Popen(["pebble", "-config", str(config)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"})
    try:
        _wait_port(acme_port, proc)
        stack.tls = {"TLS_MODE": "acme", "ACME_SERVER": f"https://127.0.0.1:{acme_port}/dir",
                     "ACME_DOMAINS": "localhost", "ACME_EMAIL": "ops@example.com",
                     "ACME_CA_BUNDLE": str(pebble_certs.ca_cert)}
        mgmt = client_context(pebble_certs.ca_cert)
        yield stack, mgmt, mgmt_port, tmp / "pebble.log"
    finally:
        stack.down()
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _pebble_root(mgmt_ctx, mgmt_port: int, path) -> str:
    """Pebble's issuing root (it makes a new one per run), saved as a CA file for clients."""
    with urllib.request.urlopen(f"https://127.0.0.1:{mgmt_port}/roots/0", context=mgmt_ctx, timeout=10) as r:
        path.write_bytes(r.read())
    return str(path)


async def test_pebble_issues_nginx_serves_forced_renewal_reloads_with_a_socket_open(acme, tmp_path):
    stack, mgmt_ctx, mgmt_port, pebble_log = acme
    # First start: nginx answers only the challenge, certbot gets the certificate,
    # its deploy hook reloads nginx into HTTPS. `up` returns when all that is done.
    await asyncio.to_thread(stack.up)
    issued = (stack.state_dir / "log" / "certbot.log").read_text()
    assert "Successfully received certificate" in issued, issued[-2000:]
    # Pebble fetched the HTTP-01 token from nginx, over plain HTTP, with success.
    challenges = [line for line in (stack.state_dir / "log" / "nginx.log").read_text().splitlines()
                  if "GET /.well-known/acme-challenge/" in line]
    assert challenges and all('HTTP/1.1" 200 ' in line for line in challenges), challenges

    ctx = client_context(_pebble_root(mgmt_ctx, mgmt_port, tmp_path / "pebble-root.pem"))
    status, headers, body = https_get(f"{stack.https_url}/", ctx)
    assert status == 200 and headers["strict-transport-security"].startswith("max-age=")
    port = stack.ports["HTTPS_PORT"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as s:
        issuer = dict(x[0] for x in s.getpeercert()["issuer"])
        assert "Pebble" in issuer.get("commonName", ""), issuer
    first = peer_serial("127.0.0.1", port, ctx)

    room = new_room("acme")
    ws, _ = await open_chat(stack.wss_base, room, ssl=ctx)
    try:
        out = await asyncio.to_thread(stack.run_local, "renew-certs", "--force")
        assert "renew done" in out, out
        renewed = (stack.state_dir / "log" / "certbot.log").read_text()
        assert "Congratulations, all renewals succeeded" in renewed or "renewed" in renewed.lower(), renewed[-2000:]
        deadline = time.monotonic() + 15
        while (second := peer_serial("127.0.0.1", port, ctx)) == first:
            assert time.monotonic() < deadline, "nginx still serves the certificate from before the renewal"
            await asyncio.sleep(0.2)
        assert second != first
        # The socket opened before the renewal and reload still chats.
        await send_text(ws, "after renewal")
        await recv_message(ws, "after renewal")
    finally:
        await ws.close()
