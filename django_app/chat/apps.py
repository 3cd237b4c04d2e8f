from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        """Plug room delivery into the worker runtime (wsworker never imports chat).

        After Redis restarts, every Room subscribes again and catches up from
        Postgres; a draining worker first stores and publishes what its sockets
        handed over.
        """
        from wsworker import hooks

        from .delivery import fanout, writer

        hooks.on_resync(fanout.resubscribe_all)
        hooks.on_drain(writer.writes_done)

        # Registers the database checks that `manage.py migrate` runs first (chat.checks).
        from . import checks  # noqa: F401
