"""The quickstart's demo email campaign: a draft that may start as it is, whose
two variants render for a demo user with their recommendations and the
unsubscribe link, created once."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command

from campaigns.models import Campaign, Segment
from campaigns.sending.lifecycle import campaign_validate
from campaigns.sending.render import profile_render
from crm.models import Profile
from crm.services import profile_upsert
from tests.recommendations.serving_data import catalog_write, user_write, version_write

pytestmark = pytest.mark.django_db


def test_the_demo_email_campaign_is_a_valid_ab_draft_that_renders_for_a_user(project_a):
    project, _keys = project_a
    catalog_write(project.pk)
    version_write(project.pk)
    user_write(project.pk, "u1", viewed=["p3", "p1"])
    profile_upsert(project_id=project.pk, user_id="u1", traits={"firstName": "Ada", "email": "ada@example.com"})
    segment = Segment.objects.create(project=project, name="Engaged browsers, no recent order", rules={})
    first, second = StringIO(), StringIO()
    call_command("create_demo_email_campaign", project=project.pk, stdout=first)
    call_command("create_demo_email_campaign", project=project.pk, stdout=second)
    created, again = json.loads(first.getvalue()), json.loads(second.getvalue())
    assert (created["created"], again["created"], again["email_campaign"]) == (True, False, created["email_campaign"])

    campaign = Campaign.objects.get(pk=created["email_campaign"])
    assert (campaign.channel, campaign.status, campaign.segment_id, campaign.control_percent) == (
        "email", "draft", segment.pk, 10,
    )  # fmt: skip
    assert campaign_validate(campaign) == {}
    variants = list(campaign.variants.order_by("name"))
    assert [(v.name, v.share) for v in variants] == [("A", 50), ("B", 50)]

    u1 = Profile.objects.get(project=project, user_id="u1")
    a, b = (
        profile_render(
            project_id=project.pk,
            channel="email",
            content=v.content,
            recommendations=v.recommendations,
            profile_id=u1.pk,
        )
        for v in variants
    )
    assert (a["subject"], b["subject"]) == ("Still thinking it over?", "Ada, picked for you")
    # Three recommended products, in stock, in both fields; the unsubscribe link of this profile.
    assert "Product p2" in a["html"] and "- Product p2 120.0" in a["text"]
    assert a["html"].count("<li>") == 3
    assert "Hi Ada," in a["text"] and "/u/" in a["text"] and a["unsubscribe_url"] in a["html"]
