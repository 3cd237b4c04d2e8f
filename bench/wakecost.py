"""What one loopback send() costs the sender, to a busy peer and to a sleeping one.

On a VM a send() whose receiver sleeps in epoll pays for waking it (an
inter-processor interrupt, a VM exit), several times the cost of the send
itself. Every hop of a message (client → nginx → worker → Postgres, Redis →
workers → nginx → client) is such a send, so at low rates, where every peer
sleeps between messages, CPU per delivery is dominated by it, for every stack.
The report prints both figures so low-rate and sparse results can be read
against the machine they ran on.
"""
import os
import select
import socket
import time


def _sleeping_peer(listener) -> None:
    conn, _ = listener.accept()
    poller = select.epoll()
    poller.register(conn.fileno(), select.EPOLLIN)
    while True:
        poller.poll()
        if not conn.recv(65536):
            return


def sender_cpu_us(count: int, gap_s: float) -> float:
    """Mean CPU of one 100-byte send() to a peer that waits in epoll, `gap_s` apart."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    address = listener.getsockname()
    pid = os.fork()
    if pid == 0:
        try:
            _sleeping_peer(listener)
        finally:
            os._exit(0)
    listener.close()
    try:
        with socket.create_connection(address) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            cpu = 0.0
            for _ in range(count):
                start = time.thread_time()
                sock.send(b"x" * 100)
                cpu += time.thread_time() - start
                if gap_s:
                    time.sleep(gap_s)
    finally:
        os.waitpid(pid, 0)
    return round(cpu / count * 1e6, 1)


def measure() -> dict:
    """{busy_us, sleeping_us}: back-to-back sends, and sends 5 ms apart (about 2 s)."""
    return {"busy_us": sender_cpu_us(3000, 0.0), "sleeping_us": sender_cpu_us(300, 0.005)}


if __name__ == "__main__":
    print(measure())
