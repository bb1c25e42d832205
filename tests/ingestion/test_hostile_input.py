"""Hostile input on the collectors and the history import: nothing lost, nothing crashes.

Every request here is answered 2xx or 4xx, never 5xx, through both the WSGI fast
path and the Django view (the same answer); every message answered 200 ends up
stored or in the dead-letter table, through the worker's own path (`eager`
runs the ingest task in-process on the JSON string a worker gets; the last
tests use a real broker and worker process).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from kombu import Connection, Queue

from config.celery import app
from crm.models import Device, Event, Profile
from crm.services import events as crm_events
from ingestion import publisher, store
from ingestion.importer import events_import
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


def test_a_far_future_timestamp_is_set_to_the_receive_time_and_the_user_takes_later_events(client, project_a, eager):
    project, keys = project_a
    status, _ = answer(client, "/v1/track", track(userId="victim", messageId="t1", timestamp="9999-12-31T23:59:30Z"),
                       keys.write_key)  # fmt: skip
    assert status == 200
    first = Event.objects.get(message_id="t1")
    assert first.timestamp == first.received_at
    assert first.received_at > datetime.now(UTC) - timedelta(minutes=5)
    assert answer(client, "/v1/track", track(userId="victim", messageId="t2"), keys.write_key)[0] == 200
    assert stored_ids(project) == ["t1", "t2"]
    assert not DeadLetter.objects.exists()
    profile = Profile.objects.get(project=project, user_id="victim")
    assert profile.last_seen <= datetime.now(UTC)


def test_a_timestamp_less_than_24_hours_ahead_is_kept(client, project_a, eager):
    project, keys = project_a
    ahead = (datetime.now(UTC) + timedelta(hours=23)).replace(microsecond=0)
    assert answer(client, "/v1/track", track(messageId="t1", timestamp=ahead.isoformat()), keys.write_key)[0] == 200
    assert Event.objects.get(project=project).timestamp == ahead


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


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/track", track(timestamp="0001-01-01T00:00:00+14:00"), "timestamp"),
        ("/v1/track", track(originalTimestamp="0001-01-01T00:00:00+14:00"), "originalTimestamp"),
        ("/v1/track", track(sentAt="0001-01-01T00:00:00+14:00"), "sentAt"),
        ("/v1/track", track(timestamp="9999-12-31T23:59:59-14:00"), "timestamp"),
        ("/v1/batch", {"batch": [track()], "sentAt": "0001-01-01T00:00:00+14:00"}, "sentAt"),
        ("/v1/batch", {"batch": [track()], "sentAt": "9999-12-31T23:59:59-14:00"}, "sentAt"),
    ],
)
def test_times_outside_the_calendar_in_utc_are_400_naming_the_field(client, project_a, eager, path, body, field):
    status, payload = answer(client, path, body, project_a[1].write_key)
    assert (status, payload["field"]) == (400, field)
    assert payload["message"].startswith(f"{field} is out of range (years 1-9999 in UTC), got ")
    assert not Event.objects.exists() and not DeadLetter.objects.exists()


def test_a_batch_message_with_an_impossible_time_is_rejected_alone(client, project_a, eager):
    project, keys = project_a
    body = {"batch": [track(messageId="ok"), track(messageId="bad", timestamp="0001-01-01T00:00:00+14:00")]}
    status, payload = answer(client, "/v1/batch", body, keys.write_key)
    assert status == 200
    assert payload["rejected"] == [
        {"index": 1, "field": "timestamp",
         "message": "timestamp is out of range (years 1-9999 in UTC), got '0001-01-01T00:00:00+14:00'"}
    ]  # fmt: skip
    assert stored_ids(project) == ["ok"]


def test_a_time_before_2000_is_400_unless_sent_at_corrects_it(client, project_a, eager):
    project, keys = project_a
    status, payload = answer(client, "/v1/track", track(timestamp="1999-12-31T23:59:59Z"), keys.write_key)
    assert (status, payload["field"], payload["message"]) == (
        400, "timestamp", "timestamp must not be before 2000-01-01T00:00:00+00:00 (after clock-skew correction)"
    )  # fmt: skip
    assert not Event.objects.exists()
    # A device whose clock was reset to 1970 stamped the event 5 s before sending it.
    body = track(messageId="c1", timestamp="1970-01-01T00:00:05Z", sentAt="1970-01-01T00:00:10Z")
    assert answer(client, "/v1/track", body, keys.write_key)[0] == 200
    event = Event.objects.get(project=project)
    assert event.timestamp == event.received_at - timedelta(seconds=5)


def test_the_import_keeps_old_history_and_bounds_the_times_by_the_receive_time(tmp_path, project_a):
    project, _ = project_a
    lines = [
        # 2003 history, received then: kept as it is.
        track(messageId="old", timestamp="2003-05-01T10:00:00Z", sentAt="2003-05-01T10:00:01Z",
              receivedAt="2003-05-01T10:00:02Z"),
        # A time far ahead of its line's receivedAt: that receivedAt.
        track(messageId="ahead", timestamp="9999-12-31T23:59:30Z", receivedAt="2010-01-01T00:00:00Z"),
        track(messageId="received-late", receivedAt="9999-12-31T23:59:30Z"),
        track(messageId="too-old", timestamp="1999-01-01T00:00:00Z"),
        track(messageId="out-of-range", timestamp="0001-01-01T00:00:00+14:00"),
        track(messageId="deep", properties=nested(65)),
    ]  # fmt: skip
    path = tmp_path / "history.ndjson"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    rejected = []
    result = events_import(path=path, project_id=project.pk, on_rejected=rejected.append)
    assert (result.stored, result.rejected, result.dead_lettered) == (2, 4, 0)
    assert [(r.line, r.field, r.message) for r in rejected] == [
        (3, "receivedAt", "receivedAt must not be in the future"),
        (4, "timestamp", "timestamp must not be before 2000-01-01T00:00:00+00:00 (after clock-skew correction)"),
        (5, "timestamp", "timestamp is out of range (years 1-9999 in UTC), got '0001-01-01T00:00:00+14:00'"),
        (6, "properties", "properties is nested more than 64 levels deep"),
    ]
    times = dict(Event.objects.filter(project=project).values_list("message_id", "timestamp"))
    assert times == {
        "old": datetime(2003, 5, 1, 10, 0, 1, tzinfo=UTC),
        "ahead": datetime(2010, 1, 1, tzinfo=UTC),
    }


# --- Nesting -----------------------------------------------------------------------


def test_properties_nested_64_levels_are_stored_exactly(client, project_a, eager):
    project, keys = project_a
    properties = nested(63, leaf=[1])  # the properties object itself is level 1: 63 objects and an array
    assert answer(client, "/v1/track", track(messageId="deep", properties=properties), keys.write_key)[0] == 200
    assert Event.objects.get(project=project).properties == properties


@pytest.mark.parametrize("depth", [65, 252, 260, 1000])
@pytest.mark.parametrize("with_message_id", [True, False])
def test_deeper_properties_are_400_naming_the_field(client, project_a, eager, depth, with_message_id):
    # With a time and no id, the id is derived from the content (encoded).
    fields = {"timestamp": "2026-01-01T00:00:00Z", **({"messageId": "m1"} if with_message_id else {})}
    body = b'{"type":"track","userId":"u1","event":"x",%s"properties":%s}' % (
        b"".join(b'"%s":"%s",' % (k.encode(), v.encode()) for k, v in fields.items()),
        nested_json(depth),
    )
    status, payload = answer(client, "/v1/track", body, project_a[1].write_key)
    assert (status, payload["field"], payload["message"]) == (
        400, "properties", "properties is nested more than 64 levels deep"
    )  # fmt: skip
    assert not Event.objects.exists() and not DeadLetter.objects.exists()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"traits": nested(65)}, "traits"),
        ({"context": nested(65)}, "context"),
        ({"integrations": nested(100)}, "integrations"),
        ({"anything": [nested(300)]}, "anything"),
    ],
)
def test_any_field_nested_too_deep_is_400_naming_it(client, project_a, eager, fields, field):
    status, payload = answer(client, "/v1/identify", {"userId": "u1", **fields}, project_a[1].write_key)
    assert (status, payload["field"]) == (400, field)
    assert not Event.objects.exists()


def test_a_deep_message_in_a_large_batch_is_rejected_alone(client, project_a, eager):
    project, keys = project_a
    filler = {"blob": "x" * 20_000}  # the batch is over 32 KB: each message's size is checked too
    deep = track(properties=nested(300))  # no messageId: it would be derived from the content
    body = {"batch": [track(messageId="a", properties=filler), deep, track(messageId="b", properties=filler)]}
    status, payload = answer(client, "/v1/batch", body, keys.write_key)
    assert (status, payload["rejected"]) == (
        200, [{"index": 1, "field": "properties", "message": "properties is nested more than 64 levels deep"}]
    )  # fmt: skip
    assert stored_ids(project) == ["a", "b"]


def test_a_batch_context_nested_too_deep_is_400(client, project_a, eager):
    body = {"batch": [track(messageId="a")], "context": nested(65)}
    status, payload = answer(client, "/v1/batch", body, project_a[1].write_key)
    assert (status, payload["field"], payload["message"]) == (
        400,
        "context",
        "context is nested more than 64 levels deep",
    )
    assert not Event.objects.exists()


@pytest.mark.parametrize("depth", [1024, 1025, 5000])
def test_a_body_past_the_parsers_depth_is_400_naming_the_body(client, project_a, eager, depth):
    status, payload = answer(client, "/v1/track", b'{"properties":' + nested_json(depth) + b"}", project_a[1].write_key)
    assert (status, payload["field"]) == (400, "body")
    assert payload["message"].startswith("malformed JSON: ")


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


# --- Bodies, encodings, numbers ------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain;charset=UTF-8", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded",
     "application/json; charset=latin-1", "", "garbage/\x7f;;;="],
)  # fmt: skip
def test_any_content_type_is_read_as_json(client, project_a, eager, content_type):
    project, keys = project_a
    status, _ = answer(client, "/v1/track", track(messageId="m1"), keys.write_key, content_type=content_type)
    assert status == 200
    assert stored_ids(project) == ["m1"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"track","userId":"u1","event":"x","properties":{"a":"\xff\xfe"}}',  # not UTF-8
        b'{"type":"track","userId":"u1","event":"x","properties":{"a":"\xed\xa0\x80"}}',  # an encoded surrogate
        b'{"type":"track","userId":"u1","event":"x","properties":{"a":"\\ud800"}}',  # a lone surrogate
        b'{"type":"track","userId":"u1","event":"\\udfff x"}',
        b'{"type":"track","userId":"u1","event":"x","properties":{"a":1e999}}',  # past the double range
        b'{"type":"track","userId":"u1","event":"x","properties":{"a":NaN}}',
        b"\xef\xbb\xbf{}",  # a byte-order mark
        b"",
    ],
    ids=["invalid-utf8", "encoded-surrogate", "lone-surrogate", "lone-low-surrogate", "1e999", "nan", "bom", "empty"],
)
def test_bodies_postgresql_could_not_store_are_400_naming_the_body(client, project_a, eager, raw):
    status, payload = answer(client, "/v1/track", raw, project_a[1].write_key)
    assert (status, payload["field"]) == (400, "body")
    assert payload["message"].startswith("malformed JSON: ")
    assert not Event.objects.exists() and not DeadLetter.objects.exists()


def test_a_surrogate_pair_is_a_character_and_is_stored(client, project_a, eager):
    project, keys = project_a
    raw = b'{"userId":"u1","event":"x","messageId":"m1","properties":{"a":"\\ud83d\\ude00"}}'
    assert answer(client, "/v1/track", raw, keys.write_key)[0] == 200
    assert Event.objects.get(project=project).properties == {"a": "\U0001f600"}


def test_huge_numbers_are_stored_as_the_parser_reads_them(client, project_a, eager):
    project, keys = project_a
    raw = (
        b'{"userId":18446744073709551615,"event":"x","messageId":"m1","properties":{"u64":18446744073709551615,'
        b'"i64":-9223372036854775808,"past_u64":18446744073709551616,"past_i64":-9223372036854775809,'
        b'"huge":123456789012345678901234567890,"tiny":1e-400,"max":1.7976931348623157e308}}'
    )
    assert answer(client, "/v1/track", raw, keys.write_key)[0] == 200
    event = Event.objects.get(project=project)
    # Integers within 64 bits exactly; past them, the nearest double (orjson's
    # reading), which jsonb keeps as its shortest decimal.
    assert event.properties == {
        "u64": 18446744073709551615, "i64": -9223372036854775808, "past_u64": 18446744073709552000,
        "past_i64": -9223372036854776000, "huge": 123456789012345680000000000000, "tiny": 0,
        "max": int("17976931348623157" + "0" * 292),
    }  # fmt: skip
    assert event.profile.user_id == "18446744073709551615"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"event": {"name": "x"}}, "event"),
        ({"event": ["x"]}, "event"),
        ({"event": 1.5}, "event"),
        ({"event": True}, "event"),
        ({"userId": 1.5}, "userId"),
        ({"userId": 1e300}, "userId"),
        ({"messageId": {"id": 1}}, "messageId"),
        ({"timestamp": 1700000000}, "timestamp"),
        ({"timestamp": ["2026-01-01T00:00:00Z"]}, "timestamp"),
        ({"properties": "x"}, "properties"),
    ],
)
def test_values_of_the_wrong_kind_are_400_naming_the_field(client, project_a, eager, fields, field):
    status, payload = answer(client, "/v1/track", {**track(), **fields}, project_a[1].write_key)
    assert (status, payload["field"]) == (400, field)
    assert not Event.objects.exists()


def test_a_batch_whose_type_is_an_object_is_rejected_by_index(client, project_a, eager):
    project, keys = project_a
    body = {"batch": [track(messageId="ok"), {**track(), "type": nested(40)}, {**track(), "type": ["track"]}]}
    status, payload = answer(client, "/v1/batch", body, keys.write_key)
    assert (status, [(r["index"], r["field"]) for r in payload["rejected"]]) == (200, [(1, "type"), (2, "type")])
    assert stored_ids(project) == ["ok"]


@pytest.mark.parametrize(
    ("key", "headers"),
    [
        (None, {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"\x00:").decode()}),
        (None, {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"\xff\xfe:").decode()}),
        (None, {"HTTP_AUTHORIZATION": "Basic \x00\x00"}),
        ("wk\x00", {}),
        ({"key": 1}, {}),
    ],
    ids=["nul-user", "not-utf8-user", "not-base64", "nul-body-key", "object-body-key"],
)
def test_hostile_write_keys_are_401(client, project_a, eager, key, headers):
    body = track() if key is None else {**track(), "writeKey": key}
    status, payload = answer(client, "/v1/track", body, None, **headers)
    assert (status, payload["code"]) == (401, "invalid_write_key")
    assert not Event.objects.exists()


@pytest.mark.parametrize(
    ("headers", "status"),
    [({"CONTENT_LENGTH": "abc"}, 400), ({"HTTP_CONTENT_ENCODING": "gzip, gzip"}, 415),
     ({"HTTP_CONTENT_ENCODING": "gzip"}, 400)],
)  # fmt: skip
def test_hostile_headers_are_4xx(project_a, headers, status):
    auth = {"HTTP_AUTHORIZATION": basic_header(project_a[1].write_key)}
    code, _, body = wsgi_call("/v1/track", method="POST", body=json.dumps(track()).encode(), **auth, **headers)
    assert (code, orjson.loads(body)["success"]) == (status, False)
    assert not Event.objects.exists()


# --- Through the real broker and worker -----------------------------------------------


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_hostile_messages_through_the_broker_are_stored_or_dead_lettered(celery_worker_process):
    from crm.services import project_create

    project, keys = project_create(name="Hostile shop")
    celery_worker_process(queues=["ingest"], pool="solo")
    auth = {"HTTP_AUTHORIZATION": basic_header(keys.write_key)}

    def post(path, body):
        code, _, answer_body = wsgi_call(path, method="POST", body=json.dumps(body).encode(), **auth)
        return code, orjson.loads(answer_body)

    batch = [
        track(messageId="ok1"),
        track(messageId="bad", properties={"a": "\x00", "b": LITERAL}),
        track(messageId="ok2"),
        track(messageId="future", userId="victim", timestamp="9999-12-31T23:59:30Z"),
    ]
    assert post("/v1/batch", {"batch": batch}) == (200, {"success": True})
    assert post("/v1/track", track(messageId="later", userId="victim")) == (200, {"success": True})

    deadline = time.monotonic() + 60
    while Event.objects.filter(project=project).count() + DeadLetter.objects.count() < 5:
        assert time.monotonic() < deadline, "the worker did not store the messages in 60 s"
        time.sleep(0.2)
    time.sleep(1.0)  # nothing else arrives later
    assert stored_ids(project) == ["future", "later", "ok1", "ok2"]
    assert [(m, message["properties"]) for m, message in letters(project)] == [("bad", {"a": "\x00", "b": LITERAL})]
    future = Event.objects.get(message_id="future")
    assert future.timestamp == future.received_at


# --- One nesting limit, collectors, profiles API and console ---------------------


def _console_product_post(project, user, properties):
    """The console's product change form, posted with `properties` as typed."""
    from django.test import Client as ConsoleClient

    from catalog.models import Product

    product, _ = Product.objects.get_or_create(project=project, product_id="P1", defaults={"name": "Shirt"})
    console = ConsoleClient()
    console.force_login(user)
    form = {"name": "Shirt", "categories": "[]", "currency": "", "description": "", "image_url": "", "deeplink": ""}
    form.update({"in_stock": "on", "is_active": "on", "properties": json.dumps(properties)})
    return console.post(f"/admin/catalog/product/{product.pk}/change/", form)


