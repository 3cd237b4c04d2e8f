"""TLS in the compose stack (docker-compose.tls.yml, TLS_MODE=files), on the
same project as test_compose_stack.py: these tests run after it (file order)
and before test_down_v_leaves_nothing (moved last by conftest.py).

The switch is what an operator does: set TLS_MODE=files in .env and
`make up` again. web and ws are recreated with DJANGO_TLS=true, nginx gets
the HTTPS listener. It starts with an EMPTY certificate directory, to see the
error that names the path (and no restart loop), then `make certs` writes the
files and nginx's watcher turns HTTPS on without a restart. Leaves: the stack
up with TLS, ws=2.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
import yaml

from tests.compose.compose_chat import Client
from tests.compose.composectl import FIGURES, REPO, free_port, run, set_env_values
from tests.tls import client_context, handshake, https_get, make_certs, peer_serial

CERT_IN_CONTAINER = "/etc/nginx/certs/localhost.crt"


@pytest.fixture(scope="module")
def tls(project, tmp_path_factory):
    """Switch the shared project to TLS_MODE=files with an empty certificate dir."""
    cert_dir = tmp_path_factory.mktemp("compose-certs")
    cert_dir.chmod(0o755)  # nginx (uid 101) reads it through the bind mount
    https_port = free_port()
    set_env_values(project.env_file, {
        "TLS_MODE": "files", "TLS_CERT_DIR": str(cert_dir), "HTTPS_PORT": str(https_port),
        "TLS_WATCH_INTERVAL": "1",
    })
    project.files = ["docker-compose.tls.yml"]
    return {"dir": cert_dir, "port": https_port, "url": f"https://localhost:{https_port}"}


def _nginx_health(project) -> tuple[int, bytes]:
    """(status, body) of /nginx-health on the HTTP port; (0, error) while nginx is not listening yet."""
    try:
        status, _, body = https_get(f"{project.base_url()}/nginx-health", None)
    except OSError as exc:  # the published port resets until the container listens
        return 0, str(exc).encode()
    return status, body


def test_plain_stack_sends_no_hsts(project):
    """Before the switch (TLS_MODE=off, as behind an external TLS load balancer)."""
    if not project.container_ids("nginx"):  # this file run alone (-k tls): start the plain stack
        project.compose("up", "-d", "--wait", "--scale", "ws=2", timeout=900)
    status, headers, _ = https_get(f"{project.base_url()}/", None)
    assert status == 200 and "strict-transport-security" not in headers


def test_tls_compose_files_validate(project, tls):
    cfg = json.loads(project.compose("config", "--format", "json", timeout=60).stdout)
    nginx = cfg["services"]["nginx"]
    assert {(p["target"], p["published"]) for p in nginx["ports"]} == {(8080, str(project.http_port)),
                                                                       (8443, str(tls["port"]))}
    assert {v["target"]: v["source"] for v in nginx["volumes"]}["/etc/nginx/certs"] == str(tls["dir"])
    for app in ("web", "ws"):
        assert cfg["services"][app]["environment"]["DJANGO_TLS"] == "true"
    # The ACME variant (certbot service) also validates.
    files = ["-f", "docker-compose.yml", "-f", "docker-compose.tls.yml", "-f", "docker-compose.acme.yml"]
    acme = json.loads(run(["docker", "compose", "-p", project.name, "--env-file", str(project.env_file), *files,
                           "config", "--format", "json"], env=project.env, timeout=60).stdout)
    certbot = acme["services"]["certbot"]
    assert certbot["image"].startswith("certbot/certbot:")
    assert certbot["healthcheck"]["test"] and certbot["restart"] == "unless-stopped"
    assert certbot["cap_drop"] == ["ALL"] and certbot["depends_on"]["nginx"]["condition"] == "service_started"
    mounts = {v["target"]: v["source"] for v in acme["services"]["nginx"]["volumes"]}
    assert mounts["/etc/nginx/certs"] == "acme-certs" and mounts["/var/www/acme"] == "acme-webroot"


def test_missing_certificate_names_the_path_without_a_restart_loop(project, tls):
    t0 = time.monotonic()
    # nginx cannot become healthy yet, so no --wait: compose still waits for web/ws health.
    project.compose("up", "-d", "--scale", "ws=2", timeout=600)
    deadline = time.monotonic() + 60
    while (health := _nginx_health(project))[0] != 503:
        assert time.monotonic() < deadline, f"nginx never reported the missing certificate: {health}"
        time.sleep(0.5)
    assert CERT_IN_CONTAINER.encode() in health[1] and b"missing or unreadable" in health[1], health
    logs = project.compose("logs", "nginx", timeout=60).stdout
    assert CERT_IN_CONTAINER in logs and "TLS_CERT_DIR" in logs, logs[-3000:]
    (nginx_id,) = project.container_ids("nginx")
    time.sleep(3)  # several health-check intervals: still the same process, never restarted
    state = project.inspect(nginx_id)
    assert state["State"]["Running"] and state["RestartCount"] == 0
    FIGURES["TLS switch: `up -d` (web, ws recreated with DJANGO_TLS=true)"] = f"{time.monotonic() - t0:.1f} s"


def test_certificates_appearing_turn_https_on_without_restart(project, tls):
    (nginx_id,) = project.container_ids("nginx")
    started = project.inspect(nginx_id)["State"]["StartedAt"]
    certs = make_certs(tls["dir"])  # = make certs
    ctx = client_context(certs.ca_cert)
    t0 = time.monotonic()
    while True:
        try:
            if https_get(f"{tls['url']}/nginx-health", ctx)[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() - t0 < 30, "HTTPS not served 30 s after the certificate appeared"
        time.sleep(0.3)
    FIGURES["TLS: certificate written → HTTPS served (watcher)"] = f"{time.monotonic() - t0:.1f} s"
    deadline = time.monotonic() + 60  # Docker's health check agrees (every 3 s)
    while (state := project.inspect(nginx_id)["State"])["Health"]["Status"] != "healthy":
        assert time.monotonic() < deadline, f"nginx not healthy with its certificate: {state['Health']}"
        time.sleep(1)
    assert state["StartedAt"] == started and project.inspect(nginx_id)["RestartCount"] == 0, "nginx was restarted"
    tls["certs"], tls["ctx"] = certs, ctx


def test_https_pages_redirect_hsts_and_csrf(project, tls):
    ctx, url = tls["ctx"], tls["url"]
    with handshake("127.0.0.1", tls["port"], client_context(tls["certs"].ca_cert, ["h2", "http/1.1"])) as s:
        assert s.selected_alpn_protocol() == "h2" and s.version() in ("TLSv1.2", "TLSv1.3")
    status, headers, body = https_get(f"{url}/", ctx)
    assert status == 200 and headers["strict-transport-security"] == "max-age=31536000"
    status, headers, _ = https_get(f"{project.base_url()}/chat/x/", None)
    assert status == 301 and headers["location"] == f"https://127.0.0.1:{tls['port']}/chat/x/"
    assert "strict-transport-security" not in headers

    status, headers, body = https_get(f"{url}/accounts/login/", ctx)
    cookie = next(c for c in headers["_set_cookie_list"] if c.startswith("csrftoken=")).split(";", 1)[0]
    assert "Secure" in next(c for c in headers["_set_cookie_list"] if c.startswith("csrftoken="))
    token = body.decode().split('name="csrfmiddlewaretoken" value="', 1)[1].split('"', 1)[0]
    form = f"csrfmiddlewaretoken={token}&username=nobody&password=wrong".encode()
    base = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
    ok, _, _ = https_get(f"{url}/accounts/login/", ctx, method="POST", body=form,
                         headers={**base, "Origin": url, "Referer": f"{url}/accounts/login/"})
    assert ok == 200, "the HTTPS origin must pass CSRF (200: the form again, wrong password)"
    bad, _, _ = https_get(f"{url}/accounts/login/", ctx, method="POST", body=form,
                          headers={**base, "Origin": "https://evil.example", "Referer": "https://evil.example/"})
    assert bad == 403


async def test_wss_across_two_replicas_survives_a_certificate_swap(project, tls):
    ctx, port = tls["ctx"], tls["port"]
    room = f"compose-tls-{uuid.uuid4().hex[:8]}"
    url = f"wss://localhost:{port}/ws/chat/{room}/"
    chosen, spare = {}, []
    for _ in range(30):
        c = await Client(url, ssl=ctx).open()
        if c.worker_host in chosen:
            spare.append(c)
        else:
            chosen[c.worker_host] = c
        if len(chosen) == 2:
            break
    for c in spare:
        await c.close()
    assert len(chosen) == 2, f"wss:// sockets reached only {list(chosen)}"
    a, b = chosen.values()
    try:
        await a.send("wss across replicas")
        await b.wait_messages({"wss across replicas"}, timeout=15)

        before = peer_serial("127.0.0.1", port, ctx)
        await asyncio.to_thread(make_certs, tls["dir"], force=True)  # the files change on disk
        t0 = time.monotonic()
        while peer_serial("127.0.0.1", port, ctx) == before:
            assert time.monotonic() - t0 < 30, "nginx did not pick up the new certificate"
            await asyncio.sleep(0.3)
        FIGURES["TLS: certificate replaced → served (watcher + nginx -s reload)"] = f"{time.monotonic() - t0:.1f} s"
        await b.send("after the swap")
        await a.wait_messages({"after the swap"}, timeout=15)
    finally:
        await a.close()
        await b.close()


# --- ACME: certbot service + Pebble ---------------------------------------------

def _pebble_root(project) -> str:
    """Pebble's issuing root (new on every Pebble start), read through its management API."""
    code = ("import ssl, urllib.request as u; c = ssl.create_default_context(cafile='/opt/chat/acme-ca.pem'); "
            "print(u.urlopen('https://pebble:15000/roots/0', context=c, timeout=10).read().decode())")
    return project.compose("exec", "-T", "certbot", "python3", "-c", code, timeout=60).stdout


