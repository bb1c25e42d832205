"""Validation and normalisation of Segment messages (no database)."""

from datetime import UTC, datetime, timedelta

import pytest

from ingestion.spec import MessageError, corrected_timestamp, message_normalize, parse_received_at

RECEIVED = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def normalize(raw, **kwargs):
    return message_normalize(raw, project_id=7, received_at=RECEIVED, **kwargs)


def test_clock_skew_is_corrected_with_sent_at_and_the_receive_time():
    # The device clock is 1 hour fast: it stamped the event 10 s before sending.
    out = normalize(
        {
            "type": "track",
            "userId": "u1",
            "event": "Product Viewed",
            "timestamp": "2026-03-01T13:00:00Z",
            "sentAt": "2026-03-01T13:00:10Z",
        }
    )
    assert out["timestamp"] == "2026-03-01T11:59:50+00:00"
    assert out["receivedAt"] == "2026-03-01T12:00:00+00:00"


def test_batch_sent_at_applies_when_the_message_has_none():
    out = normalize(
        {"type": "track", "userId": "u1", "event": "x", "originalTimestamp": "2026-03-01T08:00:00+02:00"},
        batch_sent_at=datetime(2026, 3, 1, 6, 0, 5, tzinfo=UTC),
    )
    assert out["timestamp"] == "2026-03-01T11:59:55+00:00"


def test_without_sent_at_the_timestamp_is_trusted_and_without_one_it_is_the_receive_time():
    assert (
        normalize({"type": "track", "userId": "u", "event": "x", "timestamp": "2025-01-02T03:04:05"})["timestamp"]
        == "2025-01-02T03:04:05+00:00"
    )
    assert normalize({"type": "track", "userId": "u", "event": "x"})["timestamp"] == RECEIVED.isoformat()
    assert corrected_timestamp(timestamp=None, sent_at=RECEIVED, received_at=RECEIVED) == RECEIVED


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ({"type": "track", "event": "x"}, "userId", "userId or anonymousId is required"),
        ({"type": "track", "userId": "", "anonymousId": None, "event": "x"}, "userId",
         "userId or anonymousId is required"),
        ({"type": "track", "userId": True, "event": "x"}, "userId", "userId must be a string"),
        ({"type": "track", "anonymousId": ["a"], "event": "x"}, "anonymousId", "anonymousId must be a string"),
        ({"type": "track", "userId": "u"}, "event", "event is required"),
        ({"type": "track", "userId": "u", "event": 5}, "event", "event must be a string"),
        ({"type": "track", "userId": "u", "event": "x", "properties": [1]}, "properties",
         "properties must be an object"),
        ({"type": "identify", "userId": "u", "traits": "vip"}, "traits", "traits must be an object"),
        ({"type": "track", "userId": "u", "event": "x", "context": 3}, "context", "context must be an object"),
        ({"type": "track", "userId": "u", "event": "x", "timestamp": "yesterday"}, "timestamp",
         "timestamp must be an ISO-8601 date string, got 'yesterday'"),
        ({"type": "track", "userId": "u", "event": "x", "sentAt": 1700000000}, "sentAt",
         "sentAt must be an ISO-8601 date string"),
        ({"type": "click", "userId": "u"}, "type",
         "type must be one of identify, track, page, screen, group, alias, got 'click'"),
        ({"userId": "u"}, "type", "type is required: one of identify, track, page, screen, group, alias"),
        ({"type": "group", "userId": "u"}, "groupId", "groupId is required"),
        ({"type": "alias", "userId": "u"}, "previousId", "previousId is required"),
        ({"type": "alias", "anonymousId": "a", "previousId": "p"}, "userId", "userId is required"),
        ({"type": "track", "userId": "u" * 256, "event": "x"}, "userId", "userId must be at most 255 characters"),
        ("just a string", "message", "each message must be a JSON object"),
        ({"type": "track", "userId": "u", "event": "x", "properties": {"blob": "x" * 33_000}}, "message",
         "message is larger than 32 KB"),
    ],
)  # fmt: skip
def test_invalid_messages_are_rejected_naming_the_field(raw, field, message):
    with pytest.raises(MessageError) as info:
        normalize(raw)
    assert (info.value.field, info.value.error) == (field, message)


