"""An echo service: /ws/echo/ registers its sockets with the worker (so the drain
closes them from the app and /healthz counts them); /ws/plain/ does not, and the
worker still closes it with 1012 on SIGTERM."""
import time

import django
from django.core.asgi import get_asgi_application

django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from wsworker import registry  # noqa: E402
from wsworker.health import WorkerHealthApp  # noqa: E402


class Echo(AsyncWebsocketConsumer):
    closed = False

    async def connect(self):
        await self.accept()
        registry.live.add(self)

    async def disconnect(self, code):
        registry.live.discard(self)

    async def receive(self, text_data=None, bytes_data=None):
        if text_data and text_data.startswith("block-loop:"):
            # A bug that blocks the event loop (tests/unit/test_wsworker_watchdog.py).
            time.sleep(float(text_data.split(":", 1)[1]))
        await self.send(text_data=f"echo: {text_data}")


class Plain(Echo):
    async def connect(self):
        await self.accept()


application = ProtocolTypeRouter({
    "http": WorkerHealthApp(get_asgi_application()),
    "websocket": URLRouter([path("ws/echo/", Echo.as_asgi()), path("ws/plain/", Plain.as_asgi())]),
})
