"""Fixtures of the compose suite: a real Docker engine and ONE stack per session.

The engine and the images are chosen by tests/compose/engine.py: the engine
that answers `docker info` and the official images when they can be pulled,
else shared/containers (engine-up, stand-ins).

Building and starting the stack is the expensive part (image build, Postgres
initdb), so the session shares one project; the tests run in file order and
each leaves the stack as the next expects (documented per test). The finalizer
always runs `docker compose down -v`, so a failing test leaves nothing behind.

Figures (image size, build and start times, scaling delays) are collected in
FIGURES and printed at the end of the run and written to
test-results/compose-report.md.
"""
from __future__ import annotations

import os
import time
import uuid

import pytest

from tests.compose.composectl import FIGURES, REPO, Project, clean_environ, free_port, run, set_env_values
from tests.compose.engine import (ENGINE_UP, STANDINS, Unavailable, choose_engine, choose_images, engine_answers,
                                  find_shared, official_images, pull)

REPORT = REPO / "test-results" / "compose-report.md"


def _unavailable(reason: str):
    """In CI a missing engine must fail the run; on a laptop it is a skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and no container engine: {reason}", pytrace=False)
    pytest.skip(f"no container engine: {reason}")


@pytest.fixture(scope="session")
def engine() -> str:
    """The engine that answers `docker info`, else shared engine-up; returns which
    images to use: the official ones when they pull, else the stand-ins (engine.py)."""
    shared = find_shared(REPO, dict(os.environ))
    root = os.geteuid() == 0
    env = clean_environ()
    how = choose_engine(engine_answers(env), shared, root)
    if isinstance(how, Unavailable):
        _unavailable(how.reason)
    if how == ENGINE_UP:
        proc = run([str(shared / "engine-up")], timeout=600, check=False)
        if proc.returncode != 0:
            _unavailable(f"engine-up exited {proc.returncode}: {proc.stderr[-2000:]}")
    pulled, why = pull(official_images(REPO), env)
    images = choose_images(pulled, shared, root)
    if isinstance(images, Unavailable):
        _unavailable(f"{images.reason} ({why})")
    FIGURES["engine, images"] = f"{how}, {images}" + (f" ({why.split(':')[0]} failed)" if why else "")
    return images


@pytest.fixture(scope="session")
def project(engine, tmp_path_factory) -> Project:
    name = f"dcs-test-{uuid.uuid4().hex[:8]}"
    env_file = tmp_path_factory.mktemp("compose") / "test.env"
    run([str(REPO / "scripts" / "env"), str(env_file)], env=clean_environ(), timeout=60)
    port, prometheus_port = free_port(), free_port()
    set_env_values(env_file, {
        "PROMETHEUS_PORT": str(prometheus_port),
        "HTTP_BIND": "127.0.0.1",
        "HTTP_PORT": str(port),
        "APP_IMAGE": f"{name}:test",
        "WS_REPLICAS": "3",  # what `scripts/compose up` (= make up) starts
        "CSRF_TRUSTED_ORIGINS": f"http://127.0.0.1:{port},http://localhost:{port}",
        # Every test socket comes from one address (the engine's proxy): the crowd
        # check (crowd_check.py) opens thousands.
        "NGINX_MAX_CONN_PER_IP": "4000",
    })
    proj = Project(name=name, env_file=env_file, http_port=port, image=f"{name}:test")
    # `make up-monitoring`: Prometheus and the exporters run beside the stack all session
    # (tests/compose/monitoring.py), so they watch the scaling tests too.
    proj.env["COMPOSE_PROFILES"] = "monitoring"
    proj.prometheus_port = prometheus_port

    if engine == STANDINS:
        # Stand-ins for the official images the compose file and Dockerfile name
        # (no registry). `docker compose config` inside standins needs the
        # secrets, so it gets the throwaway env file's values.
        secrets = {k: v for k, v in (line.split("=", 1) for line in env_file.read_text().splitlines()
                                     if "=" in line and not line.startswith("#"))}
        run([str(find_shared(REPO, dict(os.environ)) / "standins"), "--from", "docker-compose.yml",
             "--from", "services/Dockerfile"], env={**proj.env, **secrets}, timeout=900)

    yield proj

    try:
        proj.compose("down", "-v", "--remove-orphans", "--timeout", "30", timeout=300, check=False)
    finally:
        # The app image this session built (and any it superseded): they are
        # labelled with the project, so nothing of another stack is touched.
        images = run(["docker", "image", "ls", "-q", "--filter", f"label=com.docker.compose.project={name}"],
                     env=proj.env, timeout=60, check=False).stdout.split()
        if images:
            run(["docker", "image", "rm", "-f", *sorted(set(images))], env=proj.env, timeout=120, check=False)
    left = proj.leftovers()
    assert not left, f"docker compose down -v left resources of {name}: {left}"


def pytest_collection_modifyitems(items):
    """The stack is shared in file order; the test that tears it down runs last,
    after every file (test_compose_tls.py switches the same stack to TLS)."""
    last = [i for i in items if i.name == "test_down_v_leaves_nothing"]
    items[:] = [i for i in items if i not in last] + last


def pytest_terminal_summary(terminalreporter):
    if not FIGURES:
        return
    lines = ["# compose suite figures", "", "| figure | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in FIGURES.items()]
    lines += ["", f"measured {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {os.cpu_count()} cores"]
    text = "\n".join(lines) + "\n"
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(text)
    terminalreporter.write_sep("=", "compose figures (also in test-results/compose-report.md)")
    terminalreporter.write(text)
