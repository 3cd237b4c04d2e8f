"""The fault experiment of scenario.py, run against the compose stack.

Why a second runner: in compose, Postgres sits on the internal `backend`
network, so the ground truth cannot be read from the host with psycopg as
persisted.py does. It is read with psql inside the db container
(`docker compose exec -T db psql`), which also keeps all test traffic on
loopback or on the project's own containers. The experiment itself (RoomLoad,
judge, its sizes and deadlines) is scenario.py's, so native and compose faults
are measured by the same rule.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Awaitable, Callable, TypeVar

from clients.chatclient import room_url

from tests.compose.composectl import Project, run
from tests.faults import scenario
from tests.faults.load import RoomLoad, Verdict

T = TypeVar("T")

# Rooms are spliced into SQL as literals (psql -c has no bind parameters), so
# only names of the contract's alphabet are ever accepted.
_ROOM_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def worker_host(worker: str | None) -> str | None:
    """welcome 'hostname:pid' -> hostname, which is the replica's container hostname."""
    return worker.rsplit(":", 1)[0] if worker else None


async def await_in_thread(check: Callable[[], T], timeout: float, interval: float = 0.5,
                          what: str = "condition") -> T:
    """await_until for checks that shell out to docker: run off the event loop,
    so the chat clients keep answering while the engine is asked."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class ComposeStack:
    """What a fault test needs of a running compose project, and nothing more."""

    project: Project

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.project.http_port}"

    @property
    def http_url(self) -> str:
        return self.project.base_url()

    def setting(self, key: str, default: str) -> str:
        for line in self.project.env_file.read_text().splitlines():
            if line.startswith(f"{key}="):
                return line.split("=", 1)[1] or default
        return default

    # --- ground truth ------------------------------------------------------------
    def sql_json(self, sql: str):
        """One JSON value computed by Postgres (psql over the container's local socket)."""
        out = self.project.compose(
            "exec", "-T", "db", "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-U", self.setting("POSTGRES_USER", "chat"), "-d", self.setting("POSTGRES_DB", "chat"),
            "-c", sql, timeout=60).stdout
        return json.loads(out)

    @staticmethod
    def _rooms_literal(rooms: list[str]) -> str:
        bad = [r for r in rooms if not _ROOM_RE.match(r)]
        if bad:
            raise ValueError(f"not room names: {bad}")
        return "ARRAY[" + ",".join(f"'{r}'" for r in rooms) + "]::text[]"

    def messages(self, rooms: list[str]) -> dict[str, list[tuple[int, str]]]:
        """room -> [(id, text)] in id order, as persisted.messages."""
        rows = self.sql_json(
            "SELECT COALESCE(json_agg(json_build_array(r.name, m.seq, m.body) ORDER BY r.name, m.seq), '[]')"
            " FROM chat_message m JOIN chat_room r ON r.id = m.room_id"
            f" WHERE r.name = ANY({self._rooms_literal(rooms)})")
        out: dict[str, list[tuple[int, str]]] = {room: [] for room in rooms}
        for name, seq, body in rows:
            out[name].append((int(seq), body))
        return out

    def heads(self, rooms: list[str]) -> dict[str, int]:
        """room -> highest persisted id (0 for a room with no message yet), as persisted.heads."""
        found = self.sql_json(
            "SELECT COALESCE(json_object_agg(name, head), '{}') FROM ("
            "SELECT r.name, COALESCE(MAX(m.seq), 0) AS head FROM chat_room r"
            " LEFT JOIN chat_message m ON m.room_id = r.id"
            f" WHERE r.name = ANY({self._rooms_literal(rooms)}) GROUP BY r.name) t")
        return {room: int(found.get(room, 0)) for room in rooms}

    # --- containers ----------------------------------------------------------------
    def ws_replicas(self) -> dict[str, str]:
        """hostname -> container id of every running ws replica."""
        return {self.project.hostname(cid): cid for cid in self.project.container_ids("ws")}

    def state(self, container_id: str) -> dict:
        return self.project.inspect(container_id)["State"]

    def healthy(self, container_id: str) -> bool:
        state = self.state(container_id)
        return state["Running"] and state.get("Health", {}).get("Status") == "healthy"

    def docker(self, *args: str, timeout: float = 60) -> str:
        return run(["docker", *args], env=self.project.env, timeout=timeout).stdout

    def logs_since(self, container_id: str, since_epoch: float) -> str:
        """Everything the container logged since then (the app logs to stderr)."""
        proc = run(["docker", "logs", "--since", f"{since_epoch:.3f}", container_id],
                   env=self.project.env, timeout=60)
        return proc.stdout + proc.stderr


Inject = Callable[[ComposeStack, RoomLoad], Awaitable[None]]


async def _caught_up(load: RoomLoad, heads: dict[str, int], timeout: float) -> None:
    """load.wait_caught_up, failing with who lags: room, replica, ids and close codes."""
    try:
        await load.wait_caught_up(heads, timeout)
    except AssertionError as exc:
        lagging = [f"{room} on {c.worker}: last_id={c.last_id} head={heads[room]} opens={c.opens}"
                   f" closes={[o.code for o in c.outages]}"
                   for room, cs in load.clients.items() for c in cs if (c.last_id or 0) < heads[room]]
        raise AssertionError(f"{exc}; lagging clients: {lagging}") from None


async def run_compose_fault(stack: ComposeStack, fault: str, inject: Inject,
                            restore: Inject | None = None) -> tuple[Verdict, RoomLoad]:
    """scenario.run_fault, with the ground truth read through the db container."""
    tag = f"{re.sub(r'[^A-Za-z0-9]', '', fault)[:24]}-{uuid.uuid4().hex[:6]}"
    rooms = [f"{tag}-r{i}" for i in range(scenario.ROOMS)]
    load = RoomLoad(lambda room: room_url(stack.ws_base, room), rooms, scenario.PER_ROOM, scenario.RATE, tag)
    try:
        await load.start()
        await load.wait_acks(scenario.WARMUP_ACKS, timeout=30)
        fault_at = time.monotonic()
        await inject(stack, load)
        heads = await asyncio.to_thread(stack.heads, rooms)
        await _caught_up(load, heads, scenario.CATCH_UP_TIMEOUT)
        catch_up = time.monotonic() - fault_at
        if restore is not None:
            await restore(stack, load)
        await load.wait_acks(scenario.AFTER_ACKS, timeout=60)
        await load.stop_sending()
        final = await asyncio.to_thread(stack.heads, rooms)
        await _caught_up(load, final, scenario.CATCH_UP_TIMEOUT)
        rows = await asyncio.to_thread(stack.messages, rooms)
        verdict = load.judge(fault, rows, since=fault_at)
        verdict.catch_up = catch_up
        return verdict, load
    finally:
        await load.close()
