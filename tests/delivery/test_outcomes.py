"""Outcomes told exactly once, by the statement that made them true: enqueue
(created, skipped), the claim's skips and failures (not the rows queued again),
the send's record (sent, failed; nothing for a redelivered task or a stale
claim), in-app records, cancel and the sweeper. Each carries the row's label,
items and created_at."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from delivery.channels.base import PermanentError, Result
from delivery.models import Message
from delivery.outcomes import Outcome, outcome_hook_register, outcome_hook_unregister
from delivery.services import MessageIn, message_ids_reserve, messages_claim, messages_enqueue, messages_send
from delivery.services.cancel import messages_cancel
from delivery.services.record import messages_record
from delivery.services.sweeper import messages_sweep

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)


def kinds(outcomes: list[Outcome]) -> list[tuple[int, str, str]]:
    return [(o.message_id, o.kind, o.reason) for o in outcomes]


def one(profile, key: str, **fields) -> MessageIn:
    fields.setdefault("content", {"subject": "Hi", "text": "Hello"})
    return MessageIn(profile_id=profile.pk, channel=fields.pop("channel", "email"), idempotency_key=key, **fields)


def test_enqueue_tells_created_for_each_inserted_row_and_skipped_with_its_reason_once(
    shop, make_profile, channels, told
):
    alice, bob = make_profile(), make_profile()
    messages = [
        one(alice, "k:a", source="campaign:1", label="variant:5", items=["P1", "P2"]),
        one(bob, "k:b", source="campaign:1", label="control", skip_reason="control"),
    ]
    messages_enqueue(project_id=shop.pk, messages=messages, now=T0)
    a, b = (Message.objects.get(idempotency_key=k) for k in ("k:a", "k:b"))
    assert kinds(told) == [(a.pk, "created", ""), (b.pk, "created", ""), (b.pk, "skipped", "control")]
    first = told[0]
    assert (first.project_id, first.profile_id, first.channel, first.source, first.label, first.items) == (
        shop.pk, alice.pk, "email", "campaign:1", "variant:5", ("P1", "P2"),
    )  # fmt: skip
    assert (first.at, first.created_at) == (T0, T0)
    assert (a.label, a.items, b.label, b.items) == ("variant:5", ["P1", "P2"], "control", [])
    told.clear()
    # The same keys again (a re-run of the fan-out): nothing inserted, nothing told.
    assert messages_enqueue(project_id=shop.pk, messages=messages, now=T0).created == 0
    assert told == []


def test_reserved_ids_are_the_rows_ids_and_the_default_still_works(shop, make_profile, channels, told):
    alice = make_profile()
    reserved = message_ids_reserve(count=2)
    assert reserved[1] == reserved[0] + 1
    messages_enqueue(
        project_id=shop.pk,
        messages=[one(alice, "r:1", id=reserved[1]), one(alice, "r:2"), one(alice, "r:3", id=reserved[0])],
        now=T0,
    )
    ids = dict(Message.objects.values_list("idempotency_key", "pk"))
    assert (ids["r:1"], ids["r:3"]) == (reserved[1], reserved[0])
    # The default takes the same sequence, after the reserved ones.
    assert ids["r:2"] > reserved[1]
    assert sorted(o.message_id for o in told) == sorted(ids.values())


def test_bad_label_items_and_id_are_refused_naming_the_field(shop, make_profile, channels, told):
    alice = make_profile()
    for fields, field in (({"label": "x" * 65}, "label"), ({"items": [1]}, "items"), ({"id": 0}, "id")):
        with pytest.raises(ValueError, match=rf"messages\[0\]\.{field}"):
            messages_enqueue(project_id=shop.pk, messages=[one(alice, "bad", **fields)], now=T0)
    assert (Message.objects.count(), told) == (0, [])


def test_send_tells_sent_once_and_a_redelivered_send_task_tells_nothing(shop, make_profile, channels, told):
    message_id = messages_enqueue(project_id=shop.pk, messages=[one(make_profile(), "s:1", label="variant:1")],
                                  now=T0).queued_ids[0]  # fmt: skip
    told.clear()
    assert messages_send(message_ids=[message_id], now=T0).sent == 1
    assert kinds(told) == [(message_id, "sent", "")]
    assert (told[0].label, told[0].created_at) == ("variant:1", T0)
    told.clear()
    # The broker redelivers the same task: the row is no longer queued, nothing is claimed or told.
    assert messages_send(message_ids=[message_id], now=T0 + timedelta(seconds=5)).claimed == 0
    assert told == []


def test_a_permanent_error_tells_failed_with_its_reason(shop, make_profile, channels, told):
    message_id = messages_enqueue(project_id=shop.pk, messages=[one(make_profile(), "f:1")], now=T0).queued_ids[0]
    channels["email"].answer = lambda m: Result(m.message_id, error=PermanentError("nope", reason="no_address"))
    told.clear()
    messages_send(message_ids=[message_id], now=T0)
    assert kinds(told) == [(message_id, "failed", "no_address")]


def test_the_claim_tells_the_rows_it_ends_and_not_the_ones_queued_again(shop, make_profile, channels, told):
    unsubscribed = make_profile(email_subscribed=False)
    late = make_profile()
    throttled = [make_profile() for _ in range(2)]
    messages = [
        one(unsubscribed, "c:unsub"),
        one(late, "c:late", cutoff_at=T0 - timedelta(minutes=1)),
        *[one(p, f"c:throttled:{p.pk}", source="campaign:9") for p in throttled],
    ]
    result = messages_enqueue(project_id=shop.pk, messages=messages, throttle_per_minute=1, now=T0)
    ids = dict(Message.objects.values_list("idempotency_key", "pk"))
    told.clear()
    summary = messages_send(message_ids=result.queued_ids, now=T0)
    assert summary.sent == 1
    ends = sorted(kinds(told))
    # One of the two throttled rows is sent, the other queued for the next minute: told nothing.
    sent = [o.message_id for o in told if o.kind == "sent"]
    assert len(sent) == 1 and sent[0] in {ids[f"c:throttled:{p.pk}"] for p in throttled}
    assert ends == sorted(
        [
            (ids["c:unsub"], "skipped", "unsubscribed"),
            (ids["c:late"], "skipped", "cutoff_passed"),
            (sent[0], "sent", ""),
        ]
    )


def test_a_stale_claims_late_record_tells_nothing(shop, make_profile, channels, settings, told):
    settings.DELIVERY_CLAIM_TIMEOUT_SECONDS = 60
    message_id = messages_enqueue(project_id=shop.pk, messages=[one(make_profile(), "st:1")], now=T0).queued_ids[0]
    told.clear()
    calls = []

    def slow(message):
        calls.append(message.message_id)
        if len(calls) == 1:
            # While this worker calls the provider, its claim times out and another worker sends the message.
            messages_sweep(now=T0 + timedelta(seconds=61))
            messages_send(message_ids=[message_id], now=T0 + timedelta(seconds=62))
        return Result(message.message_id, provider_id=f"call-{len(calls)}")

    channels["email"].answer = slow
    messages_send(message_ids=[message_id], now=T0)
    # The second worker's record told `sent`; the first worker's late record changed nothing and told nothing.
    assert kinds(told) == [(message_id, "sent", "")]
    assert Message.objects.get(pk=message_id).provider_id == "call-2"


def test_the_sweeper_tells_failed_only_for_the_rows_it_ends(shop, make_profile, channels, settings, told):
    settings.DELIVERY_MAX_ATTEMPTS = 2
    settings.DELIVERY_CLAIM_TIMEOUT_SECONDS = 60
    message_id = messages_enqueue(project_id=shop.pk, messages=[one(make_profile(), "sw:1")], now=T0).queued_ids[0]
    told.clear()
    now = T0
    messages_claim(message_ids=[message_id], token="dies", now=now)
    now += timedelta(seconds=61)
    messages_sweep(now=now)  # attempt 1 of 2: queued again, nothing told
    assert told == []
    messages_claim(message_ids=[message_id], token="dies-again", now=now)
    now += timedelta(seconds=61)
    messages_sweep(now=now)
    assert kinds(told) == [(message_id, "failed", "retries_exhausted")]


def test_cancel_tells_skipped_cancelled_for_the_queued_rows_only(shop, make_profile, channels, told):
    alice, bob = make_profile(), make_profile()
    result = messages_enqueue(
        project_id=shop.pk,
        messages=[one(alice, "x:1", source="campaign:3"), one(bob, "x:2", source="campaign:3")],
        now=T0,
    )
    claimed_id = result.queued_ids[0]
    messages_claim(message_ids=[claimed_id], token="busy", now=T0)
    told.clear()
    assert messages_cancel(project_id=shop.pk, source="campaign:3", now=T0) == 1
    assert kinds(told) == [(result.queued_ids[1], "skipped", "cancelled")]
    told.clear()
    assert messages_cancel(project_id=shop.pk, source="campaign:3", now=T0) == 0
    assert told == []


def test_in_app_records_tell_created_and_sent_or_skipped_once(shop, make_profile, told):
    alice, bob = make_profile(), make_profile()
    [reserved] = message_ids_reserve(count=1)
    shown = MessageIn(profile_id=alice.pk, channel="in_app", idempotency_key="ia:1", content={"html": "<p>Hi</p>"},
                      label="variant:2", items=["P9"], id=reserved)  # fmt: skip
    held = MessageIn(profile_id=bob.pk, channel="in_app", idempotency_key="ia:2", label="control",
                     skip_reason="control")  # fmt: skip
    inserted = messages_record(project_id=shop.pk, messages=[shown, held], now=T0)
    assert inserted["ia:1"] == reserved
    assert kinds(told) == [
        (reserved, "created", ""),
        (reserved, "sent", ""),
        (inserted["ia:2"], "created", ""),
        (inserted["ia:2"], "skipped", "control"),
    ]
    assert (told[1].label, told[1].items, told[3].label) == ("variant:2", ("P9",), "control")
    told.clear()
    assert messages_record(project_id=shop.pk, messages=[shown, held], now=T0) == {}
    assert told == []


def test_a_listener_that_raises_rolls_back_the_record(shop, make_profile, channels):
    message_id = messages_enqueue(project_id=shop.pk, messages=[one(make_profile(), "rb:1")], now=T0).queued_ids[0]

    def broken(outcomes):
        if any(o.kind == "sent" for o in outcomes):
            raise RuntimeError("counters unavailable")

    outcome_hook_register(broken)
    try:
        with pytest.raises(RuntimeError):
            messages_send(message_ids=[message_id], now=T0)
    finally:
        outcome_hook_unregister(broken)
    # The sent state rolled back with the listener: the claim stays, the sweeper retries it.
    assert Message.objects.get(pk=message_id).state == "claimed"
