"""Two claims racing for the same profile (two campaigns' batches on two
workers): the frequency cap holds exactly, because each claim counts only
under the profile's lock (delivery.services.claim)."""

from __future__ import annotations

import threading
import time

from django.db import connection

from delivery.models import DeliverySettings, Message
from delivery.services import MessageIn, messages_enqueue, messages_send
from delivery.services import claim as claim_module
from tests.delivery.test_send import T0


def test_two_batches_racing_for_one_profile_send_exactly_the_cap(
    transactional_db, shop, make_profile, channels, monkeypatch
):
    DeliverySettings.objects.create(project=shop, caps={"email": [{"max": 3, "days": 7}]})
    profiles = [make_profile() for _ in range(3)]
    batches = [
        messages_enqueue(
            project_id=shop.pk,
            messages=[
                MessageIn(
                    profile_id=p.pk, channel="email", idempotency_key=f"campaign:{c}:{p.pk}:{i}", source=f"campaign:{c}"
                )
                for p in profiles
                for i in range(4)
            ],
            now=T0,
        ).queued_ids
        for c in (1, 2)
    ]
    # Widen the window between the count and the commit: without the lock, both
    # claims would count nothing sent and pass all their messages.
    counted = claim_module._recent_counted

    def slow_count(**kwargs):
        found = counted(**kwargs)
        time.sleep(0.3)
        return found

    monkeypatch.setattr(claim_module, "_recent_counted", slow_count)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(ids: list[int]) -> None:
        try:
            barrier.wait()
            messages_send(message_ids=ids, now=T0)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(ids,)) for ids in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    for p in profiles:
        rows = Message.objects.filter(profile=p)
        assert (rows.filter(state="sent").count(), rows.filter(state="skipped", skip_reason="capped").count()) == (3, 5)
    assert len(channels["email"].sent) == 9
