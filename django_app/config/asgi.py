"""ASGI entry for the daphne ws workers (and `runserver` in development).

Order of the WebSocket stack matters: Origin is checked first (cheapest, and it
refuses cross-site pages before any DB work), then the token, then the session.
"""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Django must be set up before anything imports models (the chat modules do).
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from chat.auth import TokenAuthMiddlewareStack  # noqa: E402
from chat.origin import SettingsOriginValidator  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from wsworker.health import WorkerHealthApp  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": WorkerHealthApp(django_asgi_app),
        "websocket": SettingsOriginValidator(
            TokenAuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
