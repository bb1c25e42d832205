"""The in-app answer names its delivery message (`message_id`, what the SDK's
Notification Clicked reports), the recorded row carries the variant's label
and the products shown in slot order, and the shown HTML's product links are
tracked with their product and slot."""

from __future__ import annotations

import re

import pytest
from django.core import signing

from catalog.models import Product
from crm.services import profile_upsert
from delivery.models import Message
from tests.campaigns.test_inapp import _fresh_cache, inapp_campaign, launch, recorded  # noqa: F401 - fixture
from tests.recommendations.serving_data import catalog_write, user_write, version_write

pytestmark = pytest.mark.django_db


def test_the_answer_names_its_message_and_its_links_are_tracked(project_a, client):
    project, keys = project_a
    catalog_write(project.pk)
    version_write(project.pk)
    for product in Product.objects.filter(project=project):
        Product.objects.filter(pk=product.pk).update(deeplink=f"https://shop.example/{product.product_id}")
    user_write(project.pk, "u1", viewed=["p3", "p1"])
    profile_upsert(project_id=project.pk, user_id="u1", traits={"firstName": "Ada"})
    campaign = inapp_campaign(project, html="{% for p in recommendations %}<a href='{{ p.url }}'>x</a>{% endfor %}")
    [shown] = launch(client, keys, message_id="launch-1").json()["in_app"]
    [message] = recorded(campaign)
    variant = campaign.variants.get()
    assert shown["message_id"] == message.pk
    assert (message.label, message.items) == (f"variant:{variant.pk}", ["p2", "p5"])
    tokens = re.findall(r"/t/c/([^'\"]+)", shown["body"])
    assert [signing.Signer(salt="delivery.tracking").unsign_object(t) for t in tokens] == [
        [project.pk, message.pk, "https://shop.example/p2", "p2", 1],
        [project.pk, message.pk, "https://shop.example/p5", "p5", 2],
    ]
    assert Message.objects.get(pk=message.pk).content == {"html": shown["body"]}
