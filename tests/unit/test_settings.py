"""Settings behaviour an operator relies on, checked in fresh processes."""
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chat.logfilters import RedactTokens

DJANGO_APP = Path(__file__).resolve().parents[2] / "django_app"


def _manage(*args, **env_overrides):
    env = dict(os.environ, **env_overrides)
    for key, value in list(env.items()):
        if value is None:
            del env[key]
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=DJANGO_APP, env=env, capture_output=True, text=True, timeout=60
    )


def test_missing_secret_key_refuses_to_start():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=DJANGO_APP, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "DJANGO_SECRET_KEY" in result.stderr


def test_debug_runs_without_secret_key():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"}
    env["DEBUG"] = "true"
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=DJANGO_APP, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_check_deploy_passes_with_tls():
    result = _manage(
        "check", "--deploy", "--fail-level", "WARNING",
        DJANGO_TLS="true", DEBUG="false", DJANGO_SECRET_KEY="k" * 20 + "-Zx9!long-random-secret-key-for-check-deploy-" + "q" * 10,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_secret_key_fallbacks_are_a_comma_separated_list():
    code = "from django.conf import settings; print(settings.SECRET_KEY_FALLBACKS)"
    listed = _manage("shell", "-c", code, DJANGO_SECRET_KEY_FALLBACKS=" old-one , old-two ,")
    unset = _manage("shell", "-c", code, DJANGO_SECRET_KEY_FALLBACKS="")
    assert listed.returncode == 0 and unset.returncode == 0, listed.stderr + unset.stderr
    assert listed.stdout.strip().splitlines()[-1] == "['old-one', 'old-two']"
    assert unset.stdout.strip().splitlines()[-1] == "[]"


def test_redis_password_is_url_quoted():
    code = "from django.conf import settings; print(settings.REDIS_URL)"
    result = _manage("shell", "-c", code, REDIS_PASSWORD="p@ss:/word", REDIS_URL=None)
    assert result.returncode == 0, result.stderr
    assert ":p%40ss%3A%2Fword@" in result.stdout


def test_token_redaction_filter_is_on_the_stdout_handler():
    from django.conf import settings

    assert "redact_tokens" in settings.LOGGING["handlers"]["stdout"]["filters"]
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "GET /ws/chat/a/?token=%s&after=3", ("s3cr3t",), None)
    RedactTokens().filter(record)
    assert record.getMessage() == "GET /ws/chat/a/?token=[redacted]&after=3"


def test_token_redaction_covers_extras_and_survives_one_that_cannot_be_printed():
    class Request:  # what django.request passes as `extra`: its repr carries the query string
        def __str__(self):
            return "<ASGIRequest: GET '/api/rooms/?token=s3cr3t'>"

    class Unprintable:
        def __str__(self):
            raise ValueError("no")

    record = logging.makeLogRecord({"msg": "Not Found: %s", "args": ("/api/rooms/",), "request": Request(),
                                    "status_code": 404, "odd": Unprintable()})
    assert RedactTokens().filter(record)
    assert record.request == "<ASGIRequest: GET '/api/rooms/?token=[redacted]'>"
    assert record.status_code == 404 and isinstance(record.odd, Unprintable)
    assert record.getMessage() == "Not Found: /api/rooms/"


def test_ws_gc_threshold_below_cpythons_default_refuses_to_start():
    result = _manage("check", WS_GC_THRESHOLD="100")
    assert result.returncode != 0 and "WS_GC_THRESHOLD must be at least 700" in result.stderr


@pytest.mark.parametrize("value", ["-1", "1001"])
def test_a_store_linger_out_of_range_refuses_to_start_naming_the_setting(value):
    result = _manage("check", CHAT_STORE_LINGER_MS=value)
    assert result.returncode != 0 and "CHAT_STORE_LINGER_MS must be 0..1000" in result.stderr


def test_a_negative_credentials_recheck_refuses_to_start_naming_the_setting():
    result = _manage("check", CHAT_AUTH_RECHECK_SECONDS="-5")
    assert result.returncode != 0 and "CHAT_AUTH_RECHECK_SECONDS must be 0 (off)" in result.stderr
