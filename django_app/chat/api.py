"""Token API (session auth + CSRF): list, create, revoke the caller's API tokens.

JSON errors rather than redirects to the login page: API clients need a status
code they can act on, not an HTML form.
"""
import json

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_http_methods

from . import tokens
from .models import ApiToken

MAX_BODY = 4096
MAX_NAME = 100


def _error(status: int, detail: str):
    return JsonResponse({"error": detail}, status=status)


def _login_required(view):
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return _error(401, "authentication required")
        return view(request, *args, **kwargs)

    wrapper.__name__ = view.__name__
    return wrapper


def _describe(t: ApiToken) -> dict:
    iso = lambda dt: dt.isoformat() if dt else None  # noqa: E731
    return {
        "prefix": t.prefix,
        "name": t.name,
        "created_at": iso(t.created_at),
        "expires_at": iso(t.expires_at),
        "revoked_at": iso(t.revoked_at),
        "last_used_at": iso(t.last_used_at),
    }


def _parse_create(request):
    """Returns (name, ttl_hours) or raises ValueError with a client-facing message."""
    if len(request.body) > MAX_BODY:
        raise ValueError(f"body larger than {MAX_BODY} bytes")
    if not request.body.strip():
        return "", None
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    name = data.get("name", "")
    if not isinstance(name, str) or len(name) > MAX_NAME:
        raise ValueError(f"name must be a string of at most {MAX_NAME} characters")
    ttl = data.get("ttl_hours")
    if ttl is not None and (
        isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= settings.TOKEN_TTL_HOURS
    ):
        raise ValueError(f"ttl_hours must be an integer between 1 and {settings.TOKEN_TTL_HOURS}")
    return name, ttl


@require_http_methods(["GET", "POST"])
@_login_required
def token_list(request):
    if request.method == "GET":
        qs = ApiToken.objects.filter(user=request.user).order_by("-created_at")
        return JsonResponse({"tokens": [_describe(t) for t in qs]})
    try:
        name, ttl = _parse_create(request)
    except ValueError as exc:
        return _error(400, str(exc))
    issued = tokens.issue(request.user, name=name, ttl_hours=ttl)
    return JsonResponse(
        {
            "token": issued.token,
            "prefix": issued.record.prefix,
            "expires_at": issued.record.expires_at.isoformat(),
        },
        status=201,
    )


@require_http_methods(["DELETE"])
@_login_required
def token_detail(request, prefix):
    if tokens.revoke(prefix, user=request.user) == 0:
        return _error(404, "no active token with that prefix")
    return HttpResponse(status=204)
