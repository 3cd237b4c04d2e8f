"""`scripts/local backup` / `restore FILE` on the live native stack (the steps `make
backup` / `make restore` run in the db container, scripts/backup.sh): what a chat
user sees after a restore, and that a bad file or an unconfirmed restore changes
nothing."""
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.stack import StackError

from .wsclient import new_room, open_chat, recv_message, send_text


async def _post(stack, room: str, *texts: str) -> list[int]:
    ws, _ = await open_chat(stack.ws_base, room)
    try:
        ids = []
        for text in texts:
            await send_text(ws, text)
            ids.append((await recv_message(ws, text))["id"])
        return ids
    finally:
        await ws.close()


async def _history(stack, room: str) -> tuple[list[str], int]:
    ws, welcome = await open_chat(stack.ws_base, room)
    await ws.close()
    return [m["message"] for m in welcome["history"]], welcome["last_id"]


def _dump_text(path: Path) -> str:
    """The SQL a dump restores (pg_restore of the host's Postgres, no database needed)."""
    pg_bin = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    return subprocess.run([str(pg_bin / "pg_restore"), "--file=-", str(path)], check=True,
                          capture_output=True, text=True, timeout=60).stdout


def _path_after(out: str, prefix: str) -> Path:
    line = next(line for line in out.splitlines() if line.startswith(prefix))
    return Path(line[len(prefix):].strip())


async def test_restore_brings_back_the_rooms_as_they_were_backed_up(native_stack, tmp_path):
    """Backup, two more messages, restore: the room's history is the backup's, the next
    message takes the next id after it (ids stay dense), the messages written since
    the backup are in the safety dump the restore wrote first, and both workers and
    the web tier serve again."""
    env = {"BACKUP_DIR": str(tmp_path / "backups")}
    room = new_room("backup")
    assert await _post(native_stack, room, "kept 1", "kept 2") == [1, 2]

    backup = Path(native_stack.run_local("backup", env=env).strip().splitlines()[-1])
    assert backup.parent == tmp_path / "backups" and backup.name.startswith("chat-") and backup.suffix == ".dump"
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert stat.S_IMODE(backup.parent.stat().st_mode) == 0o700
    assert not list(backup.parent.glob("*.partial"))

    assert await _post(native_stack, room, "lost 3", "lost 4") == [3, 4]
    workers_before = {i: native_stack.pid("ws", i) for i in (1, 2)}

    out = native_stack.run_local("restore", str(backup), env={**env, "CONFIRM": "yes"})
    assert f"restored {backup}" in out, out
    safety = _path_after(out, "restore: the current data first went to ")
    assert safety.name.startswith("chat-before-restore-") and "lost 4" in _dump_text(safety)

    # The app was restarted around the restore: no worker keeps the lost messages.
    assert all(native_stack.pid("ws", i) not in (None, workers_before[i]) for i in (1, 2))
    assert await _history(native_stack, room) == (["kept 1", "kept 2"], 2)
    assert await _post(native_stack, room, "after the restore") == [3]
    assert await _history(native_stack, room) == (["kept 1", "kept 2", "after the restore"], 3)


@pytest.mark.parametrize("content", [b"not a dump\n", b""], ids=["garbage", "empty"])
async def test_a_file_that_is_not_a_backup_changes_nothing(native_stack, tmp_path, content):
    """A restore of anything but a pg_dump archive stops before the app stops: exit 1,
    a message naming the file, the same worker processes, the same history."""
    room = new_room("notabackup")
    await _post(native_stack, room, "still here")
    bogus = tmp_path / "bogus.dump"
    bogus.write_bytes(content)
    workers = {i: native_stack.pid("ws", i) for i in (1, 2)}
    with pytest.raises(StackError) as failed:
        native_stack.run_local("restore", str(bogus), env={"BACKUP_DIR": str(tmp_path), "CONFIRM": "yes"})
    assert f"{bogus} is not a backup made by make backup" in str(failed.value)
    assert "nothing changed" in str(failed.value)
    assert {i: native_stack.pid("ws", i) for i in (1, 2)} == workers
    assert list(tmp_path.glob("chat-before-restore-*")) == []
    assert await _history(native_stack, room) == (["still here"], 1)


async def test_a_truncated_backup_rolls_back_whole(native_stack, tmp_path):
    """A dump cut short after its table of contents reads as an archive but fails
    during the restore: the one transaction rolls back, the command exits 1 saying
    so, and the app comes back with the data it had."""
    env = {"BACKUP_DIR": str(tmp_path)}
    room = new_room("truncated")
    await _post(native_stack, room, "before the bad restore")
    backup = Path(native_stack.run_local("backup", env=env).strip().splitlines()[-1])
    cut = tmp_path / "cut.dump"
    data = backup.read_bytes()
    cut.write_bytes(data[:-200])  # the last table's rows: its table of contents still reads
    with pytest.raises(StackError) as failed:
        native_stack.run_local("restore", str(cut), env={**env, "CONFIRM": "yes"})
    assert "was rolled back: the data is as before" in str(failed.value)
    assert await _history(native_stack, room) == (["before the bad restore"], 1)
    assert await _post(native_stack, room, "and after it") == [2]


async def test_a_restore_whose_safety_backup_fails_changes_nothing(native_stack, tmp_path):
    """The current data must be saved before it is replaced: when BACKUP_DIR cannot be
    made, the restore stops there, exit 1 naming the setting, the app untouched."""
    room = new_room("nosafety")
    await _post(native_stack, room, "kept")
    backup = Path(native_stack.run_local("backup", env={"BACKUP_DIR": str(tmp_path / "ok")}).strip().splitlines()[-1])
    await _post(native_stack, room, "also kept")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    workers = {i: native_stack.pid("ws", i) for i in (1, 2)}
    with pytest.raises(StackError) as failed:
        native_stack.run_local("restore", str(backup), env={"BACKUP_DIR": str(blocked / "sub"), "CONFIRM": "yes"})
    assert f"BACKUP_DIR={blocked / 'sub'}: cannot create it" in str(failed.value)
    assert "restored" not in str(failed.value)
    assert {i: native_stack.pid("ws", i) for i in (1, 2)} == workers
    assert await _history(native_stack, room) == (["kept", "also kept"], 2)


def test_restore_without_a_terminal_or_confirm_changes_nothing(native_stack, tmp_path):
    env = {"BACKUP_DIR": str(tmp_path)}
    backup = Path(native_stack.run_local("backup", env=env).strip().splitlines()[-1])
    workers = {i: native_stack.pid("ws", i) for i in (1, 2)}
    with pytest.raises(StackError) as refused:
        native_stack.run_local("restore", str(backup), env={**env, "CONFIRM": ""})
    assert "CONFIRM=yes" in str(refused.value) and "nothing changed" in str(refused.value)
    assert {i: native_stack.pid("ws", i) for i in (1, 2)} == workers
    assert [p.name for p in tmp_path.iterdir()] == [backup.name]
