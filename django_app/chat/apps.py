from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Registers the database checks that `manage.py migrate` runs first (chat.checks).
        from . import checks  # noqa: F401
