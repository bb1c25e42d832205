"""Real `sends` worker processes (Celery prefork, RabbitMQ) through a provider
outage: the local SendGrid and FCM answer every request with a 500, or hang
past the channel's timeout, for a few seconds, then recover. Every email and
push reaches the provider exactly once (the outbox by message id), after
retries spaced by the backoff; none is lost. A permanent refusal (SendGrid's
400 naming the address: no_address; FCM's invalid token) is recorded and never tried again.

The outage is localproviders.faults, switched in this process: the local server
runs here on a live server thread, the workers are other processes."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import pytest
from django.db import transaction

from crm.models import Device, Profile
from delivery.models import ChannelSettings, Message
from delivery.services import MessageIn, messages_enqueue
from localproviders.faults import fault_clear, fault_set, refusals
from localproviders.models import OutboxMessage
from tests.localproviders.server import SLOW_MS, TIMEOUT_S

pytestmark = [pytest.mark.broker, pytest.mark.amqp]

COUNT = 25  # per channel
FAULT_SECONDS = 3.0
# Backoff of the workers: about base·2^(n-1) after the n-th attempt, with full
# jitter down to half of it (delivery.services.rules.retry_delay_seconds).
WORKER_ENV = {"DELIVERY_RETRY_BASE_SECONDS": "1", "DELIVERY_RETRY_MAX_SECONDS": "8", "DELIVERY_MAX_ATTEMPTS": "10"}


def _wait(condition, seconds: float, what) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what()
        time.sleep(0.2)


@pytest.fixture
def outage():  # noqa: ANN201
    fault_clear()
    yield fault_set
    fault_clear()


@pytest.mark.parametrize("mode", ["500", "timeout"])
def test_an_outage_then_recovery_sends_every_message_once_with_backoff_and_permanent_errors_stop(
    mode, transactional_db, project_a, local_server, channel_settings, celery_worker_process, outage, tmp_path
):
    project = project_a[0]
    for channel in ("email", "push"):
        # A timeout shorter than the hang of the "timeout" fault (SLOW_MS).
        ChannelSettings.objects.create(
            project=project, channel=channel, settings={**channel_settings[channel], "timeout_s": TIMEOUT_S}
        )
    assert TIMEOUT_S * 1000 < SLOW_MS
    profiles = Profile.objects.bulk_create(
        [Profile(project=project, user_id=f"o{i}", email=f"o{i}@example.com") for i in range(COUNT)]
        + [Profile(project=project, user_id="rejected", email="reject-me@example.com")]
    )
    Device.objects.bulk_create(
        [Device(project=project, profile=p, device_id=f"d-{p.user_id}", platform="android",
                push_token=f"tok-{p.user_id}-abcdefghijklmnopqrstuvwxyz") for p in profiles[:COUNT]]
        + [Device(project=project, profile=profiles[COUNT], device_id="d-rejected", platform="android",
                  push_token="invalid-token-abcdefghijklmnopqrstuvwxyz")]
    )  # fmt: skip
    celery_worker_process(queues=["sends"], concurrency=2, extra_env=WORKER_ENV, log_path=str(tmp_path / "w.log"))

    outage(mode=mode, providers=("sendgrid", "fcm"), seconds=FAULT_SECONDS)
    with transaction.atomic():
        messages_enqueue(
            project_id=project.pk,
            messages=[
                MessageIn(profile_id=p.pk, channel=channel, idempotency_key=f"outage:{p.pk}:{channel}",
                          source="outage", content=content)
                for p in profiles[:COUNT]
                for channel, content in (("email", {"subject": "Hi", "text": "Picks", "html": "<p>Picks</p>"}),
                                         ("push", {"title": "Hi", "body": "Picks"}))
            ],
        )  # fmt: skip
    sent = Message.objects.filter(source="outage", state="sent")
    _wait(
        lambda: sent.count() == 2 * COUNT,
        90,
        lambda: f"not every message was sent: {Counter(Message.objects.values_list('state', flat=True))}",
    )

    messages = {str(m.pk): m for m in Message.objects.filter(source="outage")}
    outbox = list(
        OutboxMessage.objects.filter(provider__in=["sendgrid", "fcm"]).values_list("message_key", "received_at")
    )
    # Exactly once at the provider: every message, none twice.
    assert sorted(key for key, _ in outbox) == sorted(messages)
    tried: dict[str, list[float]] = defaultdict(list)
    for refusal in refusals():
        assert refusal.mode == mode
        for key in refusal.keys:
            tried[key].append(refusal.at)
    assert set(tried) == set(messages), "every message met the outage"
    for key, received_at in outbox:
        message = messages[key]
        # One claim per provider call: the refused ones and the one that was accepted.
        assert message.attempts == len(tried[key]) + 1, key
        times = [*sorted(tried[key]), received_at.timestamp()]
        gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
        # The n-th retry waited at least half of base·2^(n-1) (less 50 ms of clock slack).
        assert all(gap >= 0.5 * 2**n - 0.05 for n, gap in enumerate(gaps)), (key, gaps)
        # Backoff, not a retry loop: within the outage's 3 s, at most 3 refused attempts.
        assert len(tried[key]) <= 3, (key, len(tried[key]))
        assert (message.state, message.skip_reason, message.error) == ("sent", "", "")

    # After the recovery: permanent refusals are recorded, never retried.
    with transaction.atomic():
        messages_enqueue(
            project_id=project.pk,
            messages=[
                MessageIn(profile_id=profiles[COUNT].pk, channel="email", idempotency_key="outage:rejected:email",
                          source="permanent", content={"subject": "Hi", "text": "Picks"}),
                MessageIn(profile_id=profiles[COUNT].pk, channel="push", idempotency_key="outage:rejected:push",
                          source="permanent", content={"title": "Hi", "body": "Picks"}),
            ],
        )  # fmt: skip
    failed = Message.objects.filter(source="permanent", state="failed")
    _wait(lambda: failed.count() == 2, 30, lambda: list(Message.objects.filter(source="permanent").values()))
    time.sleep(2.5)  # longer than a first retry's backoff (0.5 to 1 s): a retry would have claimed them again
    permanent = Message.objects.filter(source="permanent")
    assert sorted(permanent.values_list("channel", "state", "skip_reason", "attempts")) == [
        ("email", "failed", "no_address", 1),  # SendGrid's 400 naming personalizations.0.to.0.email
        ("push", "failed", "invalid_token", 1),
    ]
    dead = ["reject-me@example.com", "invalid-token-abcdefghijklmnopqrstuvwxyz"]
    assert not OutboxMessage.objects.filter(recipient__in=dead).exists()
    # The dead token was cleared from the device (FCM's INVALID_ARGUMENT on the registration token).
    assert Device.objects.get(device_id="d-rejected").push_token == ""
    assert OutboxMessage.objects.count() == 2 * COUNT
