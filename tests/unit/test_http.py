"""Web tier views (pages, probes, token API) through Django's test client: real DB, real Redis."""
import copy
import json
from urllib.parse import urlsplit

import pytest
from django.test import Client

from chat import tokens
from chat.models import ApiToken

from .conftest import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def test_healthz_is_plain_ok():
    resp = Client().get("/healthz")
    assert resp.status_code == 200 and resp.content == b"ok"


def test_readyz_ok_when_db_and_redis_answer():
    resp = Client().get("/readyz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "checks": {"db": "ok", "redis": "ok"}}


def _layer_addresses(settings, *addresses):
    """Point the channel layer (and so every Redis probe) at these servers."""
    layers = copy.deepcopy(settings.CHANNEL_LAYERS)
    layers["default"]["CONFIG"]["hosts"] = [{"address": a} for a in addresses]
    settings.CHANNEL_LAYERS = layers


def test_readyz_503_when_redis_unreachable(settings):
    _layer_addresses(settings, f"redis://127.0.0.1:{free_port()}/0")
    resp = Client().get("/readyz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["checks"]["db"] == "ok" and body["checks"]["redis"] != "ok"


def test_readyz_503_when_redis_password_wrong(settings):
    from urllib.parse import urlsplit

    real = urlsplit(settings.REDIS_URL)
    _layer_addresses(settings, f"redis://:wrong-password@{real.hostname}:{real.port}/0")
    resp = Client().get("/readyz")
    assert resp.status_code == 503 and resp.json()["checks"]["redis"] != "ok"


def test_readyz_stays_200_but_degraded_when_one_of_two_shards_is_down(settings):
    """A lost shard stops only its rooms: the web tier stays in rotation and says which shard."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    _layer_addresses(settings, settings.REDIS_URL, dead)
    resp = Client().get("/readyz")
    assert resp.status_code == 200
    redis_check = resp.json()["checks"]["redis"]
    assert redis_check.startswith("degraded: ") and f"127.0.0.1:{urlsplit(dead).port}" in redis_check
    assert settings.REDIS_URL.split("@")[0] not in redis_check or "@" not in redis_check  # no password shown


def test_index_redirects_to_room():
    client = Client()
    assert client.get("/").status_code == 200
    resp = client.post("/", {"room": "general"})
    assert resp.status_code == 302 and resp["Location"] == "/chat/general/"


def test_index_rejects_bad_room_name():
    resp = Client().post("/", {"room": "no spaces"})
    assert resp.status_code == 200 and b"letters, digits" in resp.content


def test_room_page_links_hashed_static_and_room_name():
    resp = Client().get("/chat/general/")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert 'id="room-name"' in html and '"general"' in html
    assert "/static/chat/chat." in html and "/static/chat/chat.js" not in html  # manifest-hashed


def test_static_file_is_served_by_whitenoise(collected_static):
    import re

    html = Client().get("/chat/general/").content.decode()
    src = re.search(r'src="(/static/chat/chat\.[0-9a-f]+\.js)"', html).group(1)
    resp = Client().get(src)
    assert resp.status_code == 200
    assert b"WebSocket" in b"".join(resp.streaming_content)


def test_favicon_is_linked_and_served_never_404(collected_static):
    """Every page links the SVG icon; /favicon.ico (asked for by pages without the link,
    e.g. the admin) redirects to it. Both are whitenoise static files: no dependency."""
    import re

    html = Client().get("/chat/general/").content.decode()
    href = re.search(r'<link rel="icon" type="image/svg\+xml" href="(/static/chat/favicon\.[0-9a-f]+\.svg)">', html)
    assert href, html[:800]
    resp = Client().get(href.group(1))
    assert resp.status_code == 200 and resp["Content-Type"].startswith("image/svg+xml")
    assert b"<svg" in b"".join(resp.streaming_content)

    legacy = Client().get("/favicon.ico")
    assert legacy.status_code == 301 and legacy["Location"] == href.group(1)


@pytest.mark.parametrize("room", ["bad.name", "x" * 65])
def test_room_page_404_for_invalid_names(room):
    assert Client().get(f"/chat/{room}/").status_code == 404


def test_login_page_and_login(alice):
    client = Client()
    assert client.get("/accounts/login/").status_code == 200
    resp = client.post("/accounts/login/", {"username": "alice", "password": "alice-pass-123"})
    assert resp.status_code == 302
    assert b"alice" in client.get("/").content


def test_admin_requires_login():
    resp = Client().get("/admin/")
    assert resp.status_code == 302 and "/admin/login/" in resp["Location"]


# --- token API ---------------------------------------------------------------


def _csrf_client(user=None):
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    client.get("/")  # the page sets the csrftoken cookie
    return client, client.cookies["csrftoken"].value


def test_token_api_requires_login():
    client, csrf = _csrf_client()
    assert client.get("/api/tokens/").status_code == 401
    resp = client.post("/api/tokens/", "{}", content_type="application/json", headers={"X-CSRFToken": csrf})
    assert resp.status_code == 401 and resp.json()["error"]


def test_token_api_wrong_method_405(alice):
    client, csrf = _csrf_client(alice)
    assert client.put("/api/tokens/", headers={"X-CSRFToken": csrf}).status_code == 405
    assert client.get("/api/tokens/abcdefgh/").status_code == 405


def test_token_api_requires_csrf(alice):
    client, _ = _csrf_client(alice)
    assert client.post("/api/tokens/", "{}", content_type="application/json").status_code == 403


def test_token_api_create_list_revoke(alice):
    client, csrf = _csrf_client(alice)
    resp = client.post(
        "/api/tokens/", json.dumps({"name": "laptop", "ttl_hours": 2}),
        content_type="application/json", headers={"X-CSRFToken": csrf},
    )
    assert resp.status_code == 201
    body = resp.json()
    assert body["prefix"] == body["token"][:8] and body["expires_at"]
    assert tokens.verify(body["token"]) == alice

    listed = client.get("/api/tokens/").json()["tokens"]
    assert [t["prefix"] for t in listed] == [body["prefix"]]
    assert body["token"] not in json.dumps(listed)

    resp = client.delete(f"/api/tokens/{body['prefix']}/", headers={"X-CSRFToken": csrf})
    assert resp.status_code == 204
    with pytest.raises(tokens.TokenError) as err:
        tokens.verify(body["token"])
    assert err.value.reason == "revoked"
    assert client.delete(f"/api/tokens/{body['prefix']}/", headers={"X-CSRFToken": csrf}).status_code == 404


def test_token_api_cannot_revoke_someone_elses(alice, django_user_model):
    bob = django_user_model.objects.create_user("bob", password="bob-pass-123")
    issued = tokens.issue(bob)
    client, csrf = _csrf_client(alice)
    assert client.delete(f"/api/tokens/{issued.record.prefix}/", headers={"X-CSRFToken": csrf}).status_code == 404
    assert tokens.verify(issued.token) == bob


@pytest.mark.parametrize(
    "body",
    ["{not json", "[1]", '{"name": 5}', '{"ttl_hours": 0}', '{"ttl_hours": "3"}', '{"ttl_hours": 999999}',
     json.dumps({"name": "x" * 5000})],
)
def test_token_api_bad_body_400(alice, body):
    client, csrf = _csrf_client(alice)
    resp = client.post("/api/tokens/", body, content_type="application/json", headers={"X-CSRFToken": csrf})
    assert resp.status_code == 400 and resp.json()["error"]
    assert ApiToken.objects.count() == 0


def test_room_page_gives_each_anonymous_browser_its_own_session():
    """Two browsers without cookies get two sessions, hence two different anon names."""
    first, second = Client().get("/chat/lobby/"), Client().get("/chat/lobby/")
    assert first.status_code == second.status_code == 200
    a, b = first.cookies.get("sessionid"), second.cookies.get("sessionid")
    assert a and b and a.value != b.value
