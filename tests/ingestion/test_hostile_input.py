"""Hostile input on the collectors and the history import: nothing lost, nothing crashes.

Every request here is answered 2xx or 4xx, never 5xx, through both the WSGI fast
path and the Django view (the same answer); every message answered 200 ends up
stored or in the dead-letter table, through the worker's own path (`eager`
runs the ingest task in-process on the JSON string a worker gets; the last
tests use a real broker and worker process).
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from kombu import Connection, Queue

from config.celery import app
from crm.models import Device, Event, Profile
from crm.services import events as crm_events
from ingestion import publisher, store
from ingestion.models import DeadLetter
from ingestion.spec import message_normalize
from ingestion.store import StoreResult, dead_letters_retry, messages_store
from tests.conftest import basic_header, wsgi_call

pytestmark = pytest.mark.django_db

# The literal six characters backslash-u-0-0-0-0, which is not a NUL.
LITERAL = "\\u0000"


def track(**fields):
    return {"type": "track", "userId": "u1", "event": "Product Viewed", "properties": {"product_id": "p1"}, **fields}


def nested(depth, leaf=1):
    """A value nesting `depth` levels of objects (depth 1: {"n": leaf})."""
    value = leaf
    for _ in range(depth):
        value = {"n": value}
    return value


def nested_json(depth):
    return b'{"n":' * depth + b"1" + b"}" * depth


def answer(client, path, body, write_key, content_type="application/json", django=True, **headers):
    """The collector's answer through the fast path and (unless `django` is
    False: a message sent twice is dead-lettered twice) the Django view; they
    must agree. Returns (status, JSON answer)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    auth = {"HTTP_AUTHORIZATION": basic_header(write_key)} if write_key else {}
    status, _, fast_body = wsgi_call(path, method="POST", body=raw, CONTENT_TYPE=content_type, **auth, **headers)
    if django:
        response = client.generic("POST", path, raw, content_type=content_type, **auth, **headers)
        assert (status, fast_body) == (response.status_code, response.content), path
    return status, orjson.loads(fast_body)


def stored_ids(project):
    return sorted(Event.objects.filter(project=project).values_list("message_id", flat=True))


def letters(project):
    return [
        (letter.message_id, orjson.loads(letter.message))
        for letter in DeadLetter.objects.filter(project=project).order_by("pk")
    ]


# --- NUL characters and the dead letters -------------------------------------------


def test_a_batch_with_a_nul_and_the_literal_text_u0000_stores_its_neighbours_and_dead_letters_it_exactly(
    client, project_a, eager
):
    project, keys = project_a
    bad = track(messageId="bad", properties={"a": "\x00", "b": LITERAL})
    body = {"batch": [track(messageId="ok1"), bad, track(messageId="ok2")]}
    assert answer(client, "/v1/batch", body, keys.write_key, django=False) == (200, {"success": True})
    assert stored_ids(project) == ["ok1", "ok2"]
    [(message_id, message)] = letters(project)
    assert message_id == "bad"
    # Exactly as queued: the NUL a NUL, the literal text the literal text.
    assert message["properties"] == {"a": "\x00", "b": LITERAL}
    assert (message["type"], message["event"], message["userId"]) == ("track", "Product Viewed", "u1")

    # Fixed (the NUL removed), it is stored with the literal text intact.
    letter = DeadLetter.objects.get()
    letter.message = orjson.dumps({**message, "properties": {"a": "", "b": LITERAL}}).decode()
    letter.save()
    assert dead_letters_retry(dead_letter_ids=[letter.pk]) == StoreResult(stored=1)
    assert Event.objects.get(message_id="bad").properties == {"a": "", "b": LITERAL}
    assert not DeadLetter.objects.exists()


