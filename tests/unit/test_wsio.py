"""The per-socket pieces of our daphne server (wsworker.frames, wsworker.inbox): frames and the Inbox.

Frames are checked with the websockets library's own parser, i.e. as a client
reads them; the Inbox is checked for the orders of events daphne can produce.
"""
import asyncio

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from wsworker.frames import frame_text
from wsworker.inbox import Inbox


def parse_frames(data: bytes) -> list[Frame]:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=False)
        try:
            while True:
                next(parser)
        except StopIteration as done:
            frames.append(done.value)
    return frames


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_frame_text_is_one_text_frame_a_client_reads_back(length):
    # every length encoding of RFC 6455 (7-bit, 16-bit, 64-bit), with non-ASCII text
    text = ("é" * length)[:length]
    (frame,) = parse_frames(frame_text(text))
    assert frame.opcode == Opcode.TEXT and frame.fin
    assert frame.data.decode("utf-8") == text


def test_joined_frames_read_back_in_order():
    texts = [f'{{"id": {i}}}' for i in range(50)]
    frames = parse_frames(b"".join(frame_text(t) for t in texts))
    assert [f.data.decode() for f in frames] == texts


async def test_inbox_hands_events_over_in_order():
    inbox = Inbox()
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert await inbox.get() == 1
    waiting = asyncio.ensure_future(inbox.get())
    assert await waiting == 2
    waiting = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)  # the reader is now parked on the Inbox
    inbox.put_nowait(3)
    inbox.put_nowait(4)  # arrives before the reader runs: must wait its turn
    assert await waiting == 3
    assert await inbox.get() == 4


async def test_inbox_keeps_an_event_that_arrives_as_its_reader_is_cancelled():
    inbox = Inbox()
    reader = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("disconnect")
    reader.cancel()  # e.g. daphne cancelling the app while the event is in flight
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert await asyncio.wait_for(inbox.get(), 1) == "disconnect"


async def test_inbox_reader_cancelled_while_idle_leaves_it_usable():
    inbox = Inbox()
    reader = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    inbox.put_nowait("next")
    assert await asyncio.wait_for(inbox.get(), 1) == "next"


async def test_inbox_refuses_a_second_reader():
    inbox = Inbox()
    first = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="single reader"):
        await inbox.get()
    inbox.put_nowait("x")
    assert await first == "x"
