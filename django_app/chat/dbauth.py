"""Name the cause when Postgres refuses the app's password.

The usual way to get there: the Postgres data volume was initialised with one
POSTGRES_PASSWORD (the image sets it only on the first start, on an empty
volume), then `.env` was recreated with new random secrets (a new clone, a
deleted `.env`). Every later start fails, and what the operator saw was a pool
timeout in migrate's log and "password authentication failed" only in the db
log. This module turns that failure into one sentence that names the setting,
the volume and the fix; the migrate system check (chat.checks) and /readyz
(chat.health) both use it, and scripts/compose looks for its code (chat.E001).
"""
from __future__ import annotations

# SQLSTATE invalid_password (28P01) and invalid_authorization_specification
# (28000: no pg_hba entry, or a role that may not log in).
AUTH_SQLSTATES = frozenset({"28P01", "28000"})
# libpq reports connection-time failures as text: psycopg gives no sqlstate
# for an error raised before the connection exists, so the server's message is
# matched too (it is the same text in every Postgres release since 9.x).
AUTH_MESSAGES = ("password authentication failed", "no pg_hba.conf entry")

CHECK_ID = "chat.E001"


def is_auth_failure(exc: BaseException) -> bool:
    if getattr(exc, "sqlstate", None) in AUTH_SQLSTATES:
        return True
    text = str(exc)
    return any(m in text for m in AUTH_MESSAGES)


def explain(user: str | None) -> str:
    """The sentence an operator reads in `docker compose logs migrate` and on /readyz."""
    who = f'user "{user}"' if user else "the app's user"
    return (
        f"Postgres refused the password of {who}: POSTGRES_PASSWORD does not match the password "
        "the Postgres data volume was created with (Postgres sets it only on its first start, "
        "so new secrets in .env do not change it). Fix: restore the .env that created the volume, "
        "or delete the data with `make reset` (compose: removes the pgdata volume; every message is lost)."
    )
