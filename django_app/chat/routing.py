from django.urls import re_path

from . import consumers

websocket_urlpatterns = [
    # Loose match on purpose: the consumer validates the name and closes 4400,
    # which tells the client more than a failed route would.
    re_path(r"^ws/chat/(?P<room>[^/]+)/$", consumers.ChatConsumer.as_asgi()),
    re_path(r"", consumers.NotFoundConsumer.as_asgi()),
]
