"""Fixtures for the unit suite: REAL Postgres (pytest-django's test database) and
REAL Redis (the channel layer), configured only through the environment the lead's
`make test` exports (POSTGRES_*, REDIS_*, DJANGO_SECRET_KEY)."""
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.management import call_command

from bench.procs import free_port  # noqa: F401  (below the ephemeral range: for the tests' own servers)
from config.asgi import application
from wsworker.frames import SCOPE_FRAMES

ORIGIN = (b"origin", b"http://localhost:8080")
TIMEOUT = 5


@pytest.fixture(scope="session", autouse=True)
def collected_static(tmp_path_factory):
    """Pages render {% static %} through the manifest storage, exactly as in production."""
    from django.test import override_settings

    # override_settings (not assignment) so Django resets the cached storage and
    # the real STATIC_ROOT, which other servers in this tree may be serving, stays untouched.
    root = tmp_path_factory.mktemp("static")
    override = override_settings(STATIC_ROOT=root)
    override.enable()
    call_command("collectstatic", "--noinput", verbosity=0)
    yield root
    override.disable()


@pytest.fixture(autouse=True)
def writer_connection_closed(close_writer_connection):
    """Every unit test closes its loop's async Postgres connections (tests/conftest.py)."""


class Client:
    """A WebsocketCommunicator with JSON helpers and bounded waits."""

    def __init__(self, path, headers=None, origin=True, framed=False, refuse_frames=False):
        hdrs = list(headers or [])
        if origin:
            hdrs.append(ORIGIN)
        self.comm = WebsocketCommunicator(application, path, headers=hdrs)
        self.writes: list[int] = []  # framed: messages per write
        if framed:
            # What wsworker offers every socket (wsworker.frames): room messages then take
            # the raw-frame path (and Room._deliver_soon). Here a "frame" is the text and a
            # newline (JSON text holds none raw), and a write hands each text to the test.
            def send(data: bytes) -> bool:
                if refuse_frames:
                    return False  # as a server does for a socket that negotiated compression
                texts = data.split(b"\n")[:-1]
                self.writes.append(len(texts))
                for text in texts:
                    self.comm.output_queue.put_nowait({"type": "websocket.send", "text": text.decode()})
                return True

            self.comm.scope[SCOPE_FRAMES] = (lambda text: text.encode() + b"\n", send)

    async def connect(self):
        connected, _ = await self.comm.connect(timeout=TIMEOUT)
        assert connected, "handshake was rejected"
        return self

    async def recv(self, timeout=TIMEOUT):
        return json.loads(await self.comm.receive_from(timeout=timeout))

    async def send(self, obj):
        await self.comm.send_to(text_data=json.dumps(obj))

    async def closed_with(self, timeout=TIMEOUT):
        """Return the close code of the next output, which must be a close."""
        out = await self.comm.receive_output(timeout=timeout)
        assert out["type"] == "websocket.close", out
        return out.get("code")

    async def close(self):
        await self.comm.disconnect(timeout=TIMEOUT)


async def welcome(path, **kw):
    client = await Client(path, **kw).connect()
    frame = await client.recv()
    assert frame["type"] == "chat.welcome", frame
    return client, frame


from chat.delivery import store  # noqa: E402  (after config.asgi has set Django up)

persist = database_sync_to_async(store.persist)


@pytest.fixture
def alice(transactional_db, django_user_model):
    return django_user_model.objects.create_user("alice", password="alice-pass-123")


@pytest.fixture
def session_cookie(alice):
    """A real session row + cookie value, as the login view would create."""
    from django.test import Client as HttpClient

    http = HttpClient()
    http.force_login(alice)
    return http.cookies["sessionid"].value


@pytest.fixture
def session_cookie_anon(transactional_db):
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore()
    session["seen"] = True
    session.create()
    return session.session_key