def test_a_trait_at_the_nesting_limit_is_stored_by_the_collector_sent_back_by_patch_and_saved_in_the_console(
    client, project_a, marketer_a, eager
):
    from catalog.models import Product
    from crm.storable import MAX_JSON_DEPTH
    from ingestion.spec import MAX_NESTING_DEPTH
    from tests.conftest import bearer_client

    assert MAX_NESTING_DEPTH == MAX_JSON_DEPTH == 64  # one limit
    project, keys = project_a
    # The traits object itself is level 1, as the collectors count.
    traits = {"deep": nested(MAX_JSON_DEPTH - 2, leaf=[1])}
    body = {"userId": "u1", "messageId": "i1", "traits": traits}
    assert answer(client, "/v1/identify", body, keys.write_key, django=False) == (200, {"success": True})
    stored = Profile.objects.get(project=project, user_id="u1").traits
    assert stored == traits

    api = bearer_client(keys.secret_key)
    response = api.patch("/api/v1/profiles/u1", {"traits": stored}, format="json")
    assert response.status_code == 200
    assert Profile.objects.get(project=project, user_id="u1").traits == traits

    response = _console_product_post(project, marketer_a, stored)
    assert (response.status_code, response["Location"]) == (302, "/admin/catalog/product/")
    assert Product.objects.get(project=project, product_id="P1").properties == traits


