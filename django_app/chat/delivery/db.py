"""The Writer's own Postgres connection: async, so storing a batch needs no thread hop.

Everything else reads through Django's ORM, in a worker thread
(database_sync_to_async). The statement that runs for every batch of messages,
store.persist_batch's, runs here instead, on one psycopg AsyncConnection per
worker (per event loop): the Writer runs one statement at a time, so one
connection is all it needs. Measured: about 2.5x less CPU per statement than
Django's cursor behind asgiref's thread hop (docs/benchmarks.md).

It connects with Django's DATABASES["default"] (host, port, credentials,
OPTIONS other than the pool) and gives up after DB_POOL_TIMEOUT, like a pool
checkout would. A connection Postgres dropped is replaced on the next batch.
"""
import asyncio
import weakref

import psycopg
from django.conf import settings

_connections: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, psycopg.AsyncConnection]" = (
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


async def connection() -> psycopg.AsyncConnection:
    """This loop's connection, (re)opened if Postgres dropped it."""
    loop = asyncio.get_running_loop()
    conn = _connections.get(loop)
    if conn is None or conn.closed or conn.broken:
        if conn is not None:
            await conn.close()
        timeout = settings.DATABASES["default"]["OPTIONS"].get("pool", {}).get("timeout", 10)
        conn = await asyncio.wait_for(
            psycopg.AsyncConnection.connect(autocommit=True, **connect_kwargs(timeout)), timeout)
        _connections[loop] = conn
    return conn


async def execute(sql: str, params: dict) -> list:
    """Run one autocommit statement on the Writer's connection; its rows."""
    conn = await connection()
    try:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()
    except psycopg.OperationalError:
        if conn.broken or conn.closed:
            _connections.pop(asyncio.get_running_loop(), None)
        raise


async def close() -> None:
    """Close this loop's connection (tests: before their loop goes away)."""
    conn = _connections.pop(asyncio.get_running_loop(), None)
    if conn is not None:
        await conn.close()
