"""The delivery core against PostgreSQL: idempotent enqueue, the claim's rules
(each skip reason, quiet hours across time zones, caps, gap, throttle, cutoff),
provider errors (temporary: backoff then failed; permanent: failed with its
reason; dead push tokens cleared), and the sweeper."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from crm.models import Device, Profile
from delivery.channels.base import PermanentError, Result, TemporaryError
from delivery.models import ChannelSettings, DeliverySettings, Message
from delivery.services import MessageIn, messages_claim, messages_enqueue, messages_send, messages_sweep
from delivery.unsubscribe import unsubscribe_target

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)  # Tokyo 15:00, Los Angeles 23:00 (PDT)


def enqueue(profile: Profile, channel: str = "email", key: str | None = None, now: datetime = T0, **fields) -> int:
    """One message for `profile`; returns its id."""
    message = MessageIn(
        profile_id=profile.pk,
        channel=channel,
        idempotency_key=key or f"test:{profile.pk}:{channel}:{Message.objects.count()}",
        content=fields.pop("content", {"subject": "Hi", "text": "Hello"}),
        **fields,
    )
    result = messages_enqueue(project_id=profile.project_id, messages=[message], now=now)
    return (
        result.queued_ids[0] if result.queued_ids else Message.objects.get(idempotency_key=message.idempotency_key).pk
    )


def state(message_id: int) -> tuple[str, str]:
    m = Message.objects.get(pk=message_id)
    return m.state, m.skip_reason


# --- enqueue ------------------------------------------------------------------------


def test_enqueueing_the_same_keys_again_inserts_only_the_new_ones(shop, make_profile, channels):
    alice, bob = make_profile(), make_profile()
    first = [MessageIn(profile_id=p.pk, channel="email", idempotency_key=f"campaign:1:run:1:profile:{p.pk}:email",
                       source="campaign:1") for p in (alice, bob)]  # fmt: skip
    assert messages_enqueue(project_id=shop.pk, messages=first).created == 2
    again = [*first, MessageIn(profile_id=alice.pk, channel="push", idempotency_key="campaign:1:run:1:push")]
    result = messages_enqueue(project_id=shop.pk, messages=again)
    assert (result.created, result.duplicates, len(result.queued_ids)) == (1, 2, 1)
    assert sorted(Message.objects.values_list("idempotency_key", flat=True)) == sorted(
        [
            "campaign:1:run:1:push",
            f"campaign:1:run:1:profile:{alice.pk}:email",
            f"campaign:1:run:1:profile:{bob.pk}:email",
        ]
    )


def test_a_duplicate_key_within_one_call_is_stored_once(shop, make_profile, channels):
    alice = make_profile()
    twice = [MessageIn(profile_id=alice.pk, channel="email", idempotency_key="k1", content={"n": i}) for i in (1, 2)]
    result = messages_enqueue(project_id=shop.pk, messages=twice)
    assert (result.created, result.duplicates) == (1, 1)
    assert list(Message.objects.values_list("content", flat=True)) == [{"n": 1}]


def test_a_message_enqueued_as_a_skip_is_recorded_and_never_sent(shop, make_profile, channels):
    alice = make_profile()
    control = MessageIn(profile_id=alice.pk, channel="email", idempotency_key="c:1", skip_reason="control")
    broken = MessageIn(profile_id=alice.pk, channel="email", idempotency_key="c:2", skip_reason="template_error",
                       error="undefined variable 'usr'")  # fmt: skip
    result = messages_enqueue(project_id=shop.pk, messages=[control, broken])
    assert (result.created, result.queued_ids) == (2, [])
    ids = list(Message.objects.order_by("id").values_list("pk", flat=True))
    assert messages_send(message_ids=ids, now=T0).claimed == 0
    assert list(Message.objects.order_by("id").values_list("state", "skip_reason", "error")) == [
        ("skipped", "control", ""),
        ("skipped", "template_error", "undefined variable 'usr'"),
    ]
    assert channels["email"].calls == []


def test_another_projects_profile_is_refused_and_nothing_is_inserted(shop, make_profile, project_b, channels):
    mine, theirs = make_profile(), make_profile(project=project_b[0])
    messages = [MessageIn(profile_id=p.pk, channel="email", idempotency_key=f"k{p.pk}") for p in (mine, theirs)]
    with pytest.raises(ValueError, match=rf"profiles \[{theirs.pk}\] are not profiles of project {shop.pk}"):
        messages_enqueue(project_id=shop.pk, messages=messages)
    assert Message.objects.count() == 0


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("channel", "fax", r"messages\[0\]\.channel: 'fax' is not one of email, push, sms, webhook"),
        ("idempotency_key", "", r"messages\[0\]\.idempotency_key: must be 1 to 255 characters"),
        ("skip_reason", "bored", r"messages\[0\]\.skip_reason: 'bored' is not a skip reason"),
        ("quiet_hours_policy", "later", r"messages\[0\]\.quiet_hours_policy: 'later' is not discard or delay"),
    ],
)
def test_a_bad_message_is_refused_naming_its_field(shop, make_profile, channels, field, value, error):
    fields = {"profile_id": make_profile().pk, "channel": "email", "idempotency_key": "k", field: value}
    with pytest.raises(ValueError, match=error):
        messages_enqueue(project_id=shop.pk, messages=[MessageIn(**fields)])
    assert Message.objects.count() == 0


def test_send_tasks_go_after_commit_in_batches_of_the_channels_max_batch(
    shop, make_profile, channels, monkeypatch, django_capture_on_commit_callbacks
):
    from delivery.tasks import messages_send_task

    dispatched: list[tuple[list[int], float | None]] = []
    monkeypatch.setattr(
        messages_send_task, "apply_async", lambda args, countdown=None: dispatched.append((args[0], countdown))
    )
    channels["email"].max_batch = 2
    profiles = [make_profile() for _ in range(5)]
    later = MessageIn(
        profile_id=profiles[0].pk, channel="email", idempotency_key="later", not_before=T0 + timedelta(hours=1)
    )
    messages = [MessageIn(profile_id=p.pk, channel="email", idempotency_key=f"k{p.pk}") for p in profiles]
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        result = messages_enqueue(project_id=shop.pk, messages=[*messages, later], now=T0)
        assert dispatched == []  # nothing before the commit
    assert len(callbacks) == 1
    ids = sorted(result.queued_ids)[:5]
    assert dispatched == [(ids[0:2], None), (ids[2:4], None), (ids[4:5], None)]
    # The delayed one waits for the sweeper: no task is pending for it.
    assert Message.objects.get(idempotency_key="later").dispatched_at is None


# --- sending and the rules ---------------------------------------------------------------


def test_a_sent_message_records_the_provider_id_and_the_address_resolved_at_send(shop, make_profile, channels):
    alice = make_profile(email="old@example.com")
    message_id = enqueue(alice, key="campaign:7:run:1:profile:1:email")
    Profile.objects.filter(pk=alice.pk).update(email="new@example.com")
    summary = messages_send(message_ids=[message_id], now=T0)
    assert (summary.claimed, summary.sent) == (1, 1)
    m = Message.objects.get(pk=message_id)
    assert (m.state, m.to, m.provider_id, m.attempts, m.skip_reason) == (
        "sent",
        "new@example.com",
        f"p-{message_id}",
        1,
        "",
    )
    assert m.sent_at is not None and m.claimed_at == T0
    [sent] = channels["email"].sent
    content = dict(sent.content)
    # A marketing email gets the profile's signed unsubscribe link (tests/delivery/test_unsubscribe.py).
    link = unsubscribe_target(content.pop("unsubscribe_url").rsplit("/u/", 1)[1])
    assert (link.profile_id, link.channel) == (alice.pk, "email")
    assert (sent.message_id, sent.to, sent.idempotency_key, content) == (
        message_id, "new@example.com", "campaign:7:run:1:profile:1:email", {"subject": "Hi", "text": "Hello"},
    )  # fmt: skip


def test_a_message_sent_once_is_not_sent_again_by_a_second_task(shop, make_profile, channels):
    message_id = enqueue(make_profile())
    messages_send(message_ids=[message_id], now=T0)
    assert messages_send(message_ids=[message_id], now=T0 + timedelta(minutes=1)).claimed == 0
    assert len(channels["email"].sent) == 1


def test_a_message_not_yet_due_is_not_claimed(shop, make_profile, channels):
    message_id = enqueue(make_profile(), not_before=T0 + timedelta(minutes=5))
    assert messages_send(message_ids=[message_id], now=T0).claimed == 0
    assert state(message_id) == ("queued", "")
    assert messages_send(message_ids=[message_id], now=T0 + timedelta(minutes=5)).sent == 1


def test_push_goes_to_the_token_of_the_most_recently_seen_device(shop, make_profile, channels):
    alice = make_profile()
    Device.objects.create(
        project=shop, profile=alice, device_id="old", push_token="tok-old", last_seen=T0 - timedelta(days=3)
    )
    Device.objects.create(
        project=shop, profile=alice, device_id="new", push_token="tok-new", last_seen=T0 - timedelta(days=1)
    )
    Device.objects.create(project=shop, profile=alice, device_id="none", push_token="", last_seen=T0)
    message_id = enqueue(alice, channel="push", content={"title": "T", "body": "B"})
    messages_send(message_ids=[message_id], now=T0)
    assert [m.to for m in channels["push"].sent] == ["tok-new"]


def test_an_unsubscribed_user_gets_no_marketing_message_but_a_transactional_one(shop, make_profile, channels):
    alice = make_profile(email_subscribed=False, sms_subscribed=True, phone="+15550001")
    marketing = enqueue(alice)
    transactional = enqueue(alice, marketing=False)
    other_channel = enqueue(alice, channel="sms")
    messages_send(message_ids=[marketing, transactional, other_channel], now=T0)
    assert [state(i) for i in (marketing, transactional, other_channel)] == [
        ("skipped", "unsubscribed"), ("sent", ""), ("sent", ""),
    ]  # fmt: skip
    assert Message.objects.get(pk=marketing).attempts == 0


def test_no_address_or_token_is_a_skip_with_its_reason(shop, make_profile, channels):
    alice = make_profile(email="", phone="")
    ids = [enqueue(alice, channel=c) for c in ("email", "sms", "push", "webhook")]
    with_url = enqueue(alice, channel="webhook", content={"body": {"a": 1}, "url": "http://hooks.example/x"})
    messages_send(message_ids=[*ids, with_url], now=T0)
    assert [state(i) for i in ids] == [("skipped", "no_address")] * 4
    assert state(with_url) == ("sent", "")
    assert [m.to for m in channels["webhook"].sent] == ["http://hooks.example/x"]


def test_a_message_past_its_cutoff_is_skipped(shop, make_profile, channels):
    alice = make_profile()
    late = enqueue(alice, cutoff_at=T0 - timedelta(seconds=1))
    in_time = enqueue(alice, cutoff_at=T0 + timedelta(hours=1))
    messages_send(message_ids=[late, in_time], now=T0)
    assert (state(late), state(in_time)) == (("skipped", "cutoff_passed"), ("sent", ""))


def test_a_channel_without_enabled_settings_fails_the_message_with_its_reason(shop, make_profile, channels):
    ChannelSettings.objects.filter(project=shop, channel="sms").update(enabled=False)
    message_id = enqueue(make_profile(phone="+15550002"), channel="sms")
    messages_send(message_ids=[message_id], now=T0)
    assert state(message_id) == ("failed", "channel_not_configured")
    assert channels["sms"].calls == []


# --- quiet hours ------------------------------------------------------------------------------


@pytest.fixture
def quiet_nights(shop):
    return DeliverySettings.objects.create(project=shop, quiet_hours_start=time(22), quiet_hours_end=time(8))


def test_quiet_hours_discard_in_the_users_own_time_zone(shop, make_profile, channels, quiet_nights):
    tokyo = make_profile(timezone="Asia/Tokyo")  # 15:00 there
    los_angeles = make_profile(timezone="America/Los_Angeles")  # 23:00 there
    ids = [enqueue(p, quiet_hours_policy="discard") for p in (tokyo, los_angeles)]
    messages_send(message_ids=ids, now=T0)
    assert [state(i) for i in ids] == [("sent", ""), ("skipped", "quiet_hours")]


def test_quiet_hours_delay_until_they_end_locally_then_send(shop, make_profile, channels, quiet_nights):
    tokyo = make_profile(timezone="Asia/Tokyo")
    los_angeles = make_profile(timezone="America/Los_Angeles")
    ids = [enqueue(p) for p in (tokyo, los_angeles)]  # the project's policy: delay
    messages_send(message_ids=ids, now=T0)
    delayed = Message.objects.get(pk=ids[1])
    # 08:00 in Los Angeles (PDT, UTC-7) on 1 June is 15:00 UTC.
    assert (delayed.state, delayed.not_before, delayed.attempts, delayed.dispatched_at) == (
        "queued", datetime(2026, 6, 1, 15, 0, tzinfo=UTC), 0, None,
    )  # fmt: skip
    assert messages_send(message_ids=[ids[1]], now=datetime(2026, 6, 1, 14, 59, tzinfo=UTC)).claimed == 0
    assert messages_send(message_ids=[ids[1]], now=datetime(2026, 6, 1, 15, 0, tzinfo=UTC)).sent == 1
    assert [m.message_id for m in channels["email"].sent] == ids


def test_quiet_hours_use_the_projects_time_zone_when_the_users_is_unknown(make_project, channels):
    project, _ = make_project("LA shop", "America/Los_Angeles")
    ChannelSettings.objects.create(project=project, channel="email", settings={"api_key": "k"})
    DeliverySettings.objects.create(project=project, quiet_hours_start=time(22), quiet_hours_end=time(8))
    blank = Profile.objects.create(project=project, email="a@x.io", timezone="")
    bogus = Profile.objects.create(project=project, email="b@x.io", timezone="Mars/Olympus_Mons")
    tokyo = Profile.objects.create(project=project, email="c@x.io", timezone="Asia/Tokyo")
    ids = [enqueue(p, quiet_hours_policy="discard") for p in (blank, bogus, tokyo)]
    messages_send(message_ids=ids, now=T0)
    assert [state(i) for i in ids] == [("skipped", "quiet_hours"), ("skipped", "quiet_hours"), ("sent", "")]


def test_quiet_hours_do_not_hold_transactional_messages(shop, make_profile, channels, quiet_nights):
    message_id = enqueue(make_profile(timezone="America/Los_Angeles"), marketing=False)
    messages_send(message_ids=[message_id], now=T0)
    assert state(message_id) == ("sent", "")


# --- caps, gap, throttle ------------------------------------------------------------------------


def test_a_frequency_cap_counts_across_sources_and_frees_after_its_window(shop, make_profile, channels):
    DeliverySettings.objects.create(project=shop, caps={"email": [{"max": 2, "days": 1}]})
    alice = make_profile()
    sent = [enqueue(alice, source=f"campaign:{n}") for n in (1, 2)]
    for n, message_id in enumerate(sent):
        messages_send(message_ids=[message_id], now=T0 + timedelta(hours=n))
    third = enqueue(alice, source="campaign:3")
    messages_send(message_ids=[third], now=T0 + timedelta(hours=3))
    push = enqueue(alice, channel="push", source="campaign:3")  # another channel: its own caps (none)
    Device.objects.create(project=shop, profile=alice, device_id="d", push_token="tok")
    messages_send(message_ids=[push], now=T0 + timedelta(hours=3))
    next_day = enqueue(alice, source="campaign:4")
    messages_send(message_ids=[next_day], now=T0 + timedelta(hours=24, minutes=1))
    assert [state(i) for i in [*sent, third, push, next_day]] == [
        ("sent", ""), ("sent", ""), ("skipped", "capped"), ("sent", ""), ("sent", ""),
    ]  # fmt: skip


def test_a_cap_counts_the_messages_of_one_batch(shop, make_profile, channels):
    DeliverySettings.objects.create(project=shop, caps={"email": [{"max": 1, "hours": 24}]})
    alice, bob = make_profile(), make_profile()
    ids = [enqueue(alice, source="a"), enqueue(alice, source="b"), enqueue(bob, source="a")]
    messages_send(message_ids=ids, now=T0)
    assert [state(i) for i in ids] == [("sent", ""), ("skipped", "capped"), ("sent", "")]


def test_the_minimum_gap_skips_a_message_too_soon_after_the_last(shop, make_profile, channels):
    DeliverySettings.objects.create(project=shop, min_gap_seconds=3600)
    alice = make_profile()
    first, soon, later = enqueue(alice), enqueue(alice), enqueue(alice)
    messages_send(message_ids=[first], now=T0)
    messages_send(message_ids=[soon], now=T0 + timedelta(minutes=30))
    messages_send(message_ids=[later], now=T0 + timedelta(minutes=61))
    assert [state(i) for i in (first, soon, later)] == [("sent", ""), ("skipped", "capped"), ("sent", "")]


def test_the_throttle_sends_at_most_n_a_minute_per_source_and_spreads_the_rest(shop, make_profile, channels):
    profiles = [make_profile() for _ in range(5)]
    messages = [
        MessageIn(profile_id=p.pk, channel="email", idempotency_key=f"t{p.pk}", source="campaign:9") for p in profiles
    ]
    ids = messages_enqueue(project_id=shop.pk, messages=messages, throttle_per_minute=2, now=T0).queued_ids
    other = enqueue(profiles[0], source="campaign:10")  # another source: not throttled by campaign:9
    assert messages_send(message_ids=[*ids, other], now=T0).sent == 3
    rows = {m.pk: m for m in Message.objects.filter(pk__in=ids)}
    assert [rows[i].state for i in ids] == ["sent", "sent", "queued", "queued", "queued"]
    assert [rows[i].not_before for i in ids[2:]] == [T0 + timedelta(minutes=1)] * 2 + [T0 + timedelta(minutes=2)]
    assert [rows[i].attempts for i in ids] == [1, 1, 0, 0, 0]
    # Within the same minute nothing more of the source goes.
    assert messages_send(message_ids=ids, now=T0 + timedelta(seconds=59)).sent == 0
    assert messages_send(message_ids=ids, now=T0 + timedelta(minutes=1)).sent == 2
    assert messages_send(message_ids=ids, now=T0 + timedelta(minutes=2)).sent == 1
    assert Message.objects.filter(pk__in=ids, state="sent").count() == 5


# --- provider errors -------------------------------------------------------------------------


def test_a_temporary_error_retries_with_backoff_then_fails_after_the_max_attempts(
    shop, make_profile, channels, settings
):
    settings.DELIVERY_MAX_ATTEMPTS = 3
    settings.DELIVERY_RETRY_BASE_SECONDS = 10
    settings.DELIVERY_RETRY_MAX_SECONDS = 3600
    channels["email"].answer = lambda m: Result(
        message_id=m.message_id, error=TemporaryError("503 Service Unavailable")
    )
    message_id = enqueue(make_profile())
    now = T0
    delays = []
    for attempt in (1, 2):
        summary = messages_send(message_ids=[message_id], now=now)
        assert (summary.sent, summary.retrying, summary.retry_ids) == (0, 1, [message_id])
        m = Message.objects.get(pk=message_id)
        assert (m.state, m.attempts, m.error, m.dispatched_at) == (
            "queued",
            attempt,
            "503 Service Unavailable",
            m.not_before,
        )
        delays.append((m.not_before - m.claimed_at).total_seconds())
        now = m.not_before
    # Backoff with jitter: within [base·2^(n-1)/2, base·2^(n-1)] (plus the call's own time).
    assert 5 <= delays[0] <= 11 and 10 <= delays[1] <= 21
    summary = messages_send(message_ids=[message_id], now=now)
    assert (summary.failed, summary.retrying) == (1, 0)
    m = Message.objects.get(pk=message_id)
    assert (m.state, m.skip_reason, m.attempts) == ("failed", "retries_exhausted", 3)
    assert m.error == "503 Service Unavailable (attempt 3 of 3)"
    assert len(channels["email"].calls) == 3


def test_a_providers_retry_after_is_the_least_delay(shop, make_profile, channels, settings):
    settings.DELIVERY_RETRY_BASE_SECONDS = 10
    channels["email"].answer = lambda m: Result(message_id=m.message_id, error=TemporaryError("429", retry_after=120))
    message_id = enqueue(make_profile())
    messages_send(message_ids=[message_id], now=T0)
    m = Message.objects.get(pk=message_id)
    assert 120 <= (m.not_before - m.claimed_at).total_seconds() <= 121


def test_a_channel_that_raises_makes_every_message_of_the_batch_a_temporary_error(shop, make_profile, channels):
    def boom(message):
        raise RuntimeError("connection reset")

    channels["email"].answer = boom
    ids = [enqueue(make_profile()) for _ in range(2)]
    summary = messages_send(message_ids=ids, now=T0)
    assert (summary.retrying, summary.sent) == (2, 0)
    assert (
        list(Message.objects.filter(pk__in=ids).values_list("state", "error"))
        == [("queued", "channel error: RuntimeError('connection reset')")] * 2
    )


def test_a_permanent_error_fails_the_message_with_its_reason(shop, make_profile, channels):
    answers = {
        0: PermanentError("400 invalid recipient"),
        1: PermanentError("bad token", reason="invalid_token"),
        2: PermanentError("odd", reason="not-a-reason"),
    }
    ids = [enqueue(make_profile()) for _ in range(3)]
    channels["email"].answer = lambda m: Result(message_id=m.message_id, error=answers[ids.index(m.message_id)])
    summary = messages_send(message_ids=ids, now=T0)
    assert summary.failed == 3
    assert [Message.objects.values_list("state", "skip_reason", "error").get(pk=i) for i in ids] == [
        ("failed", "provider_rejected", "400 invalid recipient"),
        ("failed", "invalid_token", "bad token"),
        ("failed", "provider_rejected", "odd"),
    ]
    assert len(channels["email"].calls) == 1


def test_a_dead_push_token_is_cleared_from_the_device(shop, make_profile, channels):
    alice, bob = make_profile(), make_profile()
    Device.objects.create(project=shop, profile=alice, device_id="a1", push_token="tok-dead")
    Device.objects.create(project=shop, profile=bob, device_id="b1", push_token="tok-dead")  # same text, another user
    channels["push"].answer = lambda m: Result(
        message_id=m.message_id, error=PermanentError("UNREGISTERED", reason="invalid_token"), clear_token=True
    )
    message_id = enqueue(alice, channel="push")
    summary = messages_send(message_ids=[message_id], now=T0)
    assert summary.tokens_cleared == 1
    assert dict(Device.objects.values_list("device_id", "push_token")) == {"a1": "", "b1": "tok-dead"}
    assert state(message_id) == ("failed", "invalid_token")
    # The next message to alice has no token left: skipped, not sent to the dead one.
    again = enqueue(alice, channel="push")
    messages_send(message_ids=[again], now=T0 + timedelta(minutes=1))
    assert state(again) == ("skipped", "no_address")


# --- sweeper ------------------------------------------------------------------------------------


def test_the_sweeper_requeues_stale_claims_and_the_message_is_then_sent(
    shop, make_profile, channels, settings, monkeypatch, django_capture_on_commit_callbacks
):
    from delivery.tasks import messages_send_task

    dispatched: list[list[int]] = []
    monkeypatch.setattr(messages_send_task, "apply_async", lambda args, countdown=None: dispatched.append(args[0]))
    settings.DELIVERY_CLAIM_TIMEOUT_SECONDS = 60
    stale, fresh = enqueue(make_profile()), enqueue(make_profile())
    # A worker claimed them and died before calling the provider (or before recording).
    assert len(messages_claim(message_ids=[stale], token="dead-worker", now=T0)) == 1
    assert len(messages_claim(message_ids=[fresh], token="live-worker", now=T0 + timedelta(seconds=50))) == 1
    with django_capture_on_commit_callbacks(execute=True):
        released, dispatched_rows = messages_sweep(now=T0 + timedelta(seconds=61))
    assert (released, dispatched_rows) == (1, 1)
    assert dispatched == [[stale]]
    assert (state(stale), state(fresh)) == (("queued", ""), ("claimed", ""))
    assert messages_send(message_ids=[stale], now=T0 + timedelta(seconds=62)).sent == 1
    m = Message.objects.get(pk=stale)
    assert (m.state, m.attempts, m.claimed_by != "dead-worker") == ("sent", 2, True)


def test_the_record_of_a_claim_the_sweeper_took_back_is_ignored(shop, make_profile, channels, settings):
    settings.DELIVERY_CLAIM_TIMEOUT_SECONDS = 60
    message_id = enqueue(make_profile())
    calls = []

    def slow(message):
        # While this worker "calls the provider", its claim times out and another sends the message.
        calls.append(message.message_id)
        if len(calls) == 1:
            messages_sweep(now=T0 + timedelta(seconds=61))
            messages_send(message_ids=[message_id], now=T0 + timedelta(seconds=62))
            return Result(message_id=message.message_id, provider_id="from-the-slow-worker")
        return Result(message_id=message.message_id, provider_id="from-the-second-worker")

    channels["email"].answer = slow
    messages_send(message_ids=[message_id], now=T0)
    m = Message.objects.get(pk=message_id)
    assert (m.state, m.provider_id, m.attempts) == ("sent", "from-the-second-worker", 2)
    assert len(channels["email"].calls) == 2


def test_a_message_whose_every_claim_died_fails_after_the_max_attempts(shop, make_profile, channels, settings):
    settings.DELIVERY_MAX_ATTEMPTS = 2
    settings.DELIVERY_CLAIM_TIMEOUT_SECONDS = 60
    message_id = enqueue(make_profile())
    now = T0
    for _ in range(2):
        messages_claim(message_ids=[message_id], token="dies", now=now)
        now += timedelta(seconds=61)
        messages_sweep(now=now)
    assert state(message_id) == ("failed", "retries_exhausted")


def test_the_sweeper_dispatches_due_delayed_rows_once_until_the_dispatch_times_out(
    shop, make_profile, channels, settings, monkeypatch, django_capture_on_commit_callbacks
):
    from delivery.tasks import messages_send_task

    dispatched: list[list[int]] = []
    monkeypatch.setattr(messages_send_task, "apply_async", lambda args, countdown=None: dispatched.append(args[0]))
    settings.DELIVERY_DISPATCH_TIMEOUT_SECONDS = 600
    later = enqueue(make_profile(), not_before=T0 + timedelta(minutes=10))
    with django_capture_on_commit_callbacks(execute=True):
        assert messages_sweep(now=T0 + timedelta(minutes=9)) == (0, 0)
        assert messages_sweep(now=T0 + timedelta(minutes=10)) == (0, 1)
        assert messages_sweep(now=T0 + timedelta(minutes=15)) == (0, 0)  # its task is pending
        assert messages_sweep(now=T0 + timedelta(minutes=21)) == (0, 1)  # that task was lost
    assert dispatched == [[later], [later]]


def test_the_tasks_go_to_the_sends_queue_and_the_sweeper_is_on_the_beat(settings):
    from config.celery import app
    from delivery.tasks import messages_send_task, messages_sweep_task

    assert (messages_send_task.name, messages_sweep_task.name) == ("delivery.send_batch", "delivery.sweep")
    router = app.amqp.router
    assert router.route({}, "delivery.send_batch")["queue"].name == "sends"
    assert router.route({}, "delivery.sweep")["queue"].name == "sends"
    entry = settings.CELERY_BEAT_SCHEDULE["delivery: sweeper"]
    assert (entry["task"], entry["schedule"], entry["options"]) == ("delivery.sweep", 15.0, {"queue": "sends"})
