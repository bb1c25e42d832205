"""The collectors over HTTP: status codes, answers, limits, authentication.

These run the ingest task in-process (`eager`) so each test can assert what was
stored; tests/ingestion/test_worker.py runs the same path through a real broker
and worker processes.
"""

import gzip
import json
import time
import zlib

import pytest

from config.celery import app
from crm.models import AnonymousId, Event, Profile
from ingestion import hooks, publisher
from tests.ingestion.conftest import post

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager")]


def track(**extra):
    return {"userId": "u1", "event": "Product Viewed", "properties": {"product_id": "p1"}, **extra}


@pytest.mark.parametrize(
    ("path", "body", "kind", "name"),
    [
        ("/v1/identify", {"userId": "u1", "traits": {"email": "a@b.c"}}, "identify", "identify"),
        ("/v1/track", {"userId": "u1", "event": "Signed Up"}, "track", "Signed Up"),
        ("/v1/page", {"anonymousId": "a1", "name": "Pricing"}, "page", "Pricing"),
        ("/v1/screen", {"userId": "u1", "name": "Cart"}, "screen", "Cart"),
        ("/v1/group", {"userId": "u1", "groupId": "acme", "traits": {"seats": 3}}, "group", "group"),
        ("/v1/alias", {"userId": "u1", "previousId": "a-old"}, "alias", "alias"),
        ("/v1/t", {"userId": "u1", "event": "Short Path"}, "track", "Short Path"),
    ],
)
def test_each_endpoint_answers_success_and_stores_the_message(client, project_a, path, body, kind, name):
    project, keys = project_a
    response = post(client, path, {**body, "messageId": "m-1"}, write_key=keys.write_key)
    assert response.status_code == 200
    assert response.content == b'{"success":true}'
    assert response["Content-Type"] == "application/json"
    event = Event.objects.get(project=project)
    assert (event.type, event.name, event.message_id) == (kind, name, "m-1")


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/import", "/v1/b"])
def test_batch_paths_store_every_message(client, project_a, path):
    project, keys = project_a
    body = {"batch": [{"type": "track", **track(messageId=f"m{i}")} for i in range(3)], "sentAt": None}
    response = post(client, path, body, write_key=keys.write_key)
    assert (response.status_code, response.json()) == (200, {"success": True})
    assert sorted(Event.objects.filter(project=project).values_list("message_id", flat=True)) == ["m0", "m1", "m2"]


def test_write_key_in_the_body_as_analytics_js_sends_it(client, project_a):
    project, keys = project_a
    # analytics.js posts text/plain (no CORS preflight) with the key in the body.
    response = post(client, "/v1/t", {**track(), "writeKey": keys.write_key}, content_type="text/plain;charset=UTF-8")
    assert response.status_code == 200
    assert Event.objects.filter(project=project).count() == 1


@pytest.mark.parametrize(
    ("auth", "body_key", "message"),
    [
        ("wrong-key", None, "unknown write key"),
        (None, "wrong-key", "unknown write key"),
        (
            None,
            None,
            "a write key is required: HTTP Basic with the write key as user name and an empty password, "
            "or a writeKey field in the body",
        ),
    ],
)
def test_missing_or_unknown_write_key_is_401_and_stores_nothing(client, project_a, auth, body_key, message):
    body = track() if body_key is None else {**track(), "writeKey": body_key}
    response = post(client, "/v1/track", body, write_key=auth)
    assert response.status_code == 401
    assert response.json()["message"] == message
    assert response.json()["code"] == "invalid_write_key"
    assert response["WWW-Authenticate"] == 'Basic realm="write key"'
    assert Event.objects.count() == 0


def test_malformed_basic_credentials_are_401(client, project_a):
    response = post(client, "/v1/track", track(), HTTP_AUTHORIZATION="Basic %%%")
    assert (response.status_code, response.json()["message"]) == (401, "malformed Basic credentials")


def test_gzip_bodies_are_accepted(client, project_a):
    project, keys = project_a
    body = {"batch": [{"type": "track", **track(messageId="gz-1")}]}
    response = post(client, "/v1/batch", body, write_key=keys.write_key, compress=True)
    assert response.status_code == 200
    assert list(Event.objects.filter(project=project).values_list("message_id", flat=True)) == ["gz-1"]