async def test_acme_certbot_gets_renews_and_nginx_reloads_with_wss_open(project, tls, tmp_path_factory):
    """TLS_MODE=acme: the certbot service gets a certificate from Pebble through
    nginx's webroot, nginx serves it, a forced renewal replaces it and nginx
    reloads while a wss:// socket stays open. Leaves: the stack up with ACME, ws=2."""
    standins = REPO.parent / "shared" / "containers" / "standins"
    run([str(standins), "--from", "docker-compose.acme.yml", "--from", "tests/compose/pebble.yml"],
        env=project.env, timeout=900)
    image = yaml.safe_load((REPO / "tests/compose/pebble.yml").read_text())["services"]["pebble"]["image"]
    pebble_ca = tmp_path_factory.mktemp("pebble") / "pebble.minica.pem"
    pebble_ca.write_text(run(["docker", "run", "--rm", "--entrypoint", "cat", image, "/test/certs/pebble.minica.pem"],
                             env=project.env, timeout=120).stdout)
    # Through compose's interpolation (process environment beats --env-file), not the
    # env file: web and ws read that file whole (env_file:), so editing it would
    # recreate them for settings only nginx and certbot use: CI time, nothing tested.
    project.env.update({"TLS_MODE": "acme", "ACME_SERVER": "https://pebble:14000/dir",
                        "ACME_DOMAINS": "nginx", "ACME_EMAIL": "ops@example.com",
                        "ACME_CA_BUNDLE": str(pebble_ca)})
    project.files = ["docker-compose.tls.yml", "docker-compose.acme.yml", "tests/compose/pebble.yml"]
    t0 = time.monotonic()
    # --wait: certbot is healthy once it deployed a certificate, nginx once it serves HTTPS.
    project.compose("up", "-d", "--wait", "--scale", "ws=2", timeout=600)
    FIGURES["ACME: `up --wait` to a Pebble certificate served"] = f"{time.monotonic() - t0:.1f} s"
    logs = project.compose("logs", "certbot", "nginx", timeout=60).stdout
    assert "Successfully received certificate" in logs, logs[-3000:]
    assert "GET /.well-known/acme-challenge/" in logs, "Pebble's HTTP-01 fetch must go through nginx"

    root = tmp_path_factory.mktemp("pebble-root") / "root.pem"
    root.write_text(_pebble_root(project))
    ctx = client_context(root)
    port = tls["port"]
    with handshake("127.0.0.1", port, ctx, server_hostname="nginx") as s:
        issuer = dict(x[0] for x in s.getpeercert()["issuer"])
        first = int(s.getpeercert()["serialNumber"], 16)
    assert "Pebble" in issuer.get("commonName", ""), issuer

    room = f"compose-acme-{uuid.uuid4().hex[:8]}"
    ws = await Client(f"wss://127.0.0.1:{port}/ws/chat/{room}/", ssl=ctx, server_hostname="nginx").open()
    try:
        t0 = time.monotonic()
        await asyncio.to_thread(project.compose, "exec", "-T", "certbot", "/bin/sh", "/opt/chat-tls/certbot-loop",
                                "renew", "--force", timeout=300)
        while peer_serial("127.0.0.1", port, ctx, server_hostname="nginx") == first:
            assert time.monotonic() - t0 < 60, "nginx did not reload the renewed certificate"
            await asyncio.sleep(0.3)
        FIGURES["ACME: forced renewal → new certificate served"] = f"{time.monotonic() - t0:.1f} s"
        await ws.send("after the renewal")
        await ws.wait_messages({"after the renewal"}, timeout=15)
    finally:
        await ws.close()
