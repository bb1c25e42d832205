"""messages_enqueue(send_now=True), the campaigns' chunk path: due messages are
inserted already claimed, the claim's rules applied in the insert's
transaction, and sent by the caller's process once it commits; no claim UPDATE,
no send task. A process that dies after the commit leaves claimed rows that the
sweeper hands back, each then sent once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from delivery.models import DeliverySettings, Message
from delivery.services import MessageIn, messages_enqueue, messages_send, messages_sweep
from tests.delivery.test_send import T0

pytestmark = pytest.mark.django_db


@pytest.fixture
def dispatched(monkeypatch) -> list[list[int]]:
    from delivery.tasks import messages_send_task

    tasks: list[list[int]] = []
    monkeypatch.setattr(messages_send_task, "apply_async", lambda args, countdown=None: tasks.append(args[0]))
    return tasks


def one(profile, key: str, **fields) -> MessageIn:
    fields.setdefault("content", {"subject": "Hi", "text": "Hello"})
    return MessageIn(profile_id=profile.pk, channel=fields.pop("channel", "email"), idempotency_key=key, **fields)


def row(key: str) -> tuple:
    m = Message.objects.get(idempotency_key=key)
    return m.state, m.skip_reason, m.attempts, m.claimed_at, bool(m.claimed_by)


def test_due_messages_are_inserted_claimed_with_the_rules_applied_and_sent_after_commit(
    shop, make_profile, channels, told, dispatched, django_capture_on_commit_callbacks
):
    alice, bob, carol, dave = (
        make_profile(),
        make_profile(email_subscribed=False),
        make_profile(email=""),
        make_profile(),
    )
    messages = [
        one(alice, "k:alice"),
        one(bob, "k:bob"),
        one(carol, "k:carol"),
        one(dave, "k:control", skip_reason="control"),
        one(dave, "k:later", not_before=T0 + timedelta(hours=1)),
    ]
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with CaptureQueriesContext(connection) as queries:
            result = messages_enqueue(project_id=shop.pk, messages=messages, now=T0, send_now=True)
        # Nothing is sent before the commit; the rules have ended what they rule out.
        assert channels["email"].calls == []
        assert row("k:alice") == ("claimed", "", 1, T0, True)
        assert row("k:bob") == ("skipped", "unsubscribed", 0, T0, True)
        assert row("k:carol") == ("skipped", "no_address", 0, T0, True)
        assert row("k:control") == ("skipped", "control", 0, None, False)
        assert row("k:later") == ("queued", "", 0, None, False)
    assert len(callbacks) == 1
    # Inserted claimed: the claim's conditional UPDATE ... FOR UPDATE SKIP LOCKED never ran.
    assert not [q for q in queries.captured_queries if "FOR UPDATE SKIP LOCKED" in q["sql"]]
    alice_row = Message.objects.get(idempotency_key="k:alice")
    assert (result.created, result.duplicates, result.claimed, result.queued_ids) == (
        5, 0, 1, [Message.objects.get(idempotency_key="k:later").pk],
    )  # fmt: skip
    assert [(m.message_id, m.to) for m in channels["email"].sent] == [(alice_row.pk, alice.email)]
    assert (alice_row.state, alice_row.provider_id, alice_row.to, alice_row.attempts) == (
        "sent", f"p-{alice_row.pk}", alice.email, 1,
    )  # fmt: skip
    # No send task: the due one was sent here, the later one waits for the sweeper.
    assert dispatched == []
    assert Message.objects.get(idempotency_key="k:later").dispatched_at is None
    ids = {k: Message.objects.get(idempotency_key=k).pk for k in ("k:alice", "k:bob", "k:carol", "k:control")}
    assert sorted((o.message_id, o.kind, o.reason) for o in told if o.kind != "created") == sorted(
        [
            (ids["k:alice"], "sent", ""),
            (ids["k:bob"], "skipped", "unsubscribed"),
            (ids["k:carol"], "skipped", "no_address"),
            (ids["k:control"], "skipped", "control"),
        ]
    )
    assert len([o for o in told if o.kind == "created"]) == 5


def test_a_key_enqueued_before_is_neither_claimed_nor_sent_again(
    shop, make_profile, channels, dispatched, django_capture_on_commit_callbacks
):
    alice, bob = make_profile(), make_profile()
    first = messages_enqueue(project_id=shop.pk, messages=[one(alice, "k:a")], now=T0)
    with django_capture_on_commit_callbacks(execute=True):
        again = messages_enqueue(
            project_id=shop.pk, messages=[one(alice, "k:a"), one(bob, "k:b"), one(bob, "k:b")], now=T0, send_now=True
        )
    assert (again.created, again.duplicates, again.claimed) == (1, 2, 1)
    assert [m.to for m in channels["email"].sent] == [bob.email]
    # The one enqueued before is left to its own send task.
    assert Message.objects.get(pk=first.queued_ids[0]).state == "queued"


def test_caps_count_the_messages_sent_before_when_the_rows_are_inserted_claimed(
    shop, make_profile, channels, django_capture_on_commit_callbacks
):
    DeliverySettings.objects.create(project=shop, caps={"email": [{"max": 2, "days": 1}]})
    alice = make_profile()
    earlier = messages_enqueue(project_id=shop.pk, messages=[one(alice, "k:1")], now=T0 - timedelta(hours=2))
    assert messages_send(message_ids=earlier.queued_ids, now=T0 - timedelta(hours=2)).sent == 1
    with django_capture_on_commit_callbacks(execute=True):
        messages_enqueue(project_id=shop.pk, messages=[one(alice, "k:2"), one(alice, "k:3")], now=T0, send_now=True)
    assert [row(k)[:2] for k in ("k:1", "k:2", "k:3")] == [("sent", ""), ("sent", ""), ("skipped", "capped")]
    assert len(channels["email"].sent) == 2


def test_rows_of_a_process_that_died_after_the_commit_are_swept_and_sent_once(
    shop, make_profile, channels, dispatched, django_capture_on_commit_callbacks, settings
):
    profiles = [make_profile() for _ in range(3)]
    # The commit happens, the send after it never does (the process was killed).
    with django_capture_on_commit_callbacks(execute=False):
        messages_enqueue(project_id=shop.pk, messages=[one(p, f"k:{p.pk}") for p in profiles], now=T0, send_now=True)
    assert sorted(Message.objects.values_list("state", flat=True)) == ["claimed"] * 3
    assert messages_sweep(now=T0 + timedelta(seconds=settings.DELIVERY_CLAIM_TIMEOUT_SECONDS - 1)) == (0, 0)
    with django_capture_on_commit_callbacks(execute=True):
        released, due = messages_sweep(now=T0 + timedelta(seconds=settings.DELIVERY_CLAIM_TIMEOUT_SECONDS + 1))
    assert (released, due) == (3, 3)
    ids = sorted(Message.objects.values_list("pk", flat=True))
    assert dispatched == [ids]
    summary = messages_send(message_ids=ids, now=T0 + timedelta(seconds=settings.DELIVERY_CLAIM_TIMEOUT_SECONDS + 2))
    assert (summary.claimed, summary.sent) == (3, 3)
    assert sorted(m.to for m in channels["email"].sent) == sorted(p.email for p in profiles)
    # Each was claimed twice (at insert, then by the send task): its second attempt.
    assert sorted(Message.objects.values_list("state", "attempts")) == [("sent", 2)] * 3
