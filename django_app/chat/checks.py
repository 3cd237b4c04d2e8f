"""System checks that run before `manage.py migrate` touches the database.

Django's migrate runs the checks tagged `database` for the database it
migrates, before it opens the connection pool. A wrong password therefore
stops migrate within a second with chat.E001 (see chat.dbauth), instead of a
PoolTimeout after DB_POOL_TIMEOUT seconds that hides the cause.
"""
from django.conf import settings
from django.core.checks import Error, Tags, register

from . import dbauth, health


@register(Tags.database)
def postgres_accepts_our_password(app_configs=None, databases=None, **kwargs):
    if not databases:
        return []
    errors = []
    for alias in databases:
        exc = health.database_error(alias)
        if exc is not None and dbauth.is_auth_failure(exc):
            errors.append(Error(dbauth.explain(settings.DATABASES[alias].get("USER")), id=dbauth.CHECK_ID))
    return errors
