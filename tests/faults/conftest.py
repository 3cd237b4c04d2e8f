"""One 3-worker native stack for the whole fault suite, and the fault table.

One stack (not one per test) keeps the suite inside its time budget on 2 cores;
each fault test restores what it broke before it returns.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.stack import NativeStack

from tests.faults.load import HEADER, Verdict

WORKERS = 3
RESULTS = Path(__file__).resolve().parents[2] / "test-results" / "faults-table.md"
_table: list[Verdict] = []
_soaks: list = []
_figures: dict[str, str] = {}


@pytest.fixture(scope="session")
def stack():
    # Production defaults from .env.example (rate limits, drain time) apply.
    with NativeStack(workers=WORKERS, state_dir=os.environ.get("FAULTS_STATE_DIR"), env={"LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO")}) as s:
        yield s


@pytest.fixture
def fault_table() -> list[Verdict]:
    return _table


@pytest.fixture
def soak_reports() -> list:
    return _soaks


@pytest.fixture
def figures() -> dict[str, str]:
    """Scaling figures (tests/faults/test_scaling.py), printed at the end of the run."""
    return _figures


def render_table(rows: list[Verdict]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(v.row()) + " |" for v in rows]
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter):
    if _figures:
        terminalreporter.write_sep("=", "scaling figures")
        for name, value in _figures.items():
            terminalreporter.write_line(f"{name}: {value}")
    if not _table and not _soaks:
        return
    table = render_table(_table) if _table else ""
    if _table:
        terminalreporter.write_sep("=", "fault table")
        terminalreporter.write_line(table)
    for report in _soaks:
        terminalreporter.write_sep("=", "soak (short)")
        terminalreporter.write_line(report.table())
        table += "\n\n" + report.table()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table + "\n")