@pytest.mark.parametrize("staged", [False, True], ids=["json-parameter", "copy-staged"])
def test_the_literal_text_u0000_is_stored_verbatim_everywhere_in_an_event(project_a, monkeypatch, staged):
    project, _ = project_a
    if staged:
        monkeypatch.setattr(crm_events, "EVENTS_COPY_MIN_ROWS", 1)
    raw = track(
        userId="u" + LITERAL,
        event="Viewed " + LITERAL,
        messageId="m" + LITERAL,
        properties={LITERAL: LITERAL, "list": [LITERAL, "\\\\u0000", "\\"]},
        context={"note": LITERAL + "\t\n\\"},
        timestamp="2026-02-01T09:00:00Z",
    )
    message = message_normalize(raw, project_id=project.pk, received_at=datetime(2026, 2, 1, 9, 1, tzinfo=UTC))
    assert messages_store(project_id=project.pk, messages=[message]) == StoreResult(stored=1)
    event = Event.objects.get(project=project)
    assert (event.name, event.message_id, event.profile.user_id) == ("Viewed " + LITERAL, "m" + LITERAL, "u" + LITERAL)
    assert event.properties == {LITERAL: LITERAL, "list": [LITERAL, "\\\\u0000", "\\"]}
    assert event.context == {"note": LITERAL + "\t\n\\"}


@pytest.mark.parametrize("staged", [False, True], ids=["json-parameter", "copy-staged"])
@pytest.mark.parametrize(
    "fields",
    [
        {"properties": {"k\x00": 1}},
        {"properties": {"list": ["a\x00b"]}},
        {"context": {"locale": "\x00"}},
        {"event": "Viewed\x00"},
        {"messageId": "m\x00"},
        {"userId": "u\x00"},
    ],
    ids=["property-key", "property-value", "context", "event-name", "message-id", "user-id"],
)
def test_a_nul_anywhere_dead_letters_just_that_message_with_its_exact_content(project_a, monkeypatch, staged, fields):
    project, _ = project_a
    if staged:
        monkeypatch.setattr(crm_events, "EVENTS_COPY_MIN_ROWS", 1)
    received = datetime(2026, 2, 1, 9, 1, tzinfo=UTC)
    raws = [track(messageId="ok1"), track(**{"messageId": "bad", **fields}), track(messageId="ok2", userId="u2")]
    messages = [message_normalize(raw, project_id=project.pk, received_at=received) for raw in raws]
    assert messages_store(project_id=project.pk, messages=messages) == StoreResult(stored=2, dead_lettered=1)
    assert stored_ids(project) == ["ok1", "ok2"]
    letter = DeadLetter.objects.get(project=project)
    assert orjson.loads(letter.message) == messages[1]
    # The id column shows a NUL as text (it is kept exactly in the message).
    assert letter.message_id == ("m\\u0000" if "messageId" in fields else "bad")
    assert letter.received_at == received