def test_normalised_forms_of_every_type():
    common = {"anonymousId": "a1", "messageId": "m1", "timestamp": "2026-03-01T11:00:00Z"}
    assert normalize({"type": "page", "name": "Home", "category": "Docs", "properties": {"path": "/"}, **common}) == {
        "type": "page",
        "event": "Home",
        "category": "Docs",
        "messageId": "m1",
        "anonymousId": "a1",
        "properties": {"path": "/"},
        "timestamp": "2026-03-01T11:00:00+00:00",
        "receivedAt": "2026-03-01T12:00:00+00:00",
    }
    assert normalize({"type": "screen", **common})["event"] == "screen"
    assert normalize({"type": "group", "groupId": 42, **common})["groupId"] == "42"
    alias = normalize({"type": "alias", "userId": 99, "previousId": "a0", **common})
    assert (alias["event"], alias["userId"], alias["previousId"]) == ("alias", "99", "a0")


def test_identify_takes_rudderstack_context_traits_under_its_own_traits():
    out = normalize(
        {
            "type": "identify",
            "userId": "u1",
            "traits": {"plan": "pro"},
            "context": {"traits": {"plan": "free", "email": "a@b.c"}, "locale": "de-DE"},
        }
    )
    assert out["traits"] == {"plan": "pro", "email": "a@b.c"}
    assert out["context"]["locale"] == "de-DE"


def test_batch_context_is_merged_under_the_message_context():
    out = normalize(
        {"type": "track", "userId": "u", "event": "x", "context": {"locale": "fr-FR"}},
        batch_context={"locale": "en-US", "library": {"name": "analytics-java"}},
    )
    assert out["context"] == {"locale": "fr-FR", "library": {"name": "analytics-java"}}


def test_a_missing_message_id_is_derived_from_content_when_the_message_is_dated():
    dated = {"type": "track", "userId": "u", "event": "x", "timestamp": "2026-03-01T11:00:00Z"}
    first, again = normalize(dict(dated)), normalize(dict(dated))
    assert first["messageId"] == again["messageId"]  # an SDK retry is stored once
    assert first["messageId"].startswith("gen-") and len(first["messageId"]) == 36
    other = normalize({**dated, "event": "y"})
    assert other["messageId"] != first["messageId"]
    undated = {"type": "track", "userId": "u", "event": "x"}
    assert normalize(dict(undated))["messageId"] != normalize(dict(undated))["messageId"]
    assert normalize({**dated, "messageId": "keep-me"})["messageId"] == "keep-me"


def test_numeric_ids_are_kept_as_strings():
    out = normalize({"type": "identify", "userId": 12345, "anonymousId": 7})
    assert (out["userId"], out["anonymousId"]) == ("12345", "7")


def test_the_endpoint_type_wins_over_a_type_in_the_body():
    assert normalize({"type": "identify", "userId": "u", "event": "x"}, type_hint="track")["type"] == "track"


def test_received_times_can_be_far_apart_from_event_times():
    old = RECEIVED - timedelta(days=400)
    out = normalize({"type": "track", "userId": "u", "event": "x", "timestamp": old.isoformat()})
    assert out["timestamp"] == old.isoformat()


def test_a_time_more_than_24_hours_after_the_receive_time_is_the_receive_time():
    def stamped(**times):
        return normalize({"type": "track", "userId": "u", "event": "x", **times})["timestamp"]

    assert stamped(timestamp="2026-03-02T12:00:00Z") == "2026-03-02T12:00:00+00:00"  # 24 h ahead: kept
    assert stamped(timestamp="2026-03-02T12:00:01Z") == RECEIVED.isoformat()
    assert stamped(timestamp="9999-12-31T23:59:59.999999Z") == RECEIVED.isoformat()
    # After the skew correction: sent 2 days after the event, but received at once.
    assert stamped(timestamp="2026-03-05T00:00:00Z", sentAt="2026-03-03T00:00:00Z") == RECEIVED.isoformat()


def test_a_skew_correction_past_the_calendar_is_bounded_on_its_side():
    year1, year9999 = datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)
    # Sent ~10,000 years after the event: before the calendar, rejected by the caller.
    assert corrected_timestamp(timestamp=year1, sent_at=year9999, received_at=RECEIVED) == datetime.min.replace(
        tzinfo=UTC
    )
    # Sent ~10,000 years before it: in the future, so the receive time.
    assert corrected_timestamp(timestamp=year9999, sent_at=year1, received_at=RECEIVED) == RECEIVED


