"""In-app campaigns in the collector's answer to "App Launched" and to a web
session's first page: the highest-priority campaign that targets the user
within its caps, rendered with the user's recommendations, each one shown (or
held out) recorded as a delivery message."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from campaigns.channels import inapp
from campaigns.models import Campaign, CampaignSettings, CampaignStatus, SegmentMembership, Variant
from campaigns.segments.buckets import profile_bucket
from campaigns.segments.membership import segment_save
from crm.models import Profile
from crm.services import profile_upsert
from delivery.models import Message, MessageState, SkipReason
from recommendations.models import RecommendationServed
from tests.conftest import basic_header
from tests.recommendations.serving_data import catalog_write, user_write, version_write

TEMPLATE = (
    "Hi {{ user.first_name }}! {% for p in recommendations %}[{{ p.name }} {{ p.price }} {{ p.deeplink }}]{% endfor %}"
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    inapp.inapp_forget()
    yield
    inapp.inapp_forget()


def inapp_campaign(project, *, name="Picks", html=TEMPLATE, **fields) -> Campaign:
    defaults = dict(channel="in_app", status=CampaignStatus.SCHEDULED, max_per_session=1, max_per_day=2)
    campaign = Campaign.objects.create(project=project, name=name, **{**defaults, **fields})
    Variant.objects.create(
        campaign=campaign, name="A", content={"html": html}, recommendations={"limit": 2, "in_stock": True}
    )
    return campaign


@pytest.fixture
def shop(project_a):
    project, keys = project_a
    catalog_write(project.pk)
    version_write(project.pk)
    user_write(project.pk, "u1", viewed=["p3", "p1"])
    profile_upsert(project_id=project.pk, user_id="u1", traits={"firstName": "Ada", "name": "Ada Lovelace"})
    user_write(project.pk, "u2")
    campaign = inapp_campaign(project)
    return project, keys, campaign


def launch(client, keys, user="u1", session=None, event="App Launched", path="/v1/track", message_id=None, kind=None):
    body = {"userId": user, "event": event, "properties": {}}
    if kind == "page":
        body = {"userId": user, "name": event, "properties": {}}
    if session:
        body["context"] = {"sessionId": session}
    if message_id:
        body["messageId"] = message_id
    return client.post(path, body, content_type="application/json", HTTP_AUTHORIZATION=basic_header(keys.write_key))


def page(client, keys, user="u1", session=None):
    return launch(client, keys, user=user, session=session, event="Home", path="/v1/page", kind="page")


def recorded(campaign):
    return list(Message.objects.filter(source=campaign.source).order_by("id"))


def test_app_launched_is_answered_with_the_rendered_campaign_and_it_is_recorded_sent(shop, client):
    project, keys, campaign = shop
    response = launch(client, keys, session="s1", message_id="launch-1")
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    [shown] = body["in_app"]
    # In stock only by default: p4 is out of stock, so p2 then p5.
    assert shown["body"] == "Hi Ada! [Product p2 120.0 shop://p/p2][Product p5 10.0 shop://p/p5]"
    assert (shown["id"], shown["name"], shown["variant"], shown["placement"], shown["user"]) == (
        campaign.pk, "Picks", "A", "app_launch", "u1",
    )  # fmt: skip
    [message] = recorded(campaign)
    u1 = Profile.objects.get(project=project, user_id="u1")
    assert (message.channel, message.state, message.profile_id, message.skip_reason) == ("in_app", "sent", u1.pk, "")
    assert message.content == {"html": shown["body"]}
    assert message.idempotency_key == f"campaign:{campaign.pk}:shown:launch-1:profile:{u1.pk}:in_app"
    assert message.sent_at is not None and message.sent_at == message.claimed_at
    # The list shown is recorded for recommendation tracking (clicks, conversions).
    served = RecommendationServed.objects.get(pk=shown["recommendation_id"])
    assert (served.surface, served.products, served.user_ref) == ("in_app", ["p2", "p5"], "u1")
    assert served.profile_id == u1.pk


def test_an_sdk_retry_of_the_same_launch_records_one_message(shop, client):
    project, keys, campaign = shop
    Campaign.objects.filter(pk=campaign.pk).update(max_per_session=0, max_per_day=0)
    inapp.inapp_forget()
    first = launch(client, keys, message_id="launch-1").json()["in_app"]
    again = launch(client, keys, message_id="launch-1").json()["in_app"]
    # The same answer; each answer is its own served list (recommendation tracking).
    strip = [{k: v for k, v in item.items() if k != "recommendation_id"} for item in first + again]
    assert len(first) == 1 and strip[0] == strip[1]
    assert len(recorded(campaign)) == 1


def test_caps_per_session_and_per_day(shop, client):
    _project, keys, campaign = shop
    assert len(launch(client, keys, session="s1").json()["in_app"]) == 1
    assert launch(client, keys, session="s1").json()["in_app"] == []  # 1 per session
    assert len(launch(client, keys, session="s2").json()["in_app"]) == 1
    assert launch(client, keys, session="s3").json()["in_app"] == []  # 2 per day
    # Another user has caps of their own.
    assert len(launch(client, keys, user="u2", session="s9").json()["in_app"]) == 1
    assert [m.state for m in recorded(campaign)] == ["sent"] * 3


def test_launches_without_session_id_within_30_minutes_are_one_session(shop, client):
    _project, keys, _campaign = shop
    assert len(launch(client, keys).json()["in_app"]) == 1
    assert launch(client, keys).json()["in_app"] == []


def test_the_highest_priority_campaign_within_its_caps_is_shown(shop, client):
    project, keys, picks = shop
    urgent = inapp_campaign(project, name="Sale", html="Sale for {{ user.first_name }}", priority=5)
    assert launch(client, keys, session="s1").json()["in_app"][0]["name"] == "Sale"
    # Sale's session cap is spent: the next launch of the session gets Picks.
    assert launch(client, keys, session="s1").json()["in_app"][0]["name"] == "Picks"
    assert launch(client, keys, session="s1").json()["in_app"] == []
    assert (len(recorded(urgent)), len(recorded(picks))) == (1, 1)


def test_a_segment_campaign_reaches_its_members_only(shop, client):
    project, keys, picks = shop
    segment = segment_save(project_id=project.pk, name="VIP", rules={"bucket": {"op": "between", "value": [0, 999]}})
    SegmentMembership.objects.filter(segment=segment).delete()
    u2 = Profile.objects.get(project=project, user_id="u2")
    SegmentMembership.objects.create(segment=segment, profile=u2, entered_at=u2.created_at)
    vip = inapp_campaign(project, name="VIP", html="VIP", priority=5, segment=segment)
    assert launch(client, keys, user="u2").json()["in_app"][0]["name"] == "VIP"
    assert launch(client, keys, user="u1").json()["in_app"][0]["name"] == "Picks"
    assert [m.profile_id for m in recorded(vip)] == [u2.pk]


def test_control_and_system_control_are_recorded_and_shown_nothing(project_a, client):
    project, keys = project_a
    campaign = inapp_campaign(project, control_percent=50, max_per_session=0, max_per_day=0)
    CampaignSettings.objects.create(project=project, system_control_percent=10)
    profiles = [Profile.objects.create(project=project, user_id=f"v{i}") for i in range(60)]
    system = next(p for p in profiles if profile_bucket(p.pk, f"system-control:{project.pk}") < 100)
    reached = [p for p in profiles if profile_bucket(p.pk, f"system-control:{project.pk}") >= 100]
    control = next(p for p in reached if profile_bucket(p.pk, f"campaign:{campaign.pk}") < 500)
    shown = next(p for p in reached if profile_bucket(p.pk, f"campaign:{campaign.pk}") >= 500)
    assert launch(client, keys, user=system.user_id).json()["in_app"] == []
    assert launch(client, keys, user=control.user_id).json()["in_app"] == []
    assert len(launch(client, keys, user=shown.user_id).json()["in_app"]) == 1
    by_profile = {m.profile_id: (m.state, m.skip_reason) for m in recorded(campaign)}
    assert by_profile == {
        system.pk: (MessageState.SKIPPED, SkipReason.SYSTEM_CONTROL),
        control.pk: (MessageState.SKIPPED, SkipReason.CONTROL),
        shown.pk: (MessageState.SENT, ""),
    }


def test_a_web_sessions_first_page_gets_the_popup_and_later_pages_the_plain_answer(shop, client):
    _project, keys, campaign = shop
    Campaign.objects.filter(pk=campaign.pk).update(max_per_session=0, max_per_day=0)
    inapp.inapp_forget()
    [popup] = page(client, keys).json()["in_app"]
    assert popup["placement"] == "web_popup"
    assert page(client, keys).json() == {"success": True}  # the same session (within 30 minutes)
    # The SDK's own session ids: the first page of each new one.
    assert len(page(client, keys, session="w1").json()["in_app"]) == 1
    assert page(client, keys, session="w1").json() == {"success": True}
    assert len(page(client, keys, session="w2").json()["in_app"]) == 1
    assert len(recorded(campaign)) == 3


def test_pages_of_a_project_without_live_campaigns_get_the_plain_answer(shop, client):
    _project, keys, campaign = shop
    Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.PAUSED)
    inapp.inapp_forget()
    assert page(client, keys).json() == {"success": True}
    assert cache.get(f"inapp:web:session:{_project.pk}:u1") is None  # no session bookkeeping either


def test_other_events_get_the_plain_answer(shop, client):
    _project, keys, _campaign = shop
    response = launch(client, keys, event="Product Viewed")
    assert response.json() == {"success": True}


def test_a_batch_with_a_launch_and_a_screen_launch(shop, client):
    _project, keys, _campaign = shop
    body = {
        "batch": [
            {"type": "track", "userId": "u1", "event": "Product Viewed", "properties": {"product_id": "p7"}},
            {"type": "screen", "userId": "u2", "name": "App Launched"},
        ]
    }
    response = client.post(
        "/v1/batch", body, content_type="application/json", HTTP_AUTHORIZATION=basic_header(keys.write_key)
    )
    assert [m["user"] for m in response.json()["in_app"]] == ["u2"]


@pytest.mark.parametrize("status", [CampaignStatus.DRAFT, CampaignStatus.PAUSED, CampaignStatus.CANCELLED])
def test_a_campaign_that_is_not_live_is_not_shown(shop, client, status):
    project, keys, campaign = shop
    Campaign.objects.filter(pk=campaign.pk).update(status=status)
    inapp.inapp_forget()
    assert launch(client, keys).json()["in_app"] == []
    assert recorded(campaign) == []


def test_an_unknown_user_gets_an_empty_list_and_nothing_is_recorded(shop, client):
    _project, keys, campaign = shop
    assert launch(client, keys, user="new-install").json()["in_app"] == []
    assert recorded(campaign) == []


def test_another_projects_campaign_is_never_shown(shop, project_b, client):
    _project, _keys, campaign = shop
    other, other_keys = project_b
    user_write(other.pk, "u1")
    assert launch(client, other_keys).json()["in_app"] == []
    assert Message.objects.filter(project=other).count() == 0


def test_a_template_that_fails_to_render_is_recorded_and_shows_nothing(project_a, client):
    project, keys = project_a
    Profile.objects.create(project=project, user_id="u1")
    campaign = inapp_campaign(project, html="{{ 1 | divided_by: 0 }}")
    assert launch(client, keys).json()["in_app"] == []
    [message] = recorded(campaign)
    assert (message.state, message.skip_reason) == (MessageState.SKIPPED, SkipReason.TEMPLATE_ERROR)
    assert "divide" in message.error.lower() or "zero" in message.error.lower()


def test_template_output_is_html_escaped(shop, client):
    project, keys, _campaign = shop
    profile_upsert(project_id=project.pk, user_id="u3", traits={"firstName": "<script>x</script>"})
    [message] = launch(client, keys, user="u3").json()["in_app"]
    assert "<script>" not in message["body"] and "&lt;script&gt;" in message["body"]


def test_the_quickstarts_demo_in_app_campaign_is_created_once_and_shown(project_a, client):
    import json
    from io import StringIO

    from django.core.management import call_command

    project, keys = project_a
    catalog_write(project.pk)
    version_write(project.pk)
    user_write(project.pk, "u1", viewed=["p1"])
    first, second = StringIO(), StringIO()
    call_command("create_demo_inapp", project=project.pk, stdout=first)
    call_command("create_demo_inapp", project=project.pk, stdout=second)
    created, again = json.loads(first.getvalue()), json.loads(second.getvalue())
    assert (created["created"], again["created"], again["inapp_campaign"]) == (True, False, created["inapp_campaign"])
    [shown] = launch(client, keys).json()["in_app"]
    assert shown["name"] == "Picked for you"
    assert "Product p2" in shown["body"] and 'href="shop://p/p2"' in shown["body"]
