"""Pages go nginx → gunicorn; static files are hashed and cached for a long time."""
import re
import time
import uuid

import requests

ONE_YEAR = 365 * 24 * 3600


def wait_for_line(path, needle: str, timeout: float = 10.0) -> str:
    """Access logs are written after the response: poll for the line, with a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text(errors="replace").splitlines():
            if needle in line:
                return line
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} not in {path} after {timeout}s")


def test_chat_page_is_served_by_gunicorn_through_nginx(native_stack):
    room = f"page-{uuid.uuid4().hex[:10]}"
    resp = requests.get(f"{native_stack.http_url}/chat/{room}/", timeout=10)
    assert resp.status_code == 200, resp.text[:500]
    assert resp.headers.get("Server") == "nginx"  # server_tokens off: no version
    gunicorn_line = wait_for_line(native_stack.log_path("web"), f"/chat/{room}/")
    assert " 200 " in gunicorn_line
    nginx_line = wait_for_line(native_stack.log_path("nginx"), f"/chat/{room}/")
    assert f"upstream=127.0.0.1:{native_stack.ports['LOCAL_WEB_PORT']}" in nginx_line


def test_hashed_static_script_has_long_lived_cache_headers(native_stack):
    page = requests.get(f"{native_stack.http_url}/chat/lobby/", timeout=10)
    assert page.status_code == 200
    scripts = re.findall(r'src="([^"]*/chat\.[0-9a-f]{8,}\.js)"', page.text)
    assert scripts, f"no hashed chat.js in the page: {page.text[:800]}"
    resp = requests.get(native_stack.http_url + scripts[0], timeout=10)
    assert resp.status_code == 200
    assert "javascript" in resp.headers["Content-Type"]
    max_age = int(re.search(r"max-age=(\d+)", resp.headers["Cache-Control"]).group(1))
    assert max_age >= ONE_YEAR, resp.headers["Cache-Control"]


def test_health_endpoints_through_nginx(native_stack):
    assert requests.get(f"{native_stack.http_url}/nginx-health", timeout=5).text == "ok\n"
    assert requests.get(f"{native_stack.http_url}/healthz", timeout=5).status_code == 200
    ready = requests.get(f"{native_stack.http_url}/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"db": "ok", "redis": "ok"}}


def test_token_is_redacted_in_nginx_access_log(native_stack):
    marker = uuid.uuid4().hex
    # Repeated and percent-encoded keys must not slip through either.
    requests.get(f"{native_stack.http_url}/healthz?token=a-{marker}&token=sekrit-{marker}&%74oken=b-{marker}",
                 headers={"User-Agent": f"probe-{marker}"}, timeout=5)
    line = wait_for_line(native_stack.log_path("nginx"), f"probe-{marker}")
    assert "/healthz?REDACTED" in line
    assert f"sekrit-{marker}" not in native_stack.log_path("nginx").read_text()
