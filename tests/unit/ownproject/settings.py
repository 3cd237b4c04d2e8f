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
WS_MAX_SOCKETS = int(os.environ.get("WS_MAX_SOCKETS", "10000"))
USE_TZ = True
