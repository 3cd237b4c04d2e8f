"""Pre-built WebSocket frames: the fast path for fan-out.

A fan-out sends the same text to many sockets. Through ASGI each socket would
frame it again and go through the app's send wrapper, daphne's handle_reply and
autobahn's sendData. Instead the server offers every WebSocket scope, under
SCOPE_FRAMES, a pair (frame, send):

    frame(text: str) -> bytes      one unmasked, uncompressed text frame
    send(frames: bytes) -> bool    write frames to this socket; False when the
                                   socket needs the ASGI path (e.g. compression)

so an app frames each message once per worker and writes the same bytes to
every local socket. Under any other ASGI server the key is absent.
"""
from autobahn.websocket.protocol import PreparedMessage

SCOPE_FRAMES = "wsworker.frames"


def frame_text(text: str) -> bytes:
    """One unmasked, uncompressed WebSocket text frame (autobahn does the framing)."""
    return PreparedMessage(text.encode("utf-8"), False, False, True).payloadHybi
