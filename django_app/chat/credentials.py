"""Open sockets whose credentials ended are closed with 4401, checked once per worker per interval.

Why: a token or a session is checked at the handshake only. Without this, a
revoked token (`manage.py revoke_token`, DELETE /api/tokens/<prefix>/), one past
its TOKEN_TTL_HOURS, a logout (its session deleted) or a deactivated user would
keep reading the room, and posting to it, until the socket closed by itself.

Every CHAT_AUTH_RECHECK_SECONDS each worker reads, in one query per kind (per
CHUNK sockets), which of the tokens, sessions and users its open authenticated
sockets were opened with are still valid, and closes the other sockets with 4401: the client's
"stop" code (it must authenticate again), after the messages they already
handed over are stored and acknowledged, as a rate-limit close does. The check
runs only while the worker holds authenticated sockets: anonymous sockets cost
nothing, and the cost does not grow with the messages sent.

Sessions are checked where the session engine stores them in the database
(django.contrib.sessions' db and cached_db engines: the row must exist and not
be expired); a signed-cookie session cannot be revoked server-side, and other
engines get the user check only. A password change that ends the user's other
sessions through the session hash is not seen here: log them out (delete the
sessions) or deactivate the user.
"""
import asyncio
import logging
import weakref
from importlib import import_module

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from wsworker import registry, ticks

from . import protocol
from .models import ApiToken

logger = logging.getLogger(__name__)

CHUNK = 5000  # ids per query: Postgres takes at most 65,535 parameters per statement
_checkers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Checker]" = weakref.WeakKeyDictionary()


def credential_of(scope, user_id):
    """What a socket was authenticated with: ("token", token id) or ("session", key); None if anonymous."""
    if user_id is None:
        return None
    if scope.get("token_id") is not None:
        return ("token", scope["token_id"])
    session = scope.get("session")
    key = getattr(session, "session_key", None)
    return ("session", key) if key else None


def watch(consumer) -> None:
    """Check this authenticated socket's credential every CHAT_AUTH_RECHECK_SECONDS (0: never)."""
    if settings.CHAT_AUTH_RECHECK_SECONDS <= 0 or consumer.user_id is None:
        return
    loop = asyncio.get_running_loop()
    checker = _checkers.get(loop)
    if checker is None:
        checker = _checkers[loop] = Checker()
    checker.add(consumer)


def _session_model():
    """The session engine's model when it keeps sessions in the database, else None."""
    store = import_module(settings.SESSION_ENGINE).SessionStore
    get_model = getattr(store, "get_model_class", None)
    return get_model() if get_model is not None else None


def _chunks(values: list):
    for start in range(0, len(values), CHUNK):
        yield values[start:start + CHUNK]


def ended(credentials: set, user_ids: set) -> tuple[dict, dict]:
    """({credential: why it ended}, {user id: why}) for those no longer valid."""
    now = timezone.now()
    gone = {}
    token_ids = [value for kind, value in credentials if kind == "token"]
    if token_ids:
        rows = {pk: (revoked, expires) for chunk in _chunks(token_ids) for pk, revoked, expires in
                ApiToken.objects.filter(pk__in=chunk).values_list("pk", "revoked_at", "expires_at")}
        for pk in token_ids:
            revoked, expires = rows.get(pk, (None, None))
            if pk not in rows:
                gone[("token", pk)] = "token deleted"
            elif revoked is not None:
                gone[("token", pk)] = "token revoked"
            elif expires <= now:
                gone[("token", pk)] = "token expired"
    keys = [value for kind, value in credentials if kind == "session"]
    model = _session_model() if keys else None
    if model is not None:
        live = {key for chunk in _chunks(keys) for key in
                model.objects.filter(session_key__in=chunk, expire_date__gt=now).values_list("session_key", flat=True)}
        gone.update({("session", key): "session ended" for key in keys if key not in live})
    users = {}
    if user_ids:
        active = {pk: is_active for chunk in _chunks(list(user_ids)) for pk, is_active in
                  get_user_model().objects.filter(pk__in=chunk).values_list("pk", "is_active")}
        users = {pk: ("user deleted" if pk not in active else "user inactive")
                 for pk in user_ids if not active.get(pk)}
    return gone, users


_ended = database_sync_to_async(ended)  # every CHAT_AUTH_RECHECK_SECONDS: the thread hop is nothing


class Checker:
    def __init__(self):
        self.sockets: weakref.WeakSet = weakref.WeakSet()
        self.task = None

    def add(self, consumer) -> None:
        self.sockets.add(consumer)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())

    async def _run(self):
        while self.sockets:
            await ticks.sleep(settings.CHAT_AUTH_RECHECK_SECONDS)  # with the worker's other chores
            try:
                await self.check()
            except Exception as exc:
                # Postgres is down or slow: the sockets stay open; checked again next interval.
                logger.warning("ws credentials check of %d socket(s) failed: %s", len(self.sockets), exc)

    async def check(self) -> int:
        """Close the sockets whose credential or user ended; how many it closed."""
        sockets = [c for c in self.sockets if not c.closed and c.credential is not None]
        if not sockets:
            return 0
        gone, users = await _ended({c.credential for c in sockets}, {c.user_id for c in sockets})
        closing = [(c, gone.get(c.credential) or users.get(c.user_id)) for c in sockets]
        closing = [(c, why) for c, why in closing if why and not c.closed]
        for consumer, why in closing:
            self.sockets.discard(consumer)
            logger.warning("ws credentials ended (%s): closing with %d user_id=%s room=%s",
                           why, protocol.CLOSE_UNAUTHORIZED, consumer.user_id, consumer.room)
            registry.refusals[f"close {protocol.CLOSE_UNAUTHORIZED} {why}"] += 1
        results = await asyncio.gather(*(c.close_unauthorized() for c, _why in closing), return_exceptions=True)
        for failed in (r for r in results if isinstance(r, Exception)):
            logger.warning("closing a socket with %d failed: %r", protocol.CLOSE_UNAUTHORIZED, failed)
        return len(closing)
