"""WebSocket authentication: ?token= first, the Django session otherwise.

A token that is present is authoritative: if it is bad we do NOT fall back to
the session cookie, because a client that sends a token expects to act as the
token's user, and silently switching identity would be worse than refusing.
The consumer turns scope["token_error"] into close 4401 after accepting, so
the client can see why.
"""
import logging
from urllib.parse import parse_qs

from channels.auth import AuthMiddleware
from channels.db import database_sync_to_async
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.contrib.auth.models import AnonymousUser

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
    return tokens.verify(token)


class TokenAuthMiddleware:
    """Resolves ?token= into scope["user"]; copies the scope only when a token is given
    (a scope copy lives as long as the socket: ~1 KiB each at 10,000 sockets).

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
        scope = dict(scope)
        scope["token_auth"] = True
        try:
            scope["user"] = await _verify(token)
        except tokens.TokenError as exc:
            logger.warning("ws token refused: %s path=%r", exc.reason, scope.get("path"))
            scope["user"] = AnonymousUser()
            scope["token_error"] = exc.reason
        return await self.inner(scope, receive, send)


class SessionAuthMiddleware(AuthMiddleware):
    """channels' AuthMiddleware, except it leaves a token-resolved user alone.

    Stock AuthMiddleware resolves the session user into scope["user"] whenever it
    runs; with a token in play that would be a second (and contradictory) identity.

    It also adds the user to the scope it gets instead of copying it twice (stock
    AuthMiddleware copies, then BaseMiddleware copies again, and both frames live
    as long as the socket: ~2.5 KiB per socket). That scope is already this
    connection's own: channels' SessionMiddleware hands down a copy it made.
    """

    def __call__(self, scope, receive, send):
        if scope.get("token_auth"):
            return self.inner(scope, receive, send)
        return self._with_session_user(scope, receive, send)

    async def _with_session_user(self, scope, receive, send):
        self.populate_scope(scope)
        await self.resolve_scope(scope)
        return await self.inner(scope, receive, send)

    async def resolve_scope(self, scope):
        """No session cookie means anonymous: skip get_user's thread hop.

        channels' get_user always runs in the DB thread, even when there is no
        session to look up; in a reconnect storm of cookie-less clients that hop
        is a large share of each connect.
        """
        if scope["session"].session_key is None:
            scope["user"]._wrapped = AnonymousUser()
            return
        await super().resolve_scope(scope)


def AuthMiddlewareStack(inner):
    return CookieMiddleware(SessionMiddleware(SessionAuthMiddleware(inner)))


def TokenAuthMiddlewareStack(inner):
    return TokenAuthMiddleware(AuthMiddlewareStack(inner))
