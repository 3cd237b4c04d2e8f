from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from chat import tokens


class Command(BaseCommand):
    help = "Issue an API token for a user and print it once (only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--ttl-hours", type=int, default=None, help="default: TOKEN_TTL_HOURS")
        parser.add_argument("--name", default="", help="label shown in listings")

    def handle(self, *args, username, ttl_hours, name, **options):
        if ttl_hours is not None and ttl_hours < 1:
            raise CommandError("--ttl-hours must be >= 1")
        User = get_user_model()
        try:
            user = User.objects.get_by_natural_key(username)
        except User.DoesNotExist:
            raise CommandError(f"no user named {username!r}") from None
        issued = tokens.issue(user, name=name, ttl_hours=ttl_hours)
        self.stderr.write(
            f"token {issued.record.prefix}… for {username}, expires {issued.record.expires_at.isoformat()}"
        )
        # stdout carries only the secret so scripts can capture it: TOKEN=$(manage.py issue_token bob)
        self.stdout.write(issued.token)
