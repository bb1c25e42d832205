"""The WSGI fast path answers exactly like the Django view, and hands every
request it should not answer to Django."""

import json

import pytest

from catalog.models import Product
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


HOSTILE = [
    ("min_price=1e999999", "min_price", "min_price must be below 10^10, got '1e999999'"),
    ("prop.brand=%00", "prop.brand", "prop.brand must not contain a NUL character"),
    ("prop.%00=1", "prop.\x00", "prop.\x00 must not contain a NUL character"),
    ("category=%00", "category", "category must not contain a NUL character"),
    ("exclude=p1,%00", "exclude", "exclude must not contain a NUL character"),
    # "²".isdigit() is true, and int("²") a ValueError (answered as field "prop").
    ("limit=%C2%B2", "limit", "limit must be an integer from 1 to 100, got '²'"),
    ("limit=%D9%A3", "limit", "limit must be an integer from 1 to 100, got '٣'"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("query", "field", "message"), HOSTILE)
def test_hostile_parameters_are_a_400_naming_them_on_the_fast_path_as_in_the_view(shop, query, field, message):
    _project, keys = shop
    expected = {"error": "invalid_parameter", "message": message, "field": field}
    status, _h, body = call("/api/v1/users/u1/recommendations", query, auth=f"Bearer {keys.secret_key}")
    assert (status, json.loads(body)) == (400, expected)
    view = bearer_client(keys.secret_key).get(f"/api/v1/users/u1/recommendations?{query}")
    assert (view.status_code, view.json()) == (400, expected)
    assert RecommendationServed.objects.count() == 0


@pytest.mark.django_db
def test_a_user_id_with_a_nul_is_a_400_naming_it(shop):
    _project, keys = shop
    # WSGI hands the path decoded; the view gets it from %00 in the URL.
    status, _h, body = call("/api/v1/users/u\x00/recommendations", auth=f"Bearer {keys.secret_key}")
    expected = {"error": "invalid_parameter", "message": "user_id must not contain a NUL character", "field": "user_id"}
    assert (status, json.loads(body)) == (400, expected)
    view = bearer_client(keys.secret_key).get("/api/v1/users/u%00/recommendations")
    assert (view.status_code, view.json()) == (400, expected)
    assert RecommendationServed.objects.count() == 0


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
    # A connection the test session opened over DB_CONN_MAX_AGE (60 s) ago is
    # past its age: the first request's end would close it (config.fastpath),
    # leaving none to drop. Start from a new one, as a server's worker would.
    connection.close()
    assert call("/api/v1/users/u1/recommendations", "limit=3", auth=auth)[0] == 200
    pid = connection.connection.get_backend_pid()
    params = connection.get_connection_params()
    with psycopg2.connect(**params) as admin, admin.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    status, _, body = call("/api/v1/users/u1/recommendations", "limit=3", auth=auth)
    assert status == 200
    assert [p["product_id"] for p in json.loads(body)["products"]] == ["p2", "p4", "p5"]
    assert connection.connection.get_backend_pid() != pid


# Parameters without a usable name. The recommendation API refuses a parameter
# it does not know (a misspelt filter would otherwise serve unfiltered lists),
# so a nameless one is a 400 too; the DRF APIs (products, profiles) ignore
# unknown parameters, a nameless one alike.
NAMELESS = [
    ("=x", "", "a query parameter has no name (the query string has '=x'); write <name>=<value>"),
    ("=", "", "a query parameter has no name (the query string has '='); write <name>=<value>"),
    ("limit=3&=x", "", "a query parameter has no name (the query string has '=x'); write <name>=<value>"),
    ("%20=x", " ", "a query parameter has no name (the query string has ' =x'); write <name>=<value>"),
    ("prop.=1", "prop.", "property filters are written prop.<name>=<value>"),
    ("prop.%20=1", "prop. ", "property filters are written prop.<name>=<value>"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("query", "field", "message"), NAMELESS)
@pytest.mark.parametrize(
    "path", ["/api/v1/users/u1/recommendations", "/api/v1/products/p1/similar", "/api/v1/trending"]
)
def test_a_parameter_without_a_name_is_a_400_naming_it_on_every_path(shop, path, query, field, message):
    _project, keys = shop
    expected = {"error": "invalid_parameter", "message": message, "field": field}
    if path.startswith("/api/v1/users/"):
        status, _h, body = call(path, query, auth=f"Bearer {keys.secret_key}")
        assert (status, json.loads(body)) == (400, expected)
    view = bearer_client(keys.secret_key).get(f"{path}?{query}")
    assert (view.status_code, view.json()) == (400, expected)
    assert RecommendationServed.objects.count() == 0


@pytest.mark.django_db
def test_an_empty_query_string_part_is_no_parameter_and_a_dotted_property_is_its_name(shop):
    project, keys = shop
    Product.objects.filter(project=project, product_id="p2").update(properties={"a.b": 1, "color": "blue"})
    auth = f"Bearer {keys.secret_key}"
    plain = [
        p["product_id"] for p in json.loads(call("/api/v1/users/u1/recommendations", "", auth=auth)[2])["products"]
    ]
    for query in ("&", "&&limit=10&"):
        status, _h, body = call("/api/v1/users/u1/recommendations", query, auth=auth)
        assert (status, [p["product_id"] for p in json.loads(body)["products"]]) == (200, plain)
    # Properties are flat: prop.a.b is the property named "a.b".
    status, _h, body = call("/api/v1/users/u1/recommendations", "prop.a.b=1", auth=auth)
    assert (status, [p["product_id"] for p in json.loads(body)["products"]]) == (200, ["p2"])
    view = bearer_client(keys.secret_key).get("/api/v1/users/u1/recommendations?prop.a.b=1")
    assert [p["product_id"] for p in view.json()["products"]] == ["p2"]
    products = bearer_client(keys.secret_key).get("/api/v1/products?prop.a.b=1")
    assert [p["product_id"] for p in products.json()["results"]] == ["p2"]


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["=x", "=", "&", "%20=x"])
@pytest.mark.parametrize(("path", "key"), [("/api/v1/products", "product_id"), ("/api/v1/profiles", "user_id")])
def test_the_drf_apis_ignore_a_parameter_without_a_name_as_any_unknown_one(shop, path, key, query):
    client = bearer_client(shop[1].secret_key)
    plain = [row[key] for row in client.get(path).json()["results"]]
    response = client.get(f"{path}?{query}")
    assert (response.status_code, [row[key] for row in response.json()["results"]]) == (200, plain)
    assert len(plain) == (8 if key == "product_id" else 1)
