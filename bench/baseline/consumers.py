"""BENCH-ONLY BASELINE consumer: the Channels tutorial ChatConsumer, verbatim.

Added: one `chat.welcome` frame on connect naming the worker (hostname:pid),
the same field the product sends, so the bench can check subscribers are spread
evenly over the workers. It costs one frame per connect and nothing per message.
"""
import json
import os
import socket

from channels.generic.websocket import AsyncWebsocketConsumer

WORKER = f"{socket.gethostname()}:{os.getpid()}"


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = f"chat_{self.room_name}"

        # Join room group
        await self.channel_layer.group_add(self.room_group_name, self.channel_name)

        await self.accept()
        await self.send(text_data=json.dumps({"type": "chat.welcome", "worker": WORKER}))

    async def disconnect(self, close_code):
        # Leave room group
        await self.channel_layer.group_discard(self.room_group_name, self.channel_name)

    # Receive message from WebSocket
    async def receive(self, text_data):
        text_data_json = json.loads(text_data)
        message = text_data_json["message"]

        # Send message to room group
        await self.channel_layer.group_send(
            self.room_group_name, {"type": "chat.message", "message": message}
        )

    # Receive message from room group
    async def chat_message(self, event):
        message = event["message"]

        # Send message to WebSocket
        await self.send(text_data=json.dumps({"message": message}))
