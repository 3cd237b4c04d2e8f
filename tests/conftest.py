"""Shared fixtures for every suite.

`native_stack` is one real stack (Postgres, Redis, gunicorn, 2 daphne workers,
nginx) per test session: booting it costs seconds, and the suites using it
only add rooms/users, so sharing it keeps the run short without hiding bugs.
Suites that break tiers on purpose (faults) build their own NativeStack.

`tls_stack` is the same topology with nginx terminating TLS (TLS_MODE=files)
with a certificate from `make certs` (`tls_certs`: its test CA); `tls_ctx` is
an SSL context that trusts only that CA. Started only when a test asks for it.

`close_writer_connection` closes the ws worker's async Postgres connections
(the Writer's and the Rooms' reads) of a test's event loop: every test that
stores or reads messages in-process uses it (the unit
suite for every test, the consumer fuzz tests), or the connections left open
keep pytest-django from dropping the test database at the end.
"""
import pytest

from tests.stack import NativeStack
from tests.tls import client_context, make_certs


@pytest.fixture
async def close_writer_connection():
    """Each test runs on its own event loop: the worker's async Postgres connections
    (chat.delivery.db, one per role per loop) are closed with it, so none outlives its test
    (nor keeps the test database from being dropped at the end)."""
    yield
    from chat.delivery import db

    await db.close()


@pytest.fixture(scope="session")
def native_stack():
    with NativeStack(workers=2) as stack:
        yield stack


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("tls-certs"))


@pytest.fixture(scope="session")
def tls_stack(tls_certs):
    with NativeStack(workers=2, tls={"TLS_MODE": "files", "TLS_CERT_DIR": str(tls_certs.dir)}) as stack:
        yield stack


@pytest.fixture(scope="session")
def tls_ctx(tls_certs):
    return client_context(tls_certs.ca_cert)