def test_a_trait_past_the_nesting_limit_is_refused_by_the_collector_patch_and_the_console_naming_the_field(
    client, project_a, marketer_a, eager
):
    from catalog.models import Product
    from crm.storable import MAX_JSON_DEPTH
    from tests.conftest import bearer_client

    project, keys = project_a
    traits = {"deep": nested(MAX_JSON_DEPTH - 1, leaf=[1])}  # one level more
    status, payload = answer(client, "/v1/identify", {"userId": "u1", "traits": traits}, keys.write_key)
    assert (status, payload["field"], payload["message"]) == (
        400,
        "traits",
        "traits is nested more than 64 levels deep",
    )
    assert not Profile.objects.filter(project=project, user_id="u1").exists()

    Profile.objects.create(project=project, user_id="u1", traits={"plan": "pro"})
    api = bearer_client(keys.secret_key)
    response = api.patch("/api/v1/profiles/u1", {"traits": traits}, format="json")
    where = "traits['deep']" + "['n']" * (MAX_JSON_DEPTH - 1)
    assert (response.status_code, response.json()) == (400, {"traits": [f"{where}: nested deeper than 64 levels"]})
    assert Profile.objects.get(project=project, user_id="u1").traits == {"plan": "pro"}

    response = _console_product_post(project, marketer_a, traits)
    assert response.status_code == 200
    where = "properties['deep']" + "['n']" * (MAX_JSON_DEPTH - 1)
    assert response.context["adminform"].form.errors == {"properties": [f"{where}: nested deeper than 64 levels"]}
    assert Product.objects.get(project=project, product_id="P1").properties == {}