@pytest.mark.parametrize(
    ("raw", "headers", "status", "message"),
    [
        (
            b"{not json",
            {},
            400,
            "malformed JSON: unexpected character, expected a string key: line 1 column 2 (char 1)",
        ),
        (b"[1, 2]", {}, 400, "the body must be a JSON object"),
        (b"\x1f\x8bnot really gzip", {"HTTP_CONTENT_ENCODING": "gzip"}, 400, "body is not valid gzip"),
        (b"{}", {"HTTP_CONTENT_ENCODING": "br"}, 415, "Content-Encoding 'br' is not supported; use gzip or none"),
    ],
)
def test_bad_bodies_are_refused(client, project_a, raw, headers, status, message):
    response = post(client, "/v1/track", None, raw=raw, write_key=project_a[1].write_key, **headers)
    assert (response.status_code, response.json()["message"]) == (status, message)
    assert Event.objects.count() == 0


def test_requests_over_the_limits_are_413(client, project_a):
    key = project_a[1].write_key
    # A single call over 32 KB.
    big = track(properties={"blob": "x" * 33_000})
    response = post(client, "/v1/track", big, write_key=key)
    assert (response.status_code, response.json()["message"]) == (413, "request body is larger than 32 KB")
    # A batch over 500 KB.
    batch = {"batch": [{"type": "track", **track(properties={"blob": "x" * 20_000})} for _ in range(30)]}
    response = post(client, "/v1/batch", batch, write_key=key)
    assert (response.status_code, response.json()["message"]) == (413, "request body is larger than 500 KB")
    # More than 2,500 messages.
    many = {"batch": [{"type": "track", "userId": "u", "event": "e"}] * 2501}
    response = post(client, "/v1/batch", many, write_key=key)
    assert response.status_code == 413
    assert response.json() == {
        "success": False,
        "code": "payload_too_large",
        "message": "batch has 2501 messages; at most 2500",
        "field": "batch",
    }
    # A small gzip body that inflates past 500 KB.
    bomb = json.dumps({"batch": [], "pad": "0" * 600_000}).encode()
    response = post(client, "/v1/batch", None, raw=bomb, write_key=key, compress=True)
    assert response.status_code == 413
    assert len(gzip.compress(bomb)) < 10_000
    assert Event.objects.count() == 0


def test_invalid_single_message_is_400_naming_the_field(client, project_a):
    key = project_a[1].write_key
    response = post(client, "/v1/track", {"event": "x"}, write_key=key)
    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "code": "invalid_request",
        "message": "userId or anonymousId is required",
        "field": "userId",
    }
    response = post(client, "/v1/identify", {"userId": "u", "traits": ["x"]}, write_key=key)
    assert (response.status_code, response.json()["field"]) == (400, "traits")
    assert Event.objects.count() == 0


def test_a_batch_keeps_its_valid_messages_and_lists_the_rejected_ones(client, project_a):
    project, keys = project_a
    body = {
        "batch": [
            {"type": "track", **track(messageId="ok-0")},
            {"type": "track", "event": "no ids"},
            {"type": "identify", "userId": "u2", "messageId": "ok-2"},
            {"type": "bogus", "userId": "u3"},
            {"type": "track", "userId": "u4", "event": "x", "properties": "nope"},
        ]
    }
    response = post(client, "/v1/batch", body, write_key=keys.write_key)
    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "rejected": [
            {"index": 1, "field": "userId", "message": "userId or anonymousId is required"},
            {
                "index": 3,
                "field": "type",
                "message": "type must be one of identify, track, page, screen, group, alias, got 'bogus'",
            },
            {"index": 4, "field": "properties", "message": "properties must be an object"},
        ],
    }
    assert sorted(Event.objects.filter(project=project).values_list("message_id", flat=True)) == ["ok-0", "ok-2"]


def test_a_batch_without_any_valid_message_is_400(client, project_a):
    response = post(client, "/v1/batch", {"batch": [{"type": "track"}]}, write_key=project_a[1].write_key)
    assert response.status_code == 400
    assert response.json()["rejected"] == [
        {"index": 0, "field": "userId", "message": "userId or anonymousId is required"}
    ]
    response = post(client, "/v1/batch", {"batch": "x"}, write_key=project_a[1].write_key)
    assert (response.status_code, response.json()["field"]) == (400, "batch")
    assert Event.objects.count() == 0


def test_message_ids_are_kept_generated_and_a_repeat_is_stored_once(client, project_a):
    project, keys = project_a
    sent = {"type": "track", **track(timestamp="2026-01-01T00:00:00Z")}
    for _ in range(2):  # an SDK retry of the same request
        assert (
            post(
                client, "/v1/batch", {"batch": [sent, {**sent, "messageId": "kept"}]}, write_key=keys.write_key
            ).status_code
            == 200
        )
    ids = sorted(Event.objects.filter(project=project).values_list("message_id", flat=True))
    assert len(ids) == 2
    assert ids[1] == "kept"
    assert ids[0].startswith("gen-")


def test_preflight_and_other_methods(client):
    response = client.options("/v1/track")
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "Authorization" in response["Access-Control-Allow-Headers"]
    response = client.get("/v1/track")
    assert (response.status_code, response["Allow"]) == (405, "POST, OPTIONS")


