"""A triggered campaign end to end through real processes: the collector (live
server), the real broker, an ingest worker (the stored-events hook writes the
trigger) and a sends worker (the due sender enqueued after the batch's commit,
then the message's send)."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from campaigns.models import Campaign, CampaignStatus, CampaignTrigger, ScheduleKind, TriggerState, Variant
from catalog.models import Product
from delivery.models import Message
from tests.conftest import basic_header

pytestmark = [pytest.mark.broker, pytest.mark.django_db(transaction=True)]


def _post(url: str, write_key: str, body: dict) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": basic_header(write_key)},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _until(check, *, within: float, what: str):
    started = time.monotonic()
    while not (value := check()):
        assert time.monotonic() - started < within, f"{what} did not happen within {within} s"
        time.sleep(0.1)
    return value


def test_an_event_posted_twice_triggers_one_message_through_the_real_workers(
    live_server, celery_worker_process, make_project
):
    project, keys = make_project("Live shop")
    Product.objects.create(project=project, product_id="p1", name="Trail shoe", price=90)
    campaign = Campaign.objects.create(
        project=project, name="Added", channel="email", status=CampaignStatus.SCHEDULED,
        schedule_kind=ScheduleKind.TRIGGERED, trigger_event="Product Added", trigger_delay_seconds=0,
    )  # fmt: skip
    Variant.objects.create(
        campaign=campaign, content={"subject": "{{ product.name }} is waiting", "text": "{{ event.name }}"}
    )
    celery_worker_process(queues=["ingest"], pool="solo")
    celery_worker_process(queues=["sends"])
    added = {
        "type": "track", "userId": "u1", "event": "Product Added", "messageId": "add-1",
        "properties": {"product_id": "p1"},
    }  # fmt: skip
    batch = live_server.url + "/v1/batch"
    identify = {"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}, "messageId": "id-1"}
    assert _post(batch, keys.write_key, {"batch": [identify, added]}) == {"success": True}
    # The SDK retries the same request (its answer was lost): the same message id.
    assert _post(batch, keys.write_key, {"batch": [identify, added]}) == {"success": True}

    trigger = _until(
        lambda: CampaignTrigger.objects.filter(campaign=campaign, state=TriggerState.SENT).first(),
        within=30,
        what="the trigger sent by the sends worker",
    )
    [message] = _until(lambda: list(Message.objects.filter(source=campaign.source)), within=10, what="the message")
    assert message.content["subject"] == "Trail shoe is waiting" and message.content["text"] == "Product Added"
    assert message.idempotency_key == f"campaign:{campaign.pk}:event:add-1:profile:{trigger.profile_id}:email"
    # The email channel has no provider settings in this project: recorded as such, once.
    _until(lambda: Message.objects.get(pk=message.pk).state != "queued", within=10, what="the send's result")
    time.sleep(1)  # anything the retry could have added would be there by now
    assert CampaignTrigger.objects.filter(campaign=campaign).count() == 1
    assert Message.objects.filter(source=campaign.source).count() == 1
    sent = Message.objects.get(pk=message.pk)
    assert (sent.state, sent.skip_reason) == ("failed", "channel_not_configured")
