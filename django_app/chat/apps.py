from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        """Plug room delivery into the worker runtime (wsworker never imports chat).

        After Redis restarts, every Room subscribes again and catches up from
        Postgres; a draining worker first stores and publishes what its sockets
        handed over. The worker's /metrics also shows how many rooms have sockets here.
        """
        from wsworker import hooks

        from . import metrics
        from .delivery import fanout, writer

        hooks.on_resync(fanout.resubscribe_all)
        hooks.on_drain(writer.writes_done)
        metrics.register_rooms_gauge(fanout.rooms_with_sockets)

        # Registers the database checks that `manage.py migrate` runs first (chat.checks).
        from . import checks  # noqa: F401
