"""Reading client frames: the frames chat clients send, parsed without autobahn's machinery.

Nearly every frame a chat client sends is one small, masked, unfragmented text
frame. autobahn reads each through a generic state machine built for streaming
and extensions: about sixty Python calls per frame (a frame header object, a
cffi XOR masker, an incremental UTF-8 validator, per-frame and per-message
hooks, and a Deferred fired for observers nobody registered). Measured on a ws
worker with many small rooms, that was a third of its CPU.

split_text_frames() takes only the frames whose meaning leaves nothing to
decide: FIN set, no RSV bits, opcode text, masked, a minimally encoded length
within the limit, complete in the buffer, valid UTF-8. It stops at the first
frame that is anything else (a ping, a close, a binary or fragmented message, a
protocol violation, an oversized or invalid payload, a partial frame), and the
caller hands everything from there to autobahn, which answers as it always did
(pong, close handshake, 1002, 1007, 1009), in order.

pong_payload() does the same for the other frame every idle socket sends: the
answer to the server's keepalive ping, one per socket per WS_PING_INTERVAL.
"""

MAX_SHORT = 125  # payload lengths up to this are in the header's second byte


def split_text_frames(data: bytes, limit: int) -> tuple[list[bytes], int]:
    """The payloads of the complete simple text frames at the start of `data`, and the
    bytes they took. `limit`: the largest payload accepted here (0: no limit; larger
    frames are left to autobahn, which closes with 1009). Payloads are valid UTF-8."""
    texts: list[bytes] = []
    size = len(data)
    pos = 0
    while size - pos >= 6:
        if data[pos] != 0x81:  # FIN + text, no RSV bits
            break
        second = data[pos + 1]
        if not second & 0x80:  # unmasked: a protocol violation, autobahn's to answer
            break
        length = second & 0x7F
        head = pos + 6
        if length > MAX_SHORT:
            if length != 126 or size - pos < 8:
                break
            length = (data[pos + 2] << 8) | data[pos + 3]
            if length <= MAX_SHORT:  # not minimally encoded
                break
            head = pos + 8
        end = head + length
        if end > size or (limit and length > limit):
            break
        payload = _unmask(data[head - 4:head], data[head:end], length)
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            break
        texts.append(payload)
        pos = end
    return texts, pos


def pong_payload(data: bytes) -> bytes | None:
    """The payload when `data` is exactly one complete, masked, final pong frame; else None."""
    if len(data) < 6 or data[0] != 0x8A:  # FIN + pong, no RSV bits
        return None
    second = data[1]
    length = second & 0x7F
    if not second & 0x80 or length > MAX_SHORT or len(data) != 6 + length:
        return None
    return _unmask(data[2:6], data[6:], length)


def _unmask(mask: bytes, masked: bytes, length: int) -> bytes:
    """RFC 6455 5.3: XOR with the 4-byte key repeated, as one big-integer XOR (C speed)."""
    if not length:
        return b""
    key = (mask * ((length >> 2) + 1))[:length]
    return (int.from_bytes(masked, "little") ^ int.from_bytes(key, "little")).to_bytes(length, "little")
