"""Conversions end to end through real processes: the collector (live server),
the real broker and an ingest worker whose stored-events hook credits the
order to the campaign's message, once, though the SDK sends the batch twice."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from campaigns.models import CampaignConversion, CampaignProductStat, CampaignStat, CampaignStatus
from crm.models import Event, Profile
from delivery.models import Message, MessageState
from tests.campaigns.sending_fixtures import campaign_make
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


def test_an_order_posted_twice_converts_once_through_the_real_ingest_worker(
    live_server, celery_worker_process, make_project
):
    project, keys = make_project("Live shop")
    profile = Profile.objects.create(project=project, user_id="u1")
    campaign = campaign_make(project.pk, goal_event="Order Completed", status=CampaignStatus.COMPLETED)
    label = f"variant:{campaign.variants.get().pk}"
    sent_at = timezone.now() - timedelta(hours=2)
    Message.objects.create(
        project=project, profile=profile, channel="email", idempotency_key="k1", source=campaign.source,
        label=label, items=["p1", "p2"], state=MessageState.SENT, created_at=sent_at, sent_at=sent_at,
    )  # fmt: skip
    celery_worker_process(queues=["ingest"], pool="solo")
    order = {
        "type": "track", "userId": "u1", "event": "Order Completed", "messageId": "order-1",
        "properties": {"revenue": "42.50", "products": [{"product_id": "p2", "price": 42.5}]},
    }  # fmt: skip
    batch = live_server.url + "/v1/batch"
    assert _post(batch, keys.write_key, {"batch": [order]}) == {"success": True}
    # The SDK retries the same request (its answer was lost): the same message id.
    assert _post(batch, keys.write_key, {"batch": [order]}) == {"success": True}
    conversion = _until(
        lambda: CampaignConversion.objects.filter(campaign=campaign).first(), within=30, what="the conversion"
    )
    _until(lambda: Event.objects.filter(project=project).exists(), within=10, what="the stored event")
    time.sleep(1.5)  # anything the retried batch could have added would be there by now
    assert CampaignConversion.objects.filter(campaign=campaign).count() == 1
    assert (conversion.group, conversion.revenue, conversion.first, conversion.product_id) == (
        label, Decimal("42.5"), True, "p2",
    )  # fmt: skip
    counters = {(s.metric, s.count, s.amount) for s in CampaignStat.objects.filter(campaign=campaign, group=label)}
    assert counters == {("converted", 1, Decimal(0)), ("revenue", 1, Decimal("42.5"))}
    product = CampaignProductStat.objects.get(campaign=campaign)
    assert (product.product_id, product.slot, product.converted, product.revenue) == ("p2", 2, 1, Decimal("42.5"))