@pytest.mark.parametrize(
    ("times", "field", "message"),
    [
        ({"timestamp": "0001-01-01T00:00:00+14:00"}, "timestamp",
         "timestamp is out of range (years 1-9999 in UTC), got '0001-01-01T00:00:00+14:00'"),
        ({"originalTimestamp": "9999-12-31T23:59:59-14:00"}, "originalTimestamp",
         "originalTimestamp is out of range (years 1-9999 in UTC), got '9999-12-31T23:59:59-14:00'"),
        ({"sentAt": "0001-01-01T00:00:00+14:00"}, "sentAt",
         "sentAt is out of range (years 1-9999 in UTC), got '0001-01-01T00:00:00+14:00'"),
        ({"timestamp": "1999-12-31T23:59:59.999999Z"}, "timestamp",
         "timestamp must not be before 2000-01-01T00:00:00+00:00 (after clock-skew correction)"),
        ({"originalTimestamp": "1999-12-31T23:59:59Z"}, "originalTimestamp",
         "originalTimestamp must not be before 2000-01-01T00:00:00+00:00 (after clock-skew correction)"),
        ({"timestamp": "0001-01-01T00:00:00Z", "sentAt": "9999-12-31T00:00:00Z"}, "timestamp",
         "timestamp must not be before 2000-01-01T00:00:00+00:00 (after clock-skew correction)"),
    ],
)  # fmt: skip
def test_times_outside_the_calendar_or_before_2000_are_rejected_naming_the_field(times, field, message):
    with pytest.raises(MessageError) as info:
        normalize({"type": "track", "userId": "u", "event": "x", **times})
    assert (info.value.field, info.value.error) == (field, message)


def test_a_device_clock_years_off_is_corrected_not_rejected():
    # The clock was reset to 1970: the event came 5 s before the send.
    out = normalize(
        {
            "type": "track",
            "userId": "u",
            "event": "x",
            "timestamp": "1970-01-01T00:00:05Z",
            "sentAt": "1970-01-01T00:00:10Z",
        }
    )
    assert out["timestamp"] == (RECEIVED - timedelta(seconds=5)).isoformat()
    assert (
        normalize({"type": "track", "userId": "u", "event": "x", "timestamp": "2000-01-01T00:00:00Z"})["timestamp"]
        == "2000-01-01T00:00:00+00:00"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("2003-05-01T10:00:00Z", datetime(2003, 5, 1, 10, tzinfo=UTC)),
        ("2026-03-02T12:00:00Z", datetime(2026, 3, 2, 12, tzinfo=UTC)),
        ("2026-03-02T12:00:01Z", "receivedAt must not be in the future"),
        ("1999-12-31T23:59:59Z", "receivedAt must not be before 2000-01-01T00:00:00+00:00"),
        (
            "9999-12-31T23:59:59-14:00",
            "receivedAt is out of range (years 1-9999 in UTC), got '9999-12-31T23:59:59-14:00'",
        ),
    ],
)
def test_an_imported_receive_time_lies_between_2000_and_a_day_after_the_import(value, expected):
    if isinstance(expected, str):
        with pytest.raises(MessageError) as info:
            parse_received_at(value, now=RECEIVED)
        assert (info.value.field, info.value.error) == ("receivedAt", expected)
    else:
        assert parse_received_at(value, now=RECEIVED) == expected


def nested(depth, leaf=1):
    for _ in range(depth):
        leaf = [leaf]
    return leaf


@pytest.mark.parametrize("check_depth", [True, False])
def test_fields_nest_at_most_64_levels(check_depth):
    ok = {"type": "track", "userId": "u", "event": "x", "properties": {"a": nested(63)}}
    assert normalize(ok, check_depth=check_depth)["properties"] == {"a": nested(63)}
    # Brackets inside strings are no nesting (they only make the shortcut walk).
    brackets = {**ok, "properties": {"a": "[{" * 100}}
    assert normalize(brackets, check_depth=check_depth)["properties"] == {"a": "[{" * 100}
    for field in ("properties", "traits", "context", "integrations", "extra"):
        deep = {"type": "identify", "userId": "u", field: {"a": nested(64)}}
        with pytest.raises(MessageError) as info:
            normalize(deep)
        assert (info.value.field, info.value.error) == (field, f"{field} is nested more than 64 levels deep")


def test_a_message_nested_past_the_encoders_limit_is_rejected_before_any_encoding():
    raw = {"type": "track", "userId": "u", "event": "x", "timestamp": "2026-03-01T11:00:00Z", "properties": nested(300)}
    for check_size in (True, False):
        with pytest.raises(MessageError) as info:
            normalize(raw, check_size=check_size)
        assert info.value.field == "properties"
