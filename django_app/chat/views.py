"""Pages and probes of the web tier (gunicorn)."""
from django import forms
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import health, protocol


@require_GET
@never_cache
def healthz(request):
    """Liveness: touches nothing, so a sick dependency never gets the web pods killed."""
    return HttpResponse("ok", content_type="text/plain")


@require_GET
@never_cache
def readyz(request):
    db = health.database()
    redis_ready, redis_status = health.redis_sync()
    checks = {"db": db or "ok", "redis": redis_status}
    ok = db is None and redis_ready
    return JsonResponse({"status": "ok" if ok else "error", "checks": checks}, status=200 if ok else 503)


@require_GET
def favicon(request):
    """Browsers ask for /favicon.ico on pages with no icon link (the admin): send them
    to the chat's SVG icon (hashed, cached for a year by whitenoise) instead of a 404."""
    return redirect(static("chat/favicon.svg"), permanent=True)


class RoomForm(forms.Form):
    room = forms.RegexField(
        regex=protocol.ROOM_RE,
        max_length=64,
        error_messages={"invalid": "Use 1-64 letters, digits, '-' or '_'."},
    )


def index(request):
    form = RoomForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        return redirect("chat:room", room=form.cleaned_data["room"])
    return render(request, "chat/index.html", {"form": form})


@require_GET
def room(request, room):
    if not protocol.valid_room(room):
        raise Http404("invalid room name")
    if not request.user.is_authenticated and request.session.session_key is None:
        # Give an anonymous browser a session, so the WebSocket (same cookie) gets a
        # stable anon-xxxx name of its own instead of one shared per client address.
        request.session["chat_anon"] = True
    return render(request, "chat/room.html", {"room": room})