@pytest.mark.parametrize(
    ("message", "exact"),
    [
        ({"messageId": "n\x00", "k\x00": ["\x00", LITERAL], "receivedAt": "2026-02-01T09:00:00+00:00"}, True),
        # Not what orjson.loads makes (so no queued message is like these): kept
        # as the standard library writes them.
        ({"messageId": "s", "lone": "\ud800", "receivedAt": "not a time"}, False),
        ({"messageId": "i", "big": 2**70, "receivedAt": "9999-12-31T23:59:59-14:00"}, False),
        ({"messageId": "d", "deep": nested(300)}, False),
    ],
    ids=["nul", "lone-surrogate", "int-past-64-bits", "nested-300"],
)
def test_a_dead_letter_is_recorded_whatever_the_message_contains(project_a, message, exact):
    project, _ = project_a
    letter = store.dead_letter_record(project_id=project.pk, message=message, error=ValueError("bad \x00 \ud800"))
    letter.refresh_from_db()
    if exact:
        assert orjson.loads(letter.message) == message
        assert letter.received_at == datetime(2026, 2, 1, 9, 0, tzinfo=UTC)
    else:
        assert letter.message == json.dumps(message)
        # No usable receivedAt: dated when recorded.
        assert abs(letter.received_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert letter.error == "ValueError: bad \\u0000 \\ud800"
    assert letter.message_id == message["messageId"].replace("\x00", "\\u0000")


@pytest.mark.django_db(transaction=True)
def test_a_dead_letter_of_a_deleted_project_is_dropped_and_the_other_projects_are_stored(make_project):
    gone, _ = make_project("Gone")
    kept, _ = make_project("Kept")
    received = datetime(2026, 2, 1, 9, 1, tzinfo=UTC)
    bad = message_normalize(track(messageId="bad", userId="u\x00"), project_id=gone.pk, received_at=received)
    good = message_normalize(track(messageId="good"), project_id=kept.pk, received_at=received)
    # The worker saw the project a moment ago (chunk_store trusts that for a minute).
    gone_id = gone.pk
    assert store._project_exists(gone_id)
    gone.delete()
    payload = orjson.dumps([{"project_id": gone_id, "messages": [bad]}, {"project_id": kept.pk, "messages": [good]}])
    from ingestion.tasks import ingest_batch_task

    ingest_batch_task.apply(args=[payload.decode()], throw=True)
    assert list(Event.objects.values_list("project_id", "message_id")) == [(kept.pk, "good")]
    assert not DeadLetter.objects.exists()


# --- Times -------------------------------------------------------------------------


def test_profiles_and_devices_already_seen_at_the_end_of_the_calendar_still_take_events(project_a):
    """Messages queued by an older collector (or stored before the clamp) may
    carry 9999-12-31: the store's arithmetic must not overflow on them."""
    project, _ = project_a
    end = "9999-12-31T23:59:30+00:00"
    context = {"device": {"id": "d1", "type": "ios"}}

    def message(n, timestamp):
        return {"type": "track", "event": "Product Viewed", "userId": "victim", "messageId": f"m{n}",
                "properties": {"product_id": f"p{n}"}, "context": context, "timestamp": timestamp,
                "receivedAt": "2026-02-01T09:00:00+00:00"}  # fmt: skip

    assert messages_store(project_id=project.pk, messages=[message(1, end)]) == StoreResult(stored=1)
    assert messages_store(project_id=project.pk, messages=[message(2, end)]) == StoreResult(stored=1)
    assert messages_store(project_id=project.pk, messages=[message(3, "2026-02-01T09:00:00+00:00")]) == StoreResult(
        stored=1
    )
    assert not DeadLetter.objects.exists()
    profile = Profile.objects.get(project=project, user_id="victim")
    assert (profile.last_seen, profile.recent_viewed) == (datetime.fromisoformat(end), ["p3", "p2", "p1"])
    assert Device.objects.get(project=project).last_seen == datetime.fromisoformat(end)


# --- The publisher -----------------------------------------------------------------------


@pytest.mark.broker
def test_a_request_that_cannot_be_encoded_fails_alone_and_the_requests_sharing_its_publish_are_queued(settings):
    """The group commit publishes concurrent requests as ONE broker message: a
    request whose messages the encoder refuses must not fail the others."""
    settings.INGEST_PUBLISH_LINGER_MS = 1000  # the three requests share one publish
    saved = app.conf.task_always_eager
    app.conf.task_always_eager = False
    publisher._publishers.clear()
    with Connection(app.conf.broker_url) as conn:
        channel = conn.default_channel
        channel.queue_declare(queue="ingest", durable=True, auto_delete=False)
        channel.queue_purge("ingest")
        errors = {}

        def send(project_id, messages):
            try:
                publisher.batch_enqueue(project_id=project_id, messages=messages)
            except Exception as exc:  # noqa: BLE001 - recorded for the assertion
                errors[project_id] = exc

        try:
            first = threading.Thread(target=send, args=(1, [{"messageId": "a"}]))
            first.start()
            # Past the encoder's depth (a message the collector would have refused).
            send(2, [{"messageId": "deep", "properties": nested(300)}])
            send(3, [{"messageId": "b"}])
            first.join()
        finally:
            app.conf.task_always_eager = saved
            publisher._publishers.clear()
        assert list(errors) == [2] and isinstance(errors[2], orjson.JSONEncodeError)
        message = Queue("ingest").bind(channel).get(no_ack=True)
        items = json.loads(message.decode()[0][0])
        assert items == [{"project_id": 1, "messages": [{"messageId": "a"}]},
                         {"project_id": 3, "messages": [{"messageId": "b"}]}]  # fmt: skip
        assert Queue("ingest").bind(channel).get(no_ack=True) is None
