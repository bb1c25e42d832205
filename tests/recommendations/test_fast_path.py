"""The WSGI fast path answers exactly like the Django view, and hands every
request it should not answer to Django."""

import json

import pytest

from recommendations.models import RecommendationServed
from tests.conftest import bearer_client, wsgi_call
from tests.recommendations.serving_data import catalog_write, user_write, version_write


def call(path, query="", method="GET", auth=None, host="testserver", scheme="http"):
    headers = {"HTTP_AUTHORIZATION": auth} if auth else {}
    return wsgi_call(path, method=method, query=query, host=host, scheme=scheme, **headers)


@pytest.fixture
def shop(project_a):
    project, keys = project_a
    catalog_write(project.pk)
    version_write(project.pk)
    user_write(project.pk, "u1", viewed=["p3", "p1"])
    return project, keys


@pytest.mark.django_db
def test_fast_path_answers_like_the_django_view(shop):
    project, keys = shop
    status, headers, body = call(
        "/api/v1/users/u1/recommendations", "limit=3&in_stock=true", auth=f"Bearer {keys.secret_key}"
    )
    assert status == 200
    assert headers["Content-Type"] == "application/json" and headers["X-Content-Type-Options"] == "nosniff"
    fast = json.loads(body)
    view = bearer_client(keys.secret_key).get("/api/v1/users/u1/recommendations?limit=3&in_stock=true").json()
    assert fast["products"] == view["products"]
    assert [p["product_id"] for p in fast["products"]] == ["p2", "p5", "p6"]
    assert RecommendationServed.objects.get(pk=fast["recommendation_id"]).surface == "api"


@pytest.mark.django_db
def test_fast_path_errors_name_the_field_and_need_a_key(shop):
    _project, keys = shop
    status, _h, body = call("/api/v1/users/u1/recommendations", "limit=500", auth=f"Bearer {keys.secret_key}")
    assert status == 400 and json.loads(body)["field"] == "limit"
    status, _h, _b = call("/api/v1/users/u1/recommendations")
    assert status == 401


@pytest.mark.django_db
def test_user_ids_are_utf8_decoded(shop):
    project, keys = shop
    user_write(project.pk, "zoë", viewed=["p5"])
    raw = "/api/v1/users/zoë/recommendations".encode().decode("latin-1")  # as WSGI hands it
    status, _h, body = call(raw, "limit=1", auth=f"Bearer {keys.secret_key}")
    assert status == 200 and json.loads(body)["products"][0]["product_id"] == "p6"


@pytest.mark.django_db
def test_other_requests_go_to_django(shop, settings, monkeypatch):
    import config.wsgi

    fast_calls = []
    recommendations_app = config.wsgi.recommendations_app
    monkeypatch.setattr(
        "config.wsgi.recommendations_app", lambda *args: fast_calls.append(1) or recommendations_app(*args)
    )
    _project, keys = shop
    auth = f"Bearer {keys.secret_key}"
    assert call("/api/v1/users/u1/recommendations", method="POST", auth=auth)[0] == 403  # Django: CSRF
    assert call("/api/v1/users/u1/recommendations", host="evil.example", auth=auth)[0] == 400  # DisallowedHost
    # Under SECURE_SSL_REDIRECT a plain-HTTP call is Django's to answer (it redirects in
    # production; its middleware read the setting at start, so here it answers 200).
    settings.SECURE_SSL_REDIRECT = True
    call("/api/v1/users/u1/recommendations", auth=auth)
    assert fast_calls == []
    status, headers, _b = call("/api/v1/users/u1/recommendations", auth=auth, scheme="https")
    assert status == 200 and fast_calls == [1]
    assert headers["Strict-Transport-Security"].startswith("max-age=")


def test_fast_path_answers_on_a_new_connection_when_the_database_dropped_its_own(transactional_db, shop):
    """No health check before each request (it would double the round trips):
    a connection the server closed while idle is found broken by the request's
    own query, and the request is answered once more on a new connection."""
    import psycopg2
    from django.db import connection

    project, keys = shop
    auth = f"Bearer {keys.secret_key}"
    assert call("/api/v1/users/u1/recommendations", "limit=3", auth=auth)[0] == 200
    pid = connection.connection.get_backend_pid()
    params = connection.get_connection_params()
    with psycopg2.connect(**params) as admin, admin.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    status, _, body = call("/api/v1/users/u1/recommendations", "limit=3", auth=auth)
    assert status == 200
    assert [p["product_id"] for p in json.loads(body)["products"]] == ["p2", "p4", "p5"]
    assert connection.connection.get_backend_pid() != pid
