"""A real `sends` worker (Celery, --pool solo, RabbitMQ) killed with SIGKILL in
the middle of 300 webhook messages to the local provider server, then started
again: no message is lost, and the receiver sees each webhook-id once, bar at
most the one that was in flight at the kill.

Why "bar one": delivery is at least once at the provider call
(delivery/services/send.py). A worker killed after the receiver accepted a
message and before recording it leaves the row claimed; the sweeper puts it
back after DELIVERY_CLAIM_TIMEOUT_SECONDS and it is sent again with the same
`webhook-id`, which the receiver (as the Standard Webhooks spec asks) knows as a
duplicate: the local server flags it instead of acting on it twice."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest
from django.db import transaction

from crm.models import Profile
from delivery.models import ChannelSettings, Message
from delivery.services import MessageIn, messages_enqueue, messages_sweep
from localproviders.channel_settings import local_webhook_url
from localproviders.models import OutboxMessage

pytestmark = [pytest.mark.broker, pytest.mark.amqp]

COUNT = 300


def _wait(condition, seconds: float, what: str, tick=None) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what() if callable(what) else what
        if tick is not None:
            tick()
        time.sleep(0.2)


def test_a_sends_worker_killed_mid_run_loses_no_message_and_sends_none_twice(
    transactional_db, project_a, local_server, celery_worker_process, settings, tmp_path
):
    project = project_a[0]
    # The sweeper runs here (in place of beat); a short claim timeout brings the
    # dead worker's claims back in seconds.
    settings.DELIVERY_CLAIM_TIMEOUT_SECONDS = 3
    ChannelSettings.objects.create(
        project=project, channel="webhook", settings={"secret": settings.LOCAL_PROVIDERS_WEBHOOK_SECRET, "timeout_s": 5}
    )
    profiles = Profile.objects.bulk_create([Profile(project=project, user_id=f"k{i}") for i in range(COUNT)])
    url = local_webhook_url(base_url=local_server, name="orders")
    keys = [f"kill:1:run:1:profile:{p.pk}:webhook" for p in profiles]
    worker = celery_worker_process(queues=["sends"], pool="solo", log_path=str(tmp_path / "worker-1.log"))
    with transaction.atomic():
        messages_enqueue(
            project_id=project.pk,
            messages=[
                MessageIn(
                    profile_id=p.pk,
                    channel="webhook",
                    idempotency_key=key,
                    source="kill:1",
                    to=url,
                    content={"body": {"n": i}},
                    marketing=False,
                )  # fmt: skip
                for i, (p, key) in enumerate(zip(profiles, keys, strict=True))
            ],
        )
    received = OutboxMessage.objects.filter(provider=OutboxMessage.Provider.WEBHOOK)
    _wait(lambda: received.count() >= 40, 60, "the first worker sent nothing")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    sent_before_restart = Message.objects.filter(state="sent").count()
    assert sent_before_restart < COUNT, "the kill came too late to test anything"
    celery_worker_process(queues=["sends"], pool="solo", log_path=str(tmp_path / "worker-2.log"))
    _wait(
        lambda: Message.objects.filter(state="sent").count() == COUNT,
        180,
        lambda: f"not every message was sent: {Counter(Message.objects.values_list('state', flat=True))}",
        tick=lambda: messages_sweep(),
    )
    rows = list(received.values_list("message_key", "duplicate", "signature_valid"))
    first_deliveries = sorted(key for key, duplicate, _ in rows if not duplicate)
    assert first_deliveries == sorted(keys)  # every message, each webhook-id acted on once
    assert len([key for key, duplicate, _ in rows if duplicate]) <= 1  # at most the one in flight at the kill
    assert all(valid for _, _, valid in rows)
    assert Message.objects.exclude(state="sent").count() == 0
