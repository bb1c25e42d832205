"""A campaign's messages carry what results need: the variant's label (control
rows "control" / "system_control"), the recommended products in slot order,
tracked links naming their message, product and slot, and the open pixel; the
id in the links is the row's own (reserved before render)."""

from __future__ import annotations

import re

import pytest
from django.core import signing

from campaigns.models import CampaignStatus
from catalog.models import Product
from crm.models import Profile
from delivery.tracking import open_url
from tests.campaigns.sending_fixtures import (  # noqa: F401 - fixtures
    EMAIL,
    campaign_make,
    campaign_messages,
    eager,
    email_configured,
    profiles_make,
    shop_catalog,
)
from tests.campaigns.test_sending_fanout import run_now
from tests.recommendations.serving_data import user_write

pytestmark = pytest.mark.django_db


def test_variant_messages_carry_label_items_and_tracked_links_and_control_rows_their_label(
    project_a,
    eager,  # noqa: F811
    email_configured,  # noqa: F811
):
    project = project_a[0]
    shop_catalog(project.pk)
    # Web product pages, so their links are tracked (the catalog's app deeplinks, shop://, are left alone).
    for product in Product.objects.filter(project_id=project.pk):
        Product.objects.filter(pk=product.pk).update(deeplink=f"https://shop.example/{product.product_id}")
    user_write(project.pk, "u1", viewed=["p3", "p1"])
    profiles_make(project.pk, 30)
    Profile.objects.filter(project_id=project.pk, email="").update(email="x@example.com")
    campaign = campaign_make(project.pk, variants=[("A", 100, EMAIL)], recommendations={"limit": 3},
                             control_percent=20, status=CampaignStatus.SCHEDULED)  # fmt: skip
    variant = campaign.variants.get()
    run_now(campaign)
    messages = campaign_messages(campaign)
    sent = [m for m in messages if not m.skip_reason]
    held = [m for m in messages if m.skip_reason]
    assert sent and held
    assert {m.label for m in held} == {"control"} and {tuple(m.items) for m in held} == {()}
    for m in sent:
        assert m.label == f"variant:{variant.pk}"
        assert len(m.items) == 3
        tokens = re.findall(r"/t/c/([^'\"]+)", m.content["html"])
        payloads = [signing.Signer(salt="delivery.tracking").unsign_object(t) for t in tokens]
        assert payloads == [
            [project.pk, m.pk, f"https://shop.example/{pid}", pid, slot] for slot, pid in enumerate(m.items, start=1)
        ]
        assert m.content["html"].endswith(
            f'<img src="{open_url(project_id=project.pk, message_id=m.pk)}" width="1" height="1" alt="" '
            'style="display:none">'
        )
