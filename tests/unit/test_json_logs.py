"""LOG_FORMAT=json: one JSON object per log line, tokens redacted as in plain lines.

Checked in fresh processes, the way each tier starts: Django's LOGGING (web, ws,
migrate, manage.py), gunicorn's own error and access lines (services/gunicorn.conf.py)
and the ws worker's access lines (wsworker.access).
"""
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import websockets

from .conftest import free_port
from .test_wsworker import _start_worker, _stop

ROOT = Path(__file__).resolve().parents[2]
DJANGO_APP = ROOT / "django_app"
LEAK = "GET /ws/chat/lobby/?token=s3cr3t-t0ken&after=4"


def _log_lines(fmt: str) -> list[str]:
    code = f"import logging; logging.getLogger('chat.consumers').warning({LEAK!r})"
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=DJANGO_APP,
                            env=dict(os.environ, LOG_FORMAT=fmt), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if "/ws/chat/lobby/" in line]


def test_json_lines_carry_the_record_fields_and_no_token():
    (line,) = _log_lines("json")
    record = json.loads(line)
    assert record["level"] == "WARNING" and record["logger"] == "chat.consumers"
    assert record["message"] == "GET /ws/chat/lobby/?token=[redacted]&after=4"
    assert record["time"] and record["process"] > 0
    assert "s3cr3t" not in line


def test_plain_lines_are_unchanged():
    (line,) = _log_lines("plain")
    assert line.endswith(" GET /ws/chat/lobby/?token=[redacted]&after=4") and " WARNING chat.consumers " in line


def test_an_unknown_format_names_the_setting():
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=DJANGO_APP,
                            env=dict(os.environ, LOG_FORMAT="xml"), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "LOG_FORMAT must be plain or json" in result.stderr


def test_gunicorn_writes_json_lines_and_metrics_off_stays_off(tmp_path):
    # Metrics off, with a multiprocess dir inherited: the workers must not write there.
    port = free_port()
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "missing"), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               LOG_FORMAT="json", PORT=str(port), BIND_HOST="127.0.0.1", WEB_CONCURRENCY="1",
               WEB_METRICS_PORT="0")
    log = (tmp_path / "web.log").open("w+")
    proc = subprocess.Popen([str(ROOT / "services" / "bin" / "web")], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz?token=s3cr3t", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "web.log").read_text()
                time.sleep(0.2)
        # Django logs every 4xx with the request as an extra: a JSON field, query string included.
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/no-such-page?token=s3cr3t", timeout=5)
        assert missing.value.code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    lines = [line for line in (tmp_path / "web.log").read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line, gunicorn's own included
    assert any(r["logger"] == "gunicorn.error" and "Listening at" in r["message"] for r in records)
    access = [r["message"] for r in records if r["logger"] == "gunicorn.access"]
    assert any('"GET /no-such-page HTTP/1.1" 404' in m for m in access), access
    assert not any("/healthz" in m for m in access), access  # a passing probe is not logged (LOG_LEVEL=debug: it is)
    assert any(r["logger"] == "django.request" and "token=[redacted]" in r.get("request", "") for r in records)
    assert "s3cr3t" not in "\n".join(lines)
    assert not (tmp_path / "missing").exists()


@pytest.mark.django_db(transaction=True)
def test_the_ws_worker_writes_json_lines_its_access_lines_included():
    """daphne writes its access log straight to stdout; the worker's goes through
    logging: JSON with LOG_FORMAT=json, tokens redacted (daphne's HTTP lines carry
    the query string)."""
    port = free_port()
    proc = _start_worker(port, LOG_FORMAT="json")
    try:
        status = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz?token=s3cr3t", timeout=5).status
        assert status == 200
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/no-such-page?token=s3cr3t", timeout=5)
        assert missing.value.code == 404

        async def refused_socket():
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws/chat/jsonlog/?token=s3cr3t", open_timeout=5) as ws:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 5)
                return closed.value.rcvd.code

        assert asyncio.run(refused_socket()) == 4401  # an unknown token: accepted, then closed
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        _stop(proc)
    lines = [line for line in out.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line, the access lines included
    access = [r["message"] for r in records if r["logger"] == "wsworker.access"]
    assert any('"GET /no-such-page?token=[redacted]" 404' in m for m in access), access
    assert not any("/healthz" in m for m in access), access  # a passing probe is a DEBUG line
    assert any('"WSCONNECT /ws/chat/jsonlog/"' in m for m in access), access
    assert any('"WSDISCONNECT /ws/chat/jsonlog/"' in m for m in access), access
    assert "s3cr3t" not in out


def test_an_access_log_file_named_on_the_command_line_keeps_daphnes_lines(tmp_path):
    from daphne.access import AccessLogGenerator

    from wsworker import access
    from wsworker.server import WorkerServer

    def server(action_logger):  # built, never run: nothing listens
        return WorkerServer(None, endpoints=["tcp:port=0:interface=127.0.0.1"], action_logger=action_logger)

    with open(tmp_path / "access.log", "a") as stream:
        to_file = AccessLogGenerator(stream)
        assert server(to_file).action_logger is to_file
    assert server(AccessLogGenerator(sys.stdout)).action_logger is access.log_action
    assert server(None).action_logger is None


@pytest.mark.parametrize("path,status,level", [
    ("/healthz", 200, "DEBUG"),
    ("/readyz?full=1", 200, "DEBUG"),
    ("/readyz", 503, "INFO"),  # a failing probe is worth a line
    ("/healthz/", 200, "INFO"),  # not a probe path: Django's answer
    ("/api/rooms/", 200, "INFO"),
])
def test_passing_health_probes_are_debug_lines_everything_else_info(caplog, path, status, level):
    from wsworker import access

    with caplog.at_level("DEBUG", logger="wsworker.access"):
        access.log_action("http", "complete", {"client": "127.0.0.1:5", "method": "GET", "path": path,
                                                "status": status, "size": 10})
    (record,) = [r for r in caplog.records if r.name == "wsworker.access"]
    assert record.levelname == level and f'"GET {path}" {status} 10' in record.getMessage()


@pytest.mark.parametrize("fmt", ["json", "plain"])
def test_a_traceback_that_quotes_a_token_is_redacted(fmt):
    """An exception whose text carries a URL with its token (a library's error about a
    request, logged with logger.exception): the traceback is logged, the token is not."""
    code = ("import logging\n"
            "try:\n"
            f"    raise ValueError('cannot route ' + {LEAK!r})\n"
            "except ValueError:\n"
            "    logging.getLogger('chat.consumers').exception('handler failed')\n")
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=DJANGO_APP,
                            env=dict(os.environ, LOG_FORMAT=fmt), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "handler failed" in result.stdout
    assert "ValueError: cannot route GET /ws/chat/lobby/?token=[redacted]&after=4" in (
        json.loads(result.stdout.strip().splitlines()[-1])["exc_info"] if fmt == "json" else result.stdout)
    assert "s3cr3t" not in result.stdout + result.stderr
