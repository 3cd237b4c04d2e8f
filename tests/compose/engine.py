"""Which Docker engine and which images the compose suite runs on.

Why a module of its own: the suite must run wherever Docker does (a laptop, a
CI runner) and still here, where there is no registry. The order is:

1. the engine that answers `docker info` (the user's own); if none answers,
   `shared/containers/engine-up` starts one (needs root);
2. the official images, when they can be pulled; if not (no registry), the
   local stand-ins of `shared/containers/standins` (needs root).

Nothing found at a step: the suite is unavailable (a skip; a failure with CI=true).
The decisions (choose_engine, choose_images) are plain functions of what was
probed, so tests/compose/test_engine_choice.py checks the order without an engine.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

RUNNING = "running engine"
ENGINE_UP = "shared engine-up"
OFFICIAL = "official images"
STANDINS = "stand-in images"
SHARED_TOOLS = ("engine-up", "standins")


@dataclass(frozen=True)
class Unavailable:
    reason: str


def find_shared(repo: Path, environ: dict[str, str]) -> Path | None:
    """`shared/containers` beside the checkout or beside one of its parents
    (a git worktree sits deeper than the main clone); SHARED_CONTAINERS overrides."""
    candidates = [Path(environ["SHARED_CONTAINERS"])] if environ.get("SHARED_CONTAINERS") else []
    candidates += [parent / "shared" / "containers" for parent in repo.resolve().parents]
    for path in candidates:
        if all(os.access(path / tool, os.X_OK) for tool in SHARED_TOOLS):
            return path
    return None


def engine_answers(environ: dict[str, str], timeout: float = 30) -> bool:
    """`docker info` succeeds with this environment (its PATH, DOCKER_HOST)."""
    docker = shutil.which("docker", path=environ.get("PATH", ""))
    if docker is None:
        return False
    try:
        return subprocess.run([docker, "info"], env=environ, capture_output=True,
                              timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def choose_engine(answers: bool, shared: Path | None, root: bool) -> str | Unavailable:
    if answers:
        return RUNNING
    if shared is None:
        return Unavailable("no engine answers `docker info`, and no shared/containers/engine-up to start one")
    if not root:
        return Unavailable(f"no engine answers `docker info`; {shared}/engine-up needs root")
    return ENGINE_UP


def choose_images(pulled: bool, shared: Path | None, root: bool) -> str | Unavailable:
    if pulled:
        return OFFICIAL
    if shared is None:
        return Unavailable("the official images cannot be pulled, and no shared/containers/standins to stand in")
    if not root:
        return Unavailable(f"the official images cannot be pulled; {shared}/standins needs root")
    return STANDINS


def official_images(repo: Path) -> list[str]:
    """The registry images the stack needs: services that are not built here, and
    the Dockerfile's base image (its default PYTHON_IMAGE)."""
    services = yaml.safe_load((repo / "docker-compose.yml").read_text())["services"]
    images = [s["image"] for s in services.values() if "build" not in s and "$" not in s.get("image", "$")]
    dockerfile = (repo / "services" / "Dockerfile").read_text()
    images += re.findall(r"^ARG PYTHON_IMAGE=(\S+)", dockerfile, flags=re.M)
    return sorted(set(images))


def pull(images: list[str], environ: dict[str, str], timeout: float = 600) -> tuple[bool, str]:
    """Pull each image; stop at the first failure (no registry: it fails in well under a second)."""
    for image in images:
        try:
            proc = subprocess.run(["docker", "pull", "-q", image], env=environ, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False, f"docker pull {image}: no answer within {timeout:.0f} s"
        if proc.returncode != 0:
            return False, f"docker pull {image}: {proc.stderr.strip()[-300:]}"
    return True, ""
