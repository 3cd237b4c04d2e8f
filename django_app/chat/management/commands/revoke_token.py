from django.core.management.base import BaseCommand, CommandError

from chat import tokens


class Command(BaseCommand):
    help = "Revoke the live API token(s) whose first 8 characters are <prefix>."

    def add_arguments(self, parser):
        parser.add_argument("prefix")

    def handle(self, *args, prefix, **options):
        count = tokens.revoke(prefix)
        if count == 0:
            raise CommandError(f"no live token with prefix {prefix!r}")
        self.stdout.write(f"revoked {count} token(s) with prefix {prefix}")
