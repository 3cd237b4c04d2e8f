"""Shared fixtures for every suite.

`native_stack` is one real stack (Postgres, Redis, gunicorn, 2 daphne workers,
nginx) per test session: booting it costs seconds, and the suites using it
only add rooms/users, so sharing it keeps the run short without hiding bugs.
Suites that break tiers on purpose (faults) build their own NativeStack.
"""
import pytest

from tests.stack import NativeStack


@pytest.fixture(scope="session")
def native_stack():
    with NativeStack(workers=2) as stack:
        yield stack
