"""WebSocket authentication: tokens (authoritative when present) and sessions."""
from datetime import timedelta

import pytest
from django.utils import timezone

from chat import tokens
from chat.models import ApiToken
from wsworker import registry

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


async def _session(key):
    from channels.db import database_sync_to_async
    from django.contrib.sessions.models import Session

    row = await database_sync_to_async(Session.objects.filter(session_key=key).first)()
    return row.get_decoded() if row is not None else None


async def test_a_session_signed_with_a_fallback_key_stays_logged_in(settings, alice, session_cookie):
    """DJANGO_SECRET_KEY rotated with the old key in DJANGO_SECRET_KEY_FALLBACKS: the
    browser's socket is still alice's, and its cookie still names the session (a socket
    cannot hand the browser a new one), now with a hash under the new key.
    channels' own get_user checks SECRET_KEY alone and would delete the session."""
    from django.contrib.auth import HASH_SESSION_KEY

    old = settings.SECRET_KEY
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "rotated-" + old, [old]
    cookie = [(b"cookie", f"sessionid={session_cookie}".encode())]
    client, frame = await welcome("/ws/chat/lobby/", headers=cookie)
    await client.close()
    assert frame["user"] == "alice"
    session = await _session(session_cookie)
    assert session is not None, "the session was deleted: the user is logged out everywhere"
    assert session[HASH_SESSION_KEY] == alice.get_session_auth_hash()  # under the new key
    settings.SECRET_KEY_FALLBACKS = []  # the old key retired: the renewed hash still holds
    client, frame = await welcome("/ws/chat/lobby/", headers=cookie)
    await client.close()
    assert frame["user"] == "alice"


async def test_a_session_signed_with_an_unknown_key_is_logged_out(settings, alice, session_cookie):
    """A key rotated WITHOUT the fallback (e.g. after a leak): the session's data,
    signed with the old key, no longer reads, so the socket is anonymous, as the
    user is over HTTP."""
    from django.contrib.auth import SESSION_KEY

    settings.SECRET_KEY = "rotated-" + settings.SECRET_KEY
    cookie = [(b"cookie", f"sessionid={session_cookie}".encode())]
    client, frame = await welcome("/ws/chat/lobby/", headers=cookie)
    await client.close()
    assert frame["user"] != "alice"
    assert SESSION_KEY not in (await _session(session_cookie) or {})


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


# --- open sockets whose credentials ended (chat.credentials) ---------------------------

RECHECK = 1  # CHAT_AUTH_RECHECK_SECONDS in these tests; each waits with a deadline well past it


@pytest.fixture
def recheck(settings):
    settings.CHAT_AUTH_RECHECK_SECONDS = RECHECK
    return settings


async def _db(fn):
    from channels.db import database_sync_to_async

    return await database_sync_to_async(fn)()


@pytest.mark.parametrize("ending", ["revoked", "expired", "deleted", "user inactive"])
async def test_an_open_token_socket_is_closed_4401_once_its_token_ends(recheck, alice, ending):
    """A leaked token revoked (or expired, deleted, its user deactivated) while its socket is
    open: the socket is closed with 4401 within the recheck, another user's stays open."""
    issued = await tokens_issue(alice)
    bob = await _db(lambda: type(alice).objects.create_user("bob", password="bob-pass-123"))
    other = await tokens_issue(bob)
    victim, _ = await welcome(f"/ws/chat/creds/?token={issued.token}")
    bystander, _ = await welcome(f"/ws/chat/creds/?token={other.token}")
    pk = issued.record.pk
    reason = "user inactive" if ending == "user inactive" else f"token {ending}"
    before = registry.refusals[f"close 4401 {reason}"]
    if ending == "revoked":
        assert await _db(lambda: tokens.revoke(issued.token[:8])) == 1
    elif ending == "expired":
        await _update(pk, expires_at=timezone.now() - timedelta(seconds=1))
    elif ending == "deleted":
        await _db(lambda: ApiToken.objects.filter(pk=pk).delete())
    else:
        await _db(lambda: type(alice).objects.filter(pk=alice.pk).update(is_active=False))
    assert await victim.closed_with(timeout=RECHECK + 5) == 4401
    assert registry.refusals[f"close 4401 {reason}"] == before + 1  # on /healthz, by reason
    # The other socket still talks: its token is live.
    await bystander.send({"message": "still here"})
    assert (await bystander.recv())["message"] == "still here"
    await bystander.close()


async def test_an_open_session_socket_is_closed_4401_after_logout(recheck, session_cookie):
    from django.contrib.sessions.models import Session

    cookie = [(b"cookie", f"sessionid={session_cookie}".encode())]
    client, frame = await welcome("/ws/chat/creds-session/", headers=cookie)
    assert frame["user"] == "alice"
    await _db(lambda: Session.objects.filter(session_key=session_cookie).delete())  # what logout() does
    assert await client.closed_with(timeout=RECHECK + 5) == 4401


async def test_live_credentials_and_anonymous_sockets_stay_open(recheck, alice, session_cookie):
    issued = await tokens_issue(alice)
    cookie = [(b"cookie", f"sessionid={session_cookie}".encode())]
    sockets = [(await welcome(path, headers=h))[0] for path, h in [
        (f"/ws/chat/creds-live/?token={issued.token}", None),
        ("/ws/chat/creds-live/", cookie),
        ("/ws/chat/creds-live/", None),
    ]]
    from chat import credentials

    checker = next(iter(credentials._checkers.values()))
    assert await checker.check() == 0  # the same check the timer runs, now
    for n, client in enumerate(sockets):
        await client.send({"message": f"m{n}"})
    for client in sockets:
        got = [(await client.recv())["message"] for _ in range(3)]
        assert sorted(got) == ["m0", "m1", "m2"]
        await client.close()



async def test_many_sockets_are_checked_in_chunks_and_only_the_ended_one_closes(recheck, alice, monkeypatch):
    """Ids go to Postgres CHUNK at a time (its limit is 65,535 parameters a statement):
    a token in the last chunk is still seen."""
    from chat import credentials

    monkeypatch.setattr(credentials, "CHUNK", 2)
    issued = [await tokens_issue(alice) for _ in range(5)]
    sockets = [(await welcome(f"/ws/chat/creds-many/?token={i.token}"))[0] for i in issued]
    await _db(lambda: tokens.revoke(issued[-1].token[:8]))
    assert await sockets[-1].closed_with(timeout=RECHECK + 5) == 4401
    checker = next(iter(credentials._checkers.values()))
    assert await checker.check() == 0  # the other four are live
    for client in sockets[:-1]:
        await client.close()