def test_each_project_gets_only_its_own_events(client, project_a, project_b):
    (a, a_keys), (b, b_keys) = project_a, project_b
    post(client, "/v1/track", track(messageId="same"), write_key=a_keys.write_key)
    post(client, "/v1/track", track(messageId="same"), write_key=b_keys.write_key)
    post(client, "/v1/track", track(messageId="only-b", userId="u9"), write_key=b_keys.write_key)
    assert list(Event.objects.filter(project=a).values_list("message_id", flat=True)) == ["same"]
    assert sorted(Event.objects.filter(project=b).values_list("message_id", flat=True)) == ["only-b", "same"]
    # The same user id in two projects is two profiles, each with its project's events.
    assert Profile.objects.filter(user_id="u1").count() == 2
    assert Event.objects.filter(project=a, profile__project=b).count() == 0
    assert not Profile.objects.filter(project=a, user_id="u9").exists()


def test_broker_unreachable_is_503_with_retry_after_and_a_retry_is_stored_once(client, project_a, settings):
    project, keys = project_a
    settings.INGEST_PUBLISH_TIMEOUT = 2
    # One message with its id, one without (its id derives from its content).
    dated = track(userId="u2", timestamp="2026-01-01T00:00:00Z")
    body = {"batch": [{"type": "track", **track(messageId="r-1")}, {"type": "track", **dated}]}
    saved = app.conf.task_always_eager
    app.conf.task_always_eager = False
    settings.CELERY_BROKER_URL = "amqp://guest:guest@127.0.0.1:1//"  # nothing listens on port 1
    try:
        started = time.monotonic()
        response = post(client, "/v1/batch", body, write_key=keys.write_key)
        elapsed = time.monotonic() - started
    finally:
        app.conf.task_always_eager = saved
        publisher._publishers.clear()
    assert response.status_code == 503
    assert elapsed < 2  # refused at once, not after the timeout
    assert response["Retry-After"] == "10"
    assert response.json()["code"] == "service_unavailable"
    assert Event.objects.count() == 0
    # The SDK retries the same request once the queue is back.
    for _ in range(2):
        assert post(client, "/v1/batch", body, write_key=keys.write_key).status_code == 200
    assert Event.objects.filter(project=project).count() == 2


def test_response_hooks_add_keys_to_the_answer(client, project_a):
    seen = []

    def hook(project, messages):
        seen.append((project.pk, [m["event"] for m in messages]))
        return {"in_app": []} if any(m["event"] == "App Launched" for m in messages) else {}

    hooks.response_hook_register(hook)
    try:
        response = post(client, "/v1/track", track(event="App Launched"), write_key=project_a[1].write_key)
        other = post(client, "/v1/track", track(), write_key=project_a[1].write_key)
    finally:
        hooks.response_hook_unregister(hook)
    assert response.json() == {"success": True, "in_app": []}
    assert other.json() == {"success": True}
    assert seen == [(project_a[0].pk, ["App Launched"]), (project_a[0].pk, ["Product Viewed"])]


def test_the_collector_reaches_no_database_table_but_the_key_lookup(client, project_a, django_assert_max_num_queries):
    """With a broker, the request path writes nothing: the only query is the
    write-key lookup (cached after the first request)."""
    keys = project_a[1]
    saved = app.conf.task_always_eager
    app.conf.task_always_eager = False
    sent = []
    original = publisher.publisher_for
    publisher.publisher_for = lambda url: type(
        "P", (), {"publish": lambda self, payload, count: sent.append(json.loads(payload))}
    )()
    try:
        with django_assert_max_num_queries(1):
            assert post(client, "/v1/track", track(messageId="q1"), write_key=keys.write_key).status_code == 200
        with django_assert_max_num_queries(0):
            assert post(client, "/v1/track", track(messageId="q2"), write_key=keys.write_key).status_code == 200
    finally:
        publisher.publisher_for = original
        app.conf.task_always_eager = saved
    assert [item["messages"][0]["messageId"] for item in sent] == ["q1", "q2"]
    assert Event.objects.count() == 0 and AnonymousId.objects.count() == 0


def test_decompression_is_bounded(client, project_a):
    # zlib level 9 of zeros: ~1,000x; the collector inflates at most 500 KB + 1 byte.
    data = zlib.compress(b"0" * 5_000_000, 9)
    assert len(data) < 10_000
    response = post(
        client, "/v1/batch", None, raw=gzip.compress(b"0" * 5_000_000), write_key=project_a[1].write_key,
        HTTP_CONTENT_ENCODING="gzip",
    )  # fmt: skip
    assert response.status_code == 413
