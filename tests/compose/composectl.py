"""Drive one throwaway compose project of this repo against the real engine.

The tests must never touch a developer's own stack (their .env, their project
name, their port), so everything here is scoped: a unique project name, a temp
env file written by scripts/env, and a process environment from which every
project setting is removed, so the shell that runs pytest (scripts/test exports
POSTGRES_PORT etc. for the native suites) cannot leak into compose's
interpolation.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Figures for the run's report (image size, build/start/scale times). Kept
# here, not in conftest.py: pytest imports conftest under its own module name,
# so this module is the one object the tests and the summary hook share.
FIGURES: dict[str, str] = {}


def free_port() -> int:
    """A loopback port nobody holds right now (other engineers run stacks too)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def project_settings() -> set[str]:
    """Every key .env.example documents: these must come only from our env file."""
    keys = set()
    for line in (REPO / ".env.example").read_text().splitlines():
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
        if m:
            keys.add(m.group(1))
    return keys


def clean_environ() -> dict[str, str]:
    banned = project_settings()
    return {k: v for k, v in os.environ.items()
            if k not in banned and not k.startswith("COMPOSE_") and k != "DOCKER_DEFAULT_PLATFORM"}


def set_env_values(path: Path, values: dict[str, str]) -> None:
    """Replace KEY=... lines (or append) in an env file made by scripts/env."""
    lines = path.read_text().splitlines()
    seen = set()
    for i, line in enumerate(lines):
        key = line.split("=", 1)[0]
        if key in values:
            lines[i] = f"{key}={values[key]}"
            seen.add(key)
    lines += [f"{k}={v}" for k, v in values.items() if k not in seen]
    path.write_text("\n".join(lines) + "\n")


def run(cmd: list[str], *, env=None, timeout: float, check=True) -> subprocess.CompletedProcess:
    # stdin is never a terminal: the tests see what a script, CI or cron would.
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n"
                             f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


@dataclass
class Project:
    name: str
    env_file: Path
    http_port: int
    image: str
    env: dict[str, str] = field(default_factory=clean_environ)
    # Override files on top of docker-compose.yml (the TLS tests add docker-compose.tls.yml).
    files: list[str] = field(default_factory=list)

    def __post_init__(self):
        # docker-compose.yml's env_file: follows it, so a developer's .env is never read.
        self.env["COMPOSE_ENV_FILE"] = str(self.env_file)

    def compose(self, *args: str, timeout: float = 300, check=True) -> subprocess.CompletedProcess:
        files = [a for f in (["docker-compose.yml", *self.files] if self.files else []) for a in ("-f", f)]
        return run(["docker", "compose", "-p", self.name, "--env-file", str(self.env_file), *files, *args],
                   env=self.env, timeout=timeout, check=check)

    def script_env(self, **extra: str) -> dict[str, str]:
        return {**self.env, "COMPOSE_PROJECT_NAME": self.name, **extra}

    def script(self, *args: str, timeout: float = 300, check=True, **extra_env: str) -> subprocess.CompletedProcess:
        """scripts/compose (what `make up/down/scale/...` run), pointed at this project."""
        return run([str(REPO / "scripts" / "compose"), *args], env=self.script_env(**extra_env),
                   timeout=timeout, check=check)

    def env_value(self, key: str, default: str = "") -> str:
        for line in self.env_file.read_text().splitlines():
            if line.startswith(f"{key}="):
                return line.split("=", 1)[1] or default
        return default

    def volumes_in_use(self) -> dict[str, list[str]]:
        """container name -> names of the Docker volumes mounted in it (any state)."""
        return {info["Name"].lstrip("/"): [m["Name"] for m in info["Mounts"] if m["Type"] == "volume"]
                for info in (self.inspect(cid) for cid in self.compose("ps", "-aq", timeout=60).stdout.split())}

    def timed(self, *args: str, timeout: float = 600) -> float:
        start = time.monotonic()
        self.compose(*args, timeout=timeout)
        return time.monotonic() - start

    def container_ids(self, service: str, *, all_states=False) -> list[str]:
        args = ["ps", "-q", "--all"] if all_states else ["ps", "-q"]
        out = self.compose(*args, service, timeout=60).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def inspect(self, container_id: str) -> dict:
        return json.loads(run(["docker", "inspect", container_id], env=self.env, timeout=30).stdout)[0]

    def hostname(self, container_id: str) -> str:
        """The name daphne reports as `worker` (before the ':pid')."""
        return self.inspect(container_id)["Config"]["Hostname"]

    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def ws_url(self, room: str, after: int | None = None) -> str:
        url = f"ws://127.0.0.1:{self.http_port}/ws/chat/{room}/"
        return url if after is None else f"{url}?after={after}"

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes still labelled with this project."""
        label = f"label=com.docker.compose.project={self.name}"
        found = {}
        for kind, cmd in (("containers", ["docker", "ps", "-aq", "--filter", label]),
                          ("networks", ["docker", "network", "ls", "-q", "--filter", label]),
                          ("volumes", ["docker", "volume", "ls", "-q", "--filter", label])):
            out = run(cmd, env=self.env, timeout=60).stdout.split()
            if out:
                found[kind] = out
        return found

