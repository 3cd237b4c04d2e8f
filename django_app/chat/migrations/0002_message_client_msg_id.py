"""Idempotent sends: a nullable client_msg_id, unique per room where it is set.

Adding a nullable column is instant; the partial unique index is built under a
short write lock on chat_message (messages without a client id are not indexed).
"""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("chat", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="client_msg_id",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AddConstraint(
            model_name="message",
            constraint=models.UniqueConstraint(
                condition=models.Q(("client_msg_id__isnull", False)),
                fields=("room", "client_msg_id"),
                name="chat_message_room_client_id",
            ),
        ),
    ]
