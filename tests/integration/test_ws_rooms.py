"""A room spans every daphne worker: messages cross workers through Redis,
both when clients reach workers directly and when nginx spreads them."""
from datetime import datetime

from .wsclient import new_room, open_chat, recv_message, send_text

MAX_NGINX_CONNECTS = 12  # round-robin over 2 workers hits both long before this


def assert_message(frame: dict, room: str, text: str) -> None:
    assert frame["type"] == "chat.message"
    assert frame["room"] == room and frame["message"] == text
    assert isinstance(frame["id"], int) and frame["id"] >= 1
    assert frame["username"]
    assert datetime.fromisoformat(frame["ts"].replace("Z", "+00:00")).tzinfo is not None


async def exchange(a, b, room: str) -> None:
    """Each side sees its own and the other's message, with the same id."""
    await send_text(a, "hello from a")
    got_a, got_b = await recv_message(a, "hello from a"), await recv_message(b, "hello from a")
    assert_message(got_b, room, "hello from a")
    assert got_a["id"] == got_b["id"]
    await send_text(b, "hello from b")
    got_b2, got_a2 = await recv_message(b, "hello from b"), await recv_message(a, "hello from b")
    assert_message(got_a2, room, "hello from b")
    assert got_a2["id"] == got_b2["id"] == got_a["id"] + 1


async def test_clients_on_two_workers_share_a_room(native_stack):
    room = new_room()
    url1, url2 = native_stack.ws_worker_urls
    a, welcome_a = await open_chat(url1, room)
    b, welcome_b = await open_chat(url2, room)
    try:
        assert welcome_a["worker"] != welcome_b["worker"]
        assert welcome_a["history"] == [] and welcome_a["last_id"] == 0
        await exchange(a, b, room)
    finally:
        await a.close()
        await b.close()


async def test_nginx_spreads_sockets_over_workers_and_rooms_still_span_them(native_stack):
    room = new_room()
    by_worker: dict[str, object] = {}
    opened = []
    try:
        for _ in range(MAX_NGINX_CONNECTS):
            ws, welcome = await open_chat(native_stack.ws_base, room)
            opened.append(ws)
            by_worker.setdefault(welcome["worker"], ws)
            if len(by_worker) == 2:
                break
        assert len(by_worker) == 2, f"nginx sent {len(opened)} sockets to {list(by_worker)} only"
        a, b = by_worker.values()
        await exchange(a, b, room)
    finally:
        for ws in opened:
            await ws.close()


async def test_late_joiner_gets_history_through_nginx(native_stack):
    room = new_room()
    a, _ = await open_chat(native_stack.ws_base, room)
    try:
        await send_text(a, "before you came")
        sent = await recv_message(a, "before you came")
    finally:
        await a.close()
    b, welcome = await open_chat(native_stack.ws_base, room)
    await b.close()
    assert [m["message"] for m in welcome["history"]] == ["before you came"]
    assert welcome["last_id"] == sent["id"]
