"""Settings of the second project: nothing of this stack's config/ or chat/."""
import os

SECRET_KEY = "ownproject: test only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels"]
ASGI_APPLICATION = "ownproject.asgi.application"
# No channel layer: the worker's Redis watcher and /readyz check simply do not apply.
CHANNEL_LAYERS = {}
# The wsworker settings this project sets; the others take wsworker.conf's defaults.
WS_DRAIN_SECONDS = float(os.environ.get("WS_DRAIN_SECONDS", "3"))
WS_METRICS_PORT = int(os.environ.get("WS_METRICS_PORT", "0"))
# Set by tests/unit/test_wsworker_watchdog.py only; otherwise wsworker.conf's default.
if "WS_LOOP_STALL_SECONDS" in os.environ:
    WS_LOOP_STALL_SECONDS = float(os.environ["WS_LOOP_STALL_SECONDS"])
WS_MAX_SOCKETS = int(os.environ.get("WS_MAX_SOCKETS", "10000"))
USE_TZ = True
