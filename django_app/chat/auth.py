"""WebSocket authentication: ?token= first, the Django session otherwise.

A token that is present is authoritative: if it is bad we do NOT fall back to
the session cookie, because a client that sends a token expects to act as the
token's user, and silently switching identity would be worse than refusing.
The consumer turns scope["token_error"] into close 4401 after accepting, so
the client can see why.
"""
import logging
from importlib import import_module
from urllib.parse import parse_qs

from channels.auth import AuthMiddleware
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model, load_backend
from django.contrib.auth.models import AnonymousUser
from django.http import parse_cookie
from django.utils.crypto import constant_time_compare

from . import tokens

logger = logging.getLogger(__name__)


def query_params(scope) -> dict[str, list[str]]:
    raw = scope.get("query_string", b"")
    try:
        return parse_qs(raw.decode("latin-1"), keep_blank_values=True)
    except ValueError:
        return {}


@database_sync_to_async
def _verify(token):
    return tokens.verify_record(token)


class TokenAuthMiddleware:
    """Resolves ?token= into scope["user"], in the scope it gets: that scope is the
    connection's own, and a copy would live as long as the socket (~1 KiB).

    Without a token it returns the inner application's coroutine instead of
    awaiting it, so no frame of its own lives as long as the socket.
    """

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, scope, receive, send):
        params = query_params(scope)
        if "token" in params:
            return self._with_token(scope, receive, send, params["token"][0])
        return self.inner(scope, receive, send)

    async def _with_token(self, scope, receive, send, token):
        scope["token_auth"] = True
        try:
            record = await _verify(token)
            scope["user"], scope["token_id"] = record.user, record.pk  # token_id: chat.credentials
        except tokens.TokenError as exc:
            logger.warning("ws token refused: %s path=%r", exc.reason, scope.get("path"))
            scope["user"] = AnonymousUser()
            scope["token_error"] = exc.reason
        return await self.inner(scope, receive, send)


class SessionAuthMiddleware(AuthMiddleware):
    """channels' CookieMiddleware, SessionMiddleware and AuthMiddleware in one pass.

    It adds what those three add (scope["cookies"], scope["session"],
    scope["user"]) to the scope it gets. Stacked as channels ships them, each copies
    the scope and keeps a frame awaiting for the socket's whole life.
    SessionMiddleware also wraps send() to look at the session on every outgoing
    message. That wrapper saves only on http.response.start, which a WebSocket never
    sends: a consumer that changes the session saves it itself, as channels' docs
    say. Together that is ~2.5 KiB per idle socket (docs/benchmarks.md). The scope
    is already this connection's own: daphne makes one per connection. So WebSocket
    scopes only.

    A user given by a token (TokenAuthMiddleware) is left alone: with a token in
    play the session user would be a second, contradictory identity. Without a
    session the user is anonymous at once, without get_user's hop to the database
    thread (in a reconnect storm of cookie-less clients that hop is a large share of
    each connect). In both cases no frame of this middleware stays alive under the
    socket; with a session, one does (it awaits get_user, then the inner app).
    """

    def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            raise ValueError(
                f"chat.auth's middleware serves WebSocket scopes, not {scope['type']!r}: "
                "for HTTP use channels.auth.AuthMiddlewareStack, which saves sessions"
            )
        scope["cookies"] = cookies = _cookies(scope["headers"])
        if "session" not in scope:
            store = import_module(settings.SESSION_ENGINE).SessionStore
            scope["session"] = store(cookies.get(settings.SESSION_COOKIE_NAME))
        if scope.get("token_auth"):
            return self.inner(scope, receive, send)
        if scope["session"].session_key is None:  # no cookie, or not a valid key
            scope.setdefault("user", AnonymousUser())
            return self.inner(scope, receive, send)
        return self._with_session_user(scope, receive, send)

    async def _with_session_user(self, scope, receive, send):
        self.populate_scope(scope)
        await self.resolve_scope(scope)
        return await self.inner(scope, receive, send)

    async def resolve_scope(self, scope):
        scope["user"]._wrapped = await session_user(scope["session"])


@database_sync_to_async
def session_user(session):
    """The session's user, as django.contrib.auth.get_user finds it, for a WebSocket.

    Why not channels.auth.get_user: it checks the session's hash against
    SECRET_KEY only and flushes (deletes) the session when that fails. Right
    after a key rotation (DJANGO_SECRET_KEY_FALLBACKS) every session's hash was
    made with the old key, so a browser's first reconnect would log its user out
    everywhere. Django's get_user accepts a hash made with a fallback key, as
    here. It then also cycles the session key; a WebSocket cannot hand the
    browser a new cookie, so here the session keeps its key and only its hash
    is renewed (the next HTTP request needs no fallback). A hash that matches no
    key flushes the session, as both do.
    """
    try:
        user_id = get_user_model()._meta.pk.to_python(session[SESSION_KEY])
        backend_path = session[BACKEND_SESSION_KEY]
    except KeyError:
        return AnonymousUser()
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return AnonymousUser()
    user = load_backend(backend_path).get_user(user_id)
    if user is None or not hasattr(user, "get_session_auth_hash"):
        return user or AnonymousUser()
    stored = session.get(HASH_SESSION_KEY)
    current = user.get_session_auth_hash()
    if stored and constant_time_compare(stored, current):
        return user
    if stored and any(constant_time_compare(stored, old) for old in user.get_session_auth_fallback_hash()):
        session[HASH_SESSION_KEY] = current
        session.save()
        return user
    session.flush()
    return AnonymousUser()


def _cookies(headers) -> dict:
    """The first Cookie header, parsed as channels' CookieMiddleware and Django do."""
    for name, value in headers:
        if name == b"cookie":
            return parse_cookie(value.decode("latin1"))
    return {}


def AuthMiddlewareStack(inner):
    return SessionAuthMiddleware(inner)


def TokenAuthMiddlewareStack(inner):
    return TokenAuthMiddleware(AuthMiddlewareStack(inner))
