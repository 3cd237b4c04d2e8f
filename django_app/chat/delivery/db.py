"""The ws worker's own async Postgres connections: storing a batch and reading a room need no thread hop.

Everything else reads through Django's ORM, in a worker thread
(database_sync_to_async). Two kinds of statement run on every worker often
enough that the hop, the ORM and one database thread matter, so they run on
psycopg AsyncConnections instead, one per role per worker (per event loop):

- "write": store.persist_batch's statement, for every batch of messages. The
  Writer runs one statement at a time, so one connection is all it needs.
  Measured: about 2.5x less CPU per statement than Django's cursor behind
  asgiref's thread hop (docs/benchmarks.md).
- "read": a Room's history and position when a room is new to the worker, a
  resume older than its cache, a gap fill (store.snapshot_async,
  store.between_async), and the quiet-room check's newest ids of the rooms that
  went quiet, every QUIET_CHECK_SECONDS while there is traffic (store.heads_async).
  With many small rooms nearly every connect opens a
  Room: through the ORM each read cost ~1 ms of CPU and waited its turn on the
  one database thread. Its own connection, so a storm of joins never delays the
  Writer's next statement, and the Writer never delays a join.

A role's statements wait for each other (psycopg's connection lock). Each
connects with Django's DATABASES["default"] (host, port, credentials, OPTIONS
other than the pool) and gives up after DB_POOL_TIMEOUT, like a pool checkout
would. A connection Postgres dropped is replaced on the role's next statement.
A ws worker therefore holds up to DB_POOL_MAX_SIZE + 2 Postgres connections.
"""
import asyncio
import weakref

import psycopg
from django.conf import settings

ROLES = ("write", "read")
_connections: "dict[str, weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, psycopg.AsyncConnection]]" = {
    role: weakref.WeakKeyDictionary() for role in ROLES
}
_connecting: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]]" = (
    weakref.WeakKeyDictionary()
)


def connect_kwargs(timeout: float, alias: str = "default") -> dict:
    """psycopg.connect() arguments for one of Django's databases (also web /readyz's probe)."""
    db = settings.DATABASES[alias]
    kwargs = {
        "host": db.get("HOST") or None,
        "port": db.get("PORT") or None,
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
        "dbname": db.get("NAME"),
        "connect_timeout": max(1, int(timeout)),
    }
    for key, value in db.get("OPTIONS", {}).items():
        if key not in ("pool", "server_side_binding") and isinstance(value, (str, int)):
            kwargs[key] = value
    return {k: v for k, v in kwargs.items() if v is not None}


async def connection(role: str = "write") -> psycopg.AsyncConnection:
    """This loop's connection for `role`, (re)opened if Postgres dropped it."""
    loop = asyncio.get_running_loop()
    conn = _connections[role].get(loop)
    if conn is not None and not conn.closed and not conn.broken:
        return conn
    # Reads start concurrently (many rooms joined at once): one of them connects.
    lock = _connecting.setdefault(loop, {}).setdefault(role, asyncio.Lock())
    async with lock:
        conn = _connections[role].get(loop)
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                await conn.close()
            timeout = settings.DATABASES["default"]["OPTIONS"].get("pool", {}).get("timeout", 10)
            conn = await asyncio.wait_for(
                psycopg.AsyncConnection.connect(autocommit=True, **connect_kwargs(timeout)), timeout)
            _connections[role][loop] = conn
    return conn


async def execute(sql: str, params: dict, role: str = "write") -> list:
    """Run one autocommit statement on this loop's `role` connection; its rows."""
    conn = await connection(role)
    try:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()
    except psycopg.OperationalError:
        if conn.broken or conn.closed:
            _connections[role].pop(asyncio.get_running_loop(), None)
        raise


async def close() -> None:
    """Close this loop's connections (tests: before their loop goes away)."""
    loop = asyncio.get_running_loop()
    for by_loop in _connections.values():
        conn = by_loop.pop(loop, None)
        if conn is not None:
            await conn.close()
