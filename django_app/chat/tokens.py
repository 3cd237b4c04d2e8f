"""API tokens: issue, verify, revoke. Only sha256 hashes are stored.

A token is 32 random bytes (urlsafe); its first 8 characters are stored in the
clear as `prefix` so operators can name a token (list, revoke) without ever
seeing the secret again.
"""
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .models import ApiToken

PREFIX_LEN = 8
# Bound the write load: last_used_at is refreshed at most once a minute per token.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _new_token() -> str:
    """A prefix starting with '-' would read as an option in `revoke_token <prefix>`.

    Redrawing costs ~6 bits of the first character only; 64 draws all starting
    with '-' has probability 64**-64, so the bounded loop always returns early.
    """
    for _ in range(64):
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token
    raise RuntimeError("random source is broken")


@dataclass(frozen=True)
class Issued:
    token: str
    record: ApiToken


def issue(user, name: str = "", ttl_hours: int | None = None) -> Issued:
    ttl = ttl_hours if ttl_hours is not None else settings.TOKEN_TTL_HOURS
    token = _new_token()
    record = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=token[:PREFIX_LEN],
        key_hash=hash_token(token),
        expires_at=timezone.now() + timedelta(hours=ttl),
    )
    return Issued(token, record)


class TokenError(Exception):
    """reason is one of: invalid, expired, revoked (logged, never sent to the client)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def verify(token: str):
    """Return the active user owning `token`, or raise TokenError."""
    return verify_record(token).user


def verify_record(token: str) -> ApiToken:
    """The live ApiToken of `token` (its user loaded, and active), or raise TokenError."""
    if not token or len(token) > 256:
        raise TokenError("invalid")
    digest = hash_token(token)
    record = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=digest, prefix=token[:PREFIX_LEN])
        .first()
    )
    if record is None or not hmac.compare_digest(record.key_hash, digest):
        raise TokenError("invalid")
    now = timezone.now()
    if record.revoked_at is not None:
        raise TokenError("revoked")
    if record.expires_at <= now:
        raise TokenError("expired")
    if not record.user.is_active:
        raise TokenError("invalid")
    if record.last_used_at is None or now - record.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=record.pk).update(last_used_at=now)
    return record


def revoke(prefix: str, user=None) -> int:
    """Revoke every live token with this prefix (of `user` if given); returns the count."""
    qs = ApiToken.objects.filter(prefix=prefix, revoked_at__isnull=True)
    if user is not None:
        qs = qs.filter(user=user)
    return qs.update(revoked_at=timezone.now())
