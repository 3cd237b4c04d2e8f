"""The container layer, run for real: build the image, start the stack, scale ws.

Tests share one stack (see conftest.py) and run in file order; each one states
the stack it leaves behind. test_compose_stack_day_two.py (collected after this
file) goes on with the stack this file leaves: up, ws=2. Everything goes through nginx's published port, as
a user would see it; container ids come from `docker compose ps` to check that
sockets really landed on the replicas we expect.
"""
from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
import uuid

import pytest
import yaml

from tests.compose import crowd_check, monitoring
from tests.compose.compose_chat import Client
from tests.compose.scaling_check import check_make_scale_3_rebalances
from tests.compose.composectl import FIGURES, REPO, run

LONG_RUNNING = ("nginx", "web", "ws", "redis", "db")


def _room() -> str:
    return f"compose-{uuid.uuid4().hex[:10]}"


def _get(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, dict(resp.headers), resp.read()


async def _clients_on_distinct_workers(project, room, hosts: set[str], *, attempts: int) -> dict[str, Client]:
    """Open sockets through nginx until one sits on each replica in `hosts`.

    nginx spreads sockets over the A records it resolved (random order), so a
    fixed number of sockets cannot be promised to cover every replica; a bounded
    number of tries can, with overwhelming probability.
    """
    chosen: dict[str, Client] = {}
    spare: list[Client] = []
    for _ in range(attempts):
        c = await Client(project.ws_url(room)).open()
        assert c.worker_host in hosts, f"socket landed on {c.worker_host}, not a replica of this stack {hosts}"
        if c.worker_host in chosen:
            spare.append(c)
        else:
            chosen[c.worker_host] = c
        if set(chosen) == hosts:
            break
    for c in spare:
        await c.close()
    assert set(chosen) == hosts, f"after {attempts} sockets only reached {sorted(chosen)} of {sorted(hosts)}"
    return chosen


def _ws_hosts(project) -> dict[str, str]:
    """container id -> hostname of every running ws replica."""
    return {cid: project.hostname(cid) for cid in project.container_ids("ws")}


# --- static checks ------------------------------------------------------------

def test_config_validates_and_keeps_the_contract(project):
    """`docker compose config` accepts the file, and the rules of the issue hold."""
    raw = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert "version" not in raw, "Compose v2 spec: no version: key"

    proj = project
    proj.compose("config", "-q", timeout=60)
    cfg = json.loads(proj.compose("config", "--format", "json", timeout=60).stdout)
    services = cfg["services"]
    assert set(services) == {"nginx", "web", "ws", "migrate", "redis", "db"} | monitoring.PROFILE_SERVICES

    published = {name for name, s in services.items() if s.get("ports")}
    assert published == {"nginx", "prometheus"}, f"only nginx may publish a port, not {published - {'nginx'}}"
    (port,) = services["nginx"]["ports"]
    assert port["host_ip"] == "127.0.0.1" and port["published"] == str(proj.http_port) and port["target"] == 8080
    # Prometheus (monitoring profile) on loopback only; no metrics port is ever published.
    (port,) = services["prometheus"]["ports"]
    assert port["host_ip"] == "127.0.0.1" and port["published"] == str(proj.prometheus_port)
    # Without the profile (plain `make up`) none of it runs.
    bare = run(["docker", "compose", "-p", proj.name, "--env-file", str(proj.env_file), "config", "--services"],
               env={**proj.env, "COMPOSE_PROFILES": ""}, timeout=60).stdout.split()
    assert set(bare) == {"nginx", "web", "ws", "migrate", "redis", "db"}

    assert "container_name" not in services["ws"]
    for name in ("web", "ws"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["db"]["condition"] == deps["redis"]["condition"] == "service_healthy"
    assert {d["condition"] for d in services["nginx"]["depends_on"].values()} == {"service_healthy"}
    for name in LONG_RUNNING:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert services[name].get("restart") == "unless-stopped", f"{name} has no restart policy"
    assert services["migrate"]["command"] == ["migrate"]
    assert services["web"]["command"] == ["web"] and services["ws"]["command"] == ["ws"]

    grace = services["ws"]["stop_grace_period"]
    grace_s = int(re.fullmatch(r"(\d+)s", grace).group(1))
    assert grace_s > 10, f"ws stop_grace_period {grace} must exceed WS_DRAIN_SECONDS (10)"
    assert services["ws"]["deploy"]["resources"]["limits"]["memory"]
    assert services["web"]["deploy"]["resources"]["limits"]["memory"]
    assert cfg["volumes"], "Postgres needs a named volume"


def test_missing_secrets_give_a_clear_error(project, tmp_path):
    """Without `make env`, compose refuses with a message that says what to do."""
    bare = tmp_path / "bare.env"
    bare.write_text((REPO / ".env.example").read_text())  # secrets left empty
    proc = run(["docker", "compose", "-p", project.name, "--env-file", str(bare), "config", "-q"],
               env=project.env, timeout=60, check=False)
    assert proc.returncode != 0
    assert "make env" in proc.stderr, proc.stderr


def test_ops_script_explains_a_missing_engine(project):
    """`make up` on a machine whose engine is down says so, instead of a socket trace."""
    env = {**project.env, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    proc = run([str(REPO / "scripts" / "compose"), "ps"], env=env, timeout=60, check=False)
    assert proc.returncode == 1
    assert "docker not found / engine not running: see README" in proc.stderr, proc.stderr


# --- build and start ------------------------------------------------------------

def test_image_builds_cold_and_warm(project):
    """Leaves: the image built (cache warm)."""
    cold = project.timed("build", "--no-cache", "migrate", timeout=1200)
    warm = project.timed("build", "migrate", timeout=600)
    FIGURES["cold build (no layer cache; pip download cache kept)"] = f"{cold:.1f} s"
    FIGURES["warm build (everything cached)"] = f"{warm:.1f} s"
    # `make build` prints no Bake/buildx warning, with or without the buildx plugin.
    built = project.script("build", timeout=600)
    assert "Bake" not in built.stderr + built.stdout, built.stderr[-2000:]

    info = json.loads(run(["docker", "image", "inspect", project.image], env=project.env, timeout=30).stdout)[0]
    FIGURES["app image size"] = f"{info['Size'] / 1e6:.0f} MB"
    cfg = info["Config"]
    assert cfg["User"] and not cfg["User"].startswith(("0", "root")), f"image runs as {cfg['User']!r}"
    assert "PYTHONUNBUFFERED=1" in cfg["Env"]
    assert not any(e.startswith("DJANGO_SECRET_KEY=") for e in cfg["Env"]), "no secret in the image"
    assert cfg["Cmd"] == ["web"]
    assert cfg["WorkingDir"] == "/app/django_app"
    # The image's Python is the tested one (3.11).
    out = run(["docker", "run", "--rm", "--entrypoint", "python", project.image, "-c",
               "import sys, django, channels, daphne; print(sys.version_info[:2])"],
              env=project.env, timeout=120).stdout
    assert out.strip() == "(3, 11)"


def test_project_name_follows_the_checkout(project):
    """`make env` names the compose project after this checkout, and compose obeys
    the env file (without -p), so two clones never share containers or volumes."""
    name = project.env_value("COMPOSE_PROJECT_NAME")
    assert re.fullmatch(rf"{re.escape(REPO.name.lower())}-[0-9a-f]{{6}}", name), name
    cfg = json.loads(run(["docker", "compose", "--env-file", str(project.env_file), "config", "--format", "json"],
                         env=project.env, timeout=60).stdout)
    assert cfg["name"] == name and cfg["volumes"]["pgdata"]["name"] == f"{name}_pgdata"


def test_up_wait_becomes_healthy_with_three_ws(project):
    """`make up` (scripts/compose up, WS_REPLICAS=3). Leaves: the stack up with ws=3."""
    t0 = time.monotonic()
    up = project.script("up", timeout=600)
    FIGURES["`scripts/compose up` (= make up, ws=3) to healthy (image cached)"] = f"{time.monotonic() - t0:.1f} s"
    # It prints the URL nginx was really published on (HTTP_BIND:HTTP_PORT of the env file).
    assert f"is up: {project.base_url()}/" in up.stdout, up.stdout[-1000:]

    # No anonymous volume: each mounted volume is one the compose file names
    # (Redis's image VOLUME /data is covered by a tmpfs; its data is not durable).
    declared = project.compose("config", "--volumes", timeout=60).stdout.split()
    named = {f"{project.name}_{v}" for v in declared}
    mounted = project.volumes_in_use()
    in_use = {v for vols in mounted.values() for v in vols}
    assert f"{project.name}_pgdata" in in_use and in_use <= named, (mounted, named)

    rows = [json.loads(line) for line in
            project.compose("ps", "--all", "--format", "json", timeout=60).stdout.splitlines() if line.strip()]
    by_service: dict[str, list[dict]] = {}
    for r in rows:
        by_service.setdefault(r["Service"], []).append(r)
    assert len(by_service["ws"]) == 3
    for name in LONG_RUNNING:
        for r in by_service[name]:
            assert r["State"] == "running" and r["Health"] == "healthy", r
    (mig,) = by_service["migrate"]
    assert mig["State"] == "exited" and mig["ExitCode"] == 0, mig

    took = monitoring.wait_for_ws_targets(project, 3)
    FIGURES["monitoring: healthy stack → Prometheus has 3 ws targets up"] = f"{took:.1f} s"

    # Each app container runs as the non-root user with a read-only root.
    for cid in project.container_ids("web") + project.container_ids("ws"):
        host = project.inspect(cid)["HostConfig"]
        assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"]


def test_page_static_and_readyz_through_nginx(project):
    base = project.base_url()
    status, headers, body = _get(f"{base}/readyz")
    assert status == 200
    assert json.loads(body) == {"status": "ok", "checks": {"db": "ok", "redis": "ok"}}

    status, _, body = _get(f"{base}/nginx-health")
    assert status == 200

    # No favicon 404 in the browser console: /favicon.ico leads to the SVG icon.
    status, headers, body = _get(f"{base}/favicon.ico")
    assert status == 200 and headers["Content-Type"].startswith("image/svg+xml") and b"<svg" in body

    status, headers, body = _get(f"{base}/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")

    # Static files: the admin login page links hashed (manifest) files, which
    # whitenoise must serve with a far-future cache header.
    status, _, body = _get(f"{base}/admin/login/")
    assert status == 200
    css = re.findall(r'href="(/static/[^"]+\.css)"', body.decode())
    assert css, "admin login page links no static CSS"
    status, headers, body = _get(f"{base}{css[0]}")
    assert status == 200 and body, css[0]
    assert "immutable" in headers.get("Cache-Control", "") or "max-age" in headers.get("Cache-Control", ""), headers


@pytest.mark.browser
def test_browser_chats_at_the_published_url(project):
    """What `make up` promises: two browser tabs at the printed URL chat with each other."""
    from playwright.sync_api import expect, sync_playwright

    room = _room()
    url = f"{project.base_url()}/chat/{room}/"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                     args=["--no-sandbox"])
        try:
            alice, bob = browser.new_page(), browser.new_page()
            for page in (alice, bob):
                page.goto(url)
                expect(page.locator("#status")).to_have_attribute("data-state", "open", timeout=15_000)
            alice.fill("#message-input", "hello through nginx")
            alice.click("#send-button")
            expect(bob.locator("#messages")).to_contain_text("hello through nginx", timeout=15_000)
        finally:
            browser.close()


async def test_three_clients_on_three_replicas_share_a_room(project):
    """Leaves: the stack up with ws=3, no sockets open."""
    hosts = set(_ws_hosts(project).values())
    assert len(hosts) == 3
    room = _room()
    clients = await _clients_on_distinct_workers(project, room, hosts, attempts=40)
    try:
        texts = {f"hello from {h}" for h in clients}
        for host, c in clients.items():
            await c.send(f"hello from {host}")
        for c in clients.values():
            await c.wait_messages(texts, timeout=15)
            ids = [m["id"] for m in c.messages if m["message"] in texts]
            assert ids == sorted(ids) and len(set(ids)) == 3, ids
    finally:
        for c in clients.values():
            await c.close()


async def test_nginx_carries_more_sockets_than_the_image_config_could(project):
    """More WebSockets than the nginx image's own worker_connections could proxy, all
    welcomed and all receiving their room's message (tests/compose/crowd_check.py)."""
    await crowd_check.check_nginx_carries_a_crowd(project)


async def test_scale_up_to_four_reaches_the_new_replica_without_nginx_restart(project):
    """Leaves: the stack up with ws=4."""
    nginx_id = project.container_ids("nginx")[0]
    nginx_before = project.inspect(nginx_id)["State"]
    prometheus_started = monitoring.started_at(project)
    before = set(project.container_ids("ws"))

    t0 = time.monotonic()
    await asyncio.to_thread(project.script, "scale", "4")  # = make scale WS=4
    healthy = time.monotonic()
    after = set(project.container_ids("ws"))
    assert before < after and len(after) == 4, "the three running replicas must stay"
    (new_id,) = after - before
    new_host = project.hostname(new_id)

    room = _room()
    opened: list[Client] = []

    async def reached_new() -> bool:
        c = await Client(project.ws_url(room)).open()
        opened.append(c)
        return c.worker_host == new_host

    try:
        deadline = time.monotonic() + 30
        hit = False
        for _ in range(120):  # bounded in count and time
            if time.monotonic() > deadline:
                break
            if await reached_new():
                hit = True
                break
            await asyncio.sleep(0.1)
        assert hit, f"no socket reached the new replica {new_host} within 30 s ({len(opened)} tries)"
        FIGURES["scale 3→4: new replica healthy → first socket on it"] = f"{time.monotonic() - healthy:.1f} s"
        FIGURES["scale 3→4: `up --scale ws=4` until healthy"] = f"{healthy - t0:.1f} s"
        # The new replica is a full member of the room.
        a, b = opened[-1], opened[0]
        if a is not b:
            await b.send("to the new replica")
            await a.wait_messages({"to the new replica"}, timeout=10)
    finally:
        for c in opened:
            await c.close()

    nginx_after = project.inspect(nginx_id)["State"]
    assert project.container_ids("nginx") == [nginx_id], "nginx container was replaced"
    assert nginx_after["StartedAt"] == nginx_before["StartedAt"], "nginx was restarted"
    assert project.inspect(nginx_id)["RestartCount"] == 0
    # Prometheus found the fourth replica through Docker's DNS, without a restart.
    took = await asyncio.to_thread(monitoring.wait_for_ws_targets, project, 4)
    FIGURES["monitoring: scale 3→4 → Prometheus has 4 ws targets up"] = f"{took:.1f} s"
    assert monitoring.started_at(project) == prometheus_started, "Prometheus was restarted"


async def test_scale_down_to_two_clients_reconnect_and_keep_chatting(project):
    """Leaves: the stack up with ws=2."""
    by_id = _ws_hosts(project)
    assert len(by_id) == 4
    room = _room()
    clients = await _clients_on_distinct_workers(project, room, set(by_id.values()), attempts=80)
    try:
        await clients[next(iter(clients))].send("before scale down")
        for c in clients.values():
            await c.wait_messages({"before scale down"}, timeout=10)

        t0 = time.monotonic()
        # In a thread, so the clients' event loop answers the drain's close handshake.
        await asyncio.to_thread(project.script, "scale", "2")  # = make scale WS=2
        FIGURES["scale 4→2: `up --scale ws=2` returns (drain included)"] = f"{time.monotonic() - t0:.1f} s"
        remaining = {project.hostname(cid) for cid in project.container_ids("ws")}
        removed = set(by_id.values()) - remaining
        assert len(remaining) == 2 and len(removed) == 2

        # Clients of the removed replicas were closed by the drain (1012:
        # reconnect now). Checked at the end, so a wrong code does not hide
        # whether reconnecting works.
        close_codes = {host: await clients[host].wait_closed(timeout=30) for host in removed}

        # They reconnect, resuming after the last id they saw, and land on a survivor.
        for host in removed:
            old = clients[host]
            new = await Client(project.ws_url(room, after=old.last_id)).open()
            assert new.worker_host in remaining, f"reconnect landed on {new.worker_host}, removed replica"
            clients[host] = new

        texts = set()
        for host, c in clients.items():
            text = f"after scale down from {host}"
            texts.add(text)
            await c.send(text)
        for c in clients.values():
            await c.wait_messages(texts, timeout=15)

        # Once the replicas are gone, no new socket goes to them, and none fails.
        probe_room = _room()
        for _ in range(20):
            c = await Client(project.ws_url(probe_room)).open(timeout=10)
            try:
                assert c.worker_host in remaining, f"socket sent to removed replica {c.worker_host}"
            finally:
                await c.close()
        assert set(close_codes.values()) == {1012}, f"drained sockets must close with 1012, got {close_codes}"
    finally:
        for c in clients.values():
            await c.close()


async def test_make_scale_3_rebalances_open_sockets_without_loss(project):
    """Leaves: the stack up with ws=3."""
    await check_make_scale_3_rebalances(project)
