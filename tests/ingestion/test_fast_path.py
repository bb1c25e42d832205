"""The collectors' WSGI fast path (ingestion.api.fast) answers exactly like the
Django view, stores the same events, and leaves to Django what it must not answer."""

import gzip
import json

import pytest

from crm.models import Event
from tests.conftest import basic_header, wsgi_call

pytestmark = pytest.mark.django_db


def call(path, body=b"", method="POST", host="testserver", scheme="http", **headers):
    return wsgi_call(path, method=method, body=body, host=host, scheme=scheme, **headers)


def track(**fields):
    return {"userId": "u1", "event": "Product Viewed", "properties": {"product_id": "p1"}, **fields}


def cases(write_key):
    auth = {"HTTP_AUTHORIZATION": basic_header(write_key)}
    batch = {"batch": [{"type": "track", **track(messageId="b1")}, {"type": "track", "event": "No ids"}]}
    return [
        ("/v1/track", json.dumps(track(messageId="t1")).encode(), "POST", auth),
        ("/v1/t", json.dumps(track(messageId="t2")).encode(), "POST", auth),
        ("/v1/batch", json.dumps(batch).encode(), "POST", auth),
        ("/v1/b", gzip.compress(json.dumps(batch).encode()), "POST", {**auth, "HTTP_CONTENT_ENCODING": "gzip"}),
        ("/v1/identify", json.dumps({"userId": "u2", "traits": {"plan": "pro"}, "messageId": "i1"}).encode(), "POST", auth),  # noqa: E501
        ("/v1/track", json.dumps({**track(messageId="k1"), "writeKey": write_key}).encode(), "POST", {}),
        ("/v1/track", b"{not json", "POST", auth),
        ("/v1/track", json.dumps({"event": "No ids"}).encode(), "POST", auth),
        ("/v1/track", json.dumps(track()).encode(), "POST", {"HTTP_AUTHORIZATION": basic_header("wk_unknown")}),
        ("/v1/track", json.dumps(track()).encode(), "POST", {}),
        ("/v1/track", b"x" * (33 * 1024), "POST", auth),
        ("/v1/track", b"", "GET", auth),
        ("/v1/track", b"", "OPTIONS", {}),
    ]  # fmt: skip


def test_the_fast_path_answers_and_stores_like_the_django_view(client, project_a, eager):
    project, keys = project_a
    answers = []
    for path, body, method, headers in cases(keys.write_key):
        fast_status, fast_headers, fast_body = call(path, body, method, **headers)
        response = client.generic(method, path, body, content_type="application/json", **headers)
        django_headers = dict(response.items())
        assert (fast_status, fast_body) == (response.status_code, response.content), (path, method)
        for name in ("Access-Control-Allow-Origin", "WWW-Authenticate", "Allow", "Access-Control-Allow-Methods"):
            assert fast_headers.get(name) == django_headers.get(name), (path, method, name)
        assert fast_headers.get("X-Content-Type-Options") == "nosniff"
        answers.append(fast_status)
    assert answers == [200, 200, 200, 200, 200, 200, 400, 400, 401, 401, 413, 405, 204]
    # Each accepted message once (the Django view's requests repeat the same ids).
    assert sorted(Event.objects.filter(project=project).values_list("message_id", flat=True)) == [
        "b1", "i1", "k1", "t1", "t2"
    ]  # fmt: skip


def test_other_requests_and_hosts_go_to_django(project_a, settings, monkeypatch):
    import config.wsgi

    fast_calls = []
    collector_app = config.wsgi.collector_app
    monkeypatch.setattr("config.wsgi.collector_app", lambda *args: fast_calls.append(1) or collector_app(*args))
    keys = project_a[1]
    body = json.dumps(track(messageId="h1")).encode()
    auth = {"HTTP_AUTHORIZATION": basic_header(keys.write_key)}
    # A disallowed Host: Django's 400 page, not the collector's JSON.
    status, headers, _ = call("/v1/track", body, host="evil.example", **auth)
    assert (status, headers["Content-Type"].split(";")[0]) == (400, "text/html")
    # Not a collector path.
    assert call("/v1/unknown", body, **auth)[0] == 404
    # Plain HTTP under SECURE_SSL_REDIRECT: Django's redirect; over HTTPS the collector with HSTS.
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    # (Django redirects it in production; its middleware read the setting at
    # start, so here it answers itself.)
    call("/v1/track", body, **auth)
    assert fast_calls == []
    status, headers, _ = call("/v1/track", body, scheme="https", **auth)
    assert (status, headers["Strict-Transport-Security"].split(";")[0]) == (200, "max-age=3600")
    assert fast_calls == [1]


def test_a_failure_is_a_json_500(project_a, monkeypatch):
    keys = project_a[1]

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("ingestion.api.fast.collect_answer", broken)
    status, headers, body = call(
        "/v1/track", json.dumps(track()).encode(), HTTP_AUTHORIZATION=basic_header(keys.write_key)
    )
    assert (status, headers["Content-Type"], json.loads(body)["code"]) == (500, "application/json", "internal_error")
