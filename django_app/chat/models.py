"""Chat data: rooms with a per-room id counter, messages, and hashed API tokens."""
from django.conf import settings
from django.db import models


class Room(models.Model):
    """last_id is the per-room counter that makes message ids dense (1, 2, 3, ...)."""

    name = models.CharField(max_length=64, unique=True)
    last_id = models.BigIntegerField(default=0)

    def __str__(self):
        return self.name


class Message(models.Model):
    # No database-level foreign key and no index of its own on room_id:
    # - every row is inserted by the statement that upserts its room row
    #   (chat.delivery.store), so the reference holds by construction, and
    #   Django still cascades a room's deletion to its messages;
    # - Postgres's check of that key would run per message, locking (FOR KEY
    #   SHARE) a room row the same statement has just updated: measured at 30-120
    #   us of database CPU per stored message, more than the insert itself
    #   (docs/benchmarks.md);
    # - (room, seq), unique below, is the index every room query uses.
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages",
                             db_constraint=False, db_index=False)
    # The id clients see: dense and ordered within the room (not the table's pk).
    seq = models.BigIntegerField()
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    # Denormalised so history survives user deletion and anonymous names persist.
    username = models.CharField(max_length=150)
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    # The sender's own id for the message (idempotent resend, chat.protocol.CLIENT_ID_RE):
    # stored once per room. Never shown to other clients.
    client_msg_id = models.CharField(max_length=64, null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["room", "seq"], name="chat_message_room_seq"),
            models.UniqueConstraint(
                fields=["room", "client_msg_id"], condition=models.Q(client_msg_id__isnull=False),
                name="chat_message_room_client_id",
            ),
        ]

    def __str__(self):
        return f"{self.room_id}#{self.seq} {self.username}"


class ApiToken(models.Model):
    """Only the sha256 of a token is stored, so a database leak reveals no usable secret."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(max_length=8, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.prefix}… ({self.user})"
