"""scripts/ws-upstream-check's probe (the native runner's hung-worker check).

It keeps one HTTP connection per worker: a restart that closes that connection
must not count as a failed probe (two in a row take a worker out of nginx), and a
worker that stops answering must still fail within the timeout. The whole loop
against real workers (SIGSTOP, a tier restart) is in tests/faults and
tests/integration; these are real HTTP servers on loopback.
"""
import http.server
import socket
import threading
import time

import pytest

from tests import scripts

TIMEOUT = 0.5
check = scripts.load("ws-upstream-check")


class _Worker:
    """A /healthz server on a fixed loopback port that counts the connections it accepted."""

    def __init__(self, port: int = 0):
        self.connections = 0
        self.open: list[socket.socket] = []
        self.hang = threading.Event()
        worker = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as daphne answers

            def setup(self):
                worker.connections += 1
                worker.open.append(self.request)
                super().setup()

            def do_GET(self):  # noqa: N802
                if worker.hang.is_set():
                    time.sleep(TIMEOUT * 4)
                body = b'{"status": "ok"}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a connection stop() cut under its handler thread

        self.server = Server(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        for sock in self.open:  # as the kernel does when the process exits
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


@pytest.fixture
def worker():
    found = _Worker()
    yield found
    found.stop()


def test_a_live_workers_probes_share_one_connection(worker):
    probe = check.Prober(f"127.0.0.1:{worker.port}", TIMEOUT)
    assert all(probe() for _ in range(5))
    assert worker.connections == 1


def test_a_restarted_worker_costs_no_failed_probe(worker):
    probe = check.Prober(f"127.0.0.1:{worker.port}", TIMEOUT)
    assert probe()
    port = worker.port
    worker.stop()  # the old process is gone, and with it the prober's kept connection
    restarted = _Worker(port)
    try:
        assert probe(), "the closed kept connection counted as a failed probe"
        assert restarted.connections == 1
    finally:
        restarted.stop()


def test_a_stopped_worker_fails_its_probe(worker):
    probe = check.Prober(f"127.0.0.1:{worker.port}", TIMEOUT)
    assert probe()
    worker.stop()
    assert not probe()  # the retry on a new connection is refused


def test_a_hung_worker_fails_within_the_timeout_every_time(worker):
    probe = check.Prober(f"127.0.0.1:{worker.port}", TIMEOUT)
    assert probe()
    worker.hang.set()
    for _ in range(2):
        started = time.monotonic()
        assert not probe()
        assert time.monotonic() - started < TIMEOUT * 2  # no retry behind a timeout
    worker.hang.clear()
    deadline = time.monotonic() + 10
    while not probe():
        assert time.monotonic() < deadline, "the worker answers again but its probes still fail"
