"""The compose suite's choice of engine and images (tests/compose/engine.py), without an engine.

Real inputs, built here: a PATH whose `docker` answers or fails, directory
layouts with and without shared/containers, and the repository's own compose
file and Dockerfile. The real-engine run itself is the rest of this suite.
"""
from __future__ import annotations

from pathlib import Path

from tests.compose.composectl import REPO
from tests.compose.engine import (ENGINE_UP, OFFICIAL, RUNNING, STANDINS, Unavailable, choose_engine, choose_images,
                                  engine_answers, find_shared, official_images)


def _fake_docker(tmp_path: Path, exit_code: int) -> dict[str, str]:
    bin_dir = tmp_path / f"bin{exit_code}"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(f"#!/bin/sh\n[ \"$1\" = info ] && exit {exit_code}\nexit 3\n")
    docker.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}


def _shared(root: Path) -> Path:
    shared = root / "shared" / "containers"
    shared.mkdir(parents=True)
    for tool in ("engine-up", "standins"):
        (shared / tool).write_text("#!/bin/sh\n")
        (shared / tool).chmod(0o755)
    return shared


def test_engine_answers_follows_docker_info(tmp_path):
    assert engine_answers(_fake_docker(tmp_path, 0)) is True
    assert engine_answers(_fake_docker(tmp_path, 1)) is False
    empty = tmp_path / "empty"
    empty.mkdir()
    assert engine_answers({"PATH": str(empty)}) is False  # no docker CLI at all


def test_a_running_engine_wins_over_shared(tmp_path):
    shared = _shared(tmp_path)
    assert choose_engine(True, shared, root=True) == RUNNING
    assert choose_engine(True, None, root=False) == RUNNING  # a laptop: no shared/, no root


def test_no_engine_falls_back_to_engine_up_only_as_root(tmp_path):
    shared = _shared(tmp_path)
    assert choose_engine(False, shared, root=True) == ENGINE_UP
    assert isinstance(choose_engine(False, shared, root=False), Unavailable)
    missing = choose_engine(False, None, root=True)
    assert isinstance(missing, Unavailable) and "docker info" in missing.reason


def test_official_images_win_and_stand_ins_are_the_fallback(tmp_path):
    shared = _shared(tmp_path)
    assert choose_images(True, shared, root=True) == OFFICIAL
    assert choose_images(True, None, root=False) == OFFICIAL
    assert choose_images(False, shared, root=True) == STANDINS
    assert isinstance(choose_images(False, shared, root=False), Unavailable)
    assert isinstance(choose_images(False, None, root=True), Unavailable)


def test_shared_is_found_beside_the_checkout_or_a_parent(tmp_path):
    # main clone: <root>/main, shared at <root>/shared; worktree: <root>/wt/i17.
    shared = _shared(tmp_path)
    main, worktree = tmp_path / "main", tmp_path / "wt" / "i17"
    main.mkdir()
    worktree.mkdir(parents=True)
    assert find_shared(main, {}) == shared
    assert find_shared(worktree, {}) == shared
    other = _shared(tmp_path / "elsewhere")
    assert find_shared(worktree, {"SHARED_CONTAINERS": str(other)}) == other


def test_no_shared_anywhere_is_none(tmp_path):
    lone = tmp_path / "a" / "b"
    lone.mkdir(parents=True)
    # Normally None; a machine with a shared/containers above its temp dir finds that one.
    above = find_shared(tmp_path, {})
    half = tmp_path / "shared" / "containers"
    half.mkdir(parents=True)
    (half / "engine-up").write_text("#!/bin/sh\n")  # standins missing, not executable: not a shared dir
    assert find_shared(lone, {}) == above


def test_official_images_are_what_the_stack_pulls():
    images = official_images(REPO)
    # The stack's four, and the monitoring profile's Prometheus and exporters.
    assert {i.split(":")[0] for i in images} == {
        "nginx", "redis", "postgres", "python", "prom/prometheus", "oliver006/redis_exporter",
        "prometheuscommunity/postgres-exporter", "nginx/nginx-prometheus-exporter"}, images
    assert not any("$" in i for i in images)
