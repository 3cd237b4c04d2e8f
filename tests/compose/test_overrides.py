"""The topology override files (compose.sentinel.yml, compose.sharded.yml) merged with
docker-compose.yml by `docker compose config`: what web and ws would run with.

Offline (the CLI merges files without an engine); the Sentinel file also runs for
real in tests/faults/test_compose_sentinel.py.
"""
from __future__ import annotations

import os
import shutil

import pytest
import yaml

from tests.compose.composectl import REPO, clean_environ, run


@pytest.fixture(autouse=True)
def docker_cli():
    """In CI a missing docker CLI must fail the run; on a laptop it is a skip."""
    if shutil.which("docker") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and no docker CLI (docker compose config merges the files)", pytrace=False)
        pytest.skip("no docker CLI")


def merged(tmp_path, override: str) -> dict:
    env_file = tmp_path / "test.env"
    run([str(REPO / "scripts" / "env"), str(env_file)], env=clean_environ(), timeout=60)
    env = {**clean_environ(), "COMPOSE_ENV_FILE": str(env_file)}
    out = run(["docker", "compose", "--env-file", str(env_file), "-f", "docker-compose.yml", "-f", override,
               "config"], env=env, timeout=60).stdout
    return yaml.safe_load(out)["services"]


def test_sentinel_override_points_the_app_at_three_sentinels(tmp_path):
    services = merged(tmp_path, "compose.sentinel.yml")
    sentinels = {f"sentinel-{i}" for i in (1, 2, 3)}
    assert sentinels | {"redis", "redis-replica"} <= set(services)
    for app in ("web", "ws"):
        env = services[app]["environment"]
        assert env["REDIS_MODE"] == "sentinel" and env["REDIS_SENTINEL_PASSWORD"]
        assert {s.split(":")[0] for s in env["REDIS_SENTINELS"].split(",")} == sentinels
        assert sentinels <= set(services[app]["depends_on"])
    # The replica follows `redis` at first; every node asks the Sentinels on (re)start.
    assert services["redis-replica"]["environment"]["FIRST_MASTER"] == "redis"
    assert services["redis"]["environment"]["FIRST_MASTER"] == ""
    assert services["redis"]["command"] == services["redis-replica"]["command"]
    assert "sentinel get-master-addr-by-name" in services["redis"]["command"][-1]
    for name in sentinels | {"redis", "redis-replica"}:
        assert services[name]["user"] == "999:999" and services[name]["read_only"] is True
        assert "healthcheck" in services[name]


def test_sharded_override_lists_both_shards(tmp_path):
    services = merged(tmp_path, "compose.sharded.yml")
    for app in ("web", "ws"):
        env = services[app]["environment"]
        assert env["REDIS_MODE"] == "sharded"
        assert env["REDIS_SHARD_URLS"] == "redis://redis:6379/0,redis://redis-shard-2:6379/0"
        assert {"redis", "redis-shard-2"} <= set(services[app]["depends_on"])
    assert services["redis-shard-2"]["command"] == services["redis"]["command"]
