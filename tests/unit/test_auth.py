"""WebSocket authentication: tokens (authoritative when present) and sessions."""
from datetime import timedelta

import pytest
from django.utils import timezone

from chat import tokens
from chat.models import ApiToken

from .conftest import Client, welcome

pytestmark = pytest.mark.django_db(transaction=True)


async def test_valid_token_names_the_user(alice):
    issued = await tokens_issue(alice)
    client, frame = await welcome(f"/ws/chat/lobby/?token={issued.token}")
    assert frame["user"] == "alice"
    await client.send({"message": "hi"})
    assert (await client.recv())["username"] == "alice"
    await client.close()


async def tokens_issue(user, **kw):
    from channels.db import database_sync_to_async

    return await database_sync_to_async(tokens.issue)(user, **kw)


async def _update(pk, **fields):
    from channels.db import database_sync_to_async

    await database_sync_to_async(lambda: ApiToken.objects.filter(pk=pk).update(**fields))()


async def test_expired_token_is_4401(alice):
    issued = await tokens_issue(alice)
    await _update(issued.record.pk, expires_at=timezone.now() - timedelta(seconds=1))
    client = await Client(f"/ws/chat/lobby/?token={issued.token}").connect()
    assert await client.closed_with() == 4401


async def test_revoked_token_is_4401(alice):
    issued = await tokens_issue(alice)
    await _update(issued.record.pk, revoked_at=timezone.now())
    client = await Client(f"/ws/chat/lobby/?token={issued.token}").connect()
    assert await client.closed_with() == 4401


@pytest.mark.parametrize("forged", ["", "x", "A" * 43, "A" * 300])
async def test_forged_token_is_4401(alice, forged):
    await tokens_issue(alice)
    client = await Client(f"/ws/chat/lobby/?token={forged}").connect()
    assert await client.closed_with() == 4401


async def test_forged_token_with_real_prefix_is_4401(alice):
    issued = await tokens_issue(alice)
    forged = issued.token[:8] + "B" * (len(issued.token) - 8)
    client = await Client(f"/ws/chat/lobby/?token={forged}").connect()
    assert await client.closed_with() == 4401


async def test_bad_token_never_falls_back_to_session(session_cookie):
    cookie = [(b"cookie", f"sessionid={session_cookie}".encode())]
    client = await Client("/ws/chat/lobby/?token=nope", headers=cookie).connect()
    assert await client.closed_with() == 4401


@pytest.mark.parametrize("header", ["sessionid={}", "csrftoken=abc; sessionid={}; theme=dark"])
async def test_session_cookie_names_the_user(session_cookie, header):
    cookie = [(b"cookie", header.format(session_cookie).encode())]
    client, frame = await welcome("/ws/chat/lobby/", headers=cookie)
    assert frame["user"] == "alice"
    await client.close()


async def test_session_user_allowed_when_anonymous_disallowed(settings, session_cookie):
    settings.CHAT_ALLOW_ANONYMOUS = False
    cookie = [(b"cookie", f"sessionid={session_cookie}".encode())]
    client, frame = await welcome("/ws/chat/lobby/", headers=cookie)
    assert frame["user"] == "alice"
    await client.close()


async def test_token_use_is_recorded(alice):
    from channels.db import database_sync_to_async

    issued = await tokens_issue(alice)
    client, _ = await welcome(f"/ws/chat/lobby/?token={issued.token}")
    await client.close()
    record = await database_sync_to_async(ApiToken.objects.get)(pk=issued.record.pk)
    assert record.last_used_at is not None
    assert record.key_hash == tokens.hash_token(issued.token) and issued.token not in record.key_hash


async def test_session_key_the_database_does_not_know_is_anonymous(settings, alice):
    cookie = [(b"cookie", b"sessionid=" + b"z" * 32)]
    client, frame = await welcome("/ws/chat/lobby/", headers=cookie)
    assert frame["user"].startswith("anon-")
    await client.close()
    settings.CHAT_ALLOW_ANONYMOUS = False
    client = await Client("/ws/chat/lobby/", headers=cookie).connect()
    assert await client.closed_with() == 4401


async def test_the_websocket_stack_refuses_an_http_scope_and_names_the_stock_one():
    from chat.auth import TokenAuthMiddlewareStack

    async def inner(scope, receive, send):
        raise AssertionError("not reached")

    scope = {"type": "http", "path": "/", "headers": [], "query_string": b""}
    with pytest.raises(ValueError, match="channels.auth.AuthMiddlewareStack"):
        await TokenAuthMiddlewareStack(inner)(scope, None, None)
