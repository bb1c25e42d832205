"""The delivery console: provider settings with secrets never shown back (a
blank or masked secret keeps the stored one), errors naming the field, the
project scope, the cheap messages changelist and the profile page's "why"."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from delivery.models import ChannelSettings, DeliverySettings, Message
from delivery.services import MessageIn, messages_enqueue, messages_send
from tests.delivery.test_send import T0

pytestmark = pytest.mark.django_db


@pytest.fixture
def console(marketer_a) -> Client:
    client = Client()
    client.force_login(marketer_a)
    return client


@pytest.fixture
def email_settings(shop) -> ChannelSettings:
    row = ChannelSettings.objects.get(project=shop, channel="email")
    row.settings = {"api_key": "k-123456", "from_email": "news@shop.io"}
    row.save()
    return row


def _post(console: Client, row: ChannelSettings, settings: dict) -> object:
    url = f"/admin/delivery/channelsettings/{row.pk}/change/"
    return console.post(url, {"enabled": "on", "settings": json.dumps(settings), "_save": "Save"})


def test_the_change_page_shows_the_secret_masked_never_its_value(console, email_settings, channels):
    page = console.get(f"/admin/delivery/channelsettings/{email_settings.pk}/change/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "k-123456" not in body
    assert "••••56" in body and "news@shop.io" in body
    listing = console.get("/admin/delivery/channelsettings/").content.decode()
    assert "k-123456" not in listing and "••••56" in listing


def test_the_email_settings_page_shows_the_projects_sendgrid_webhook_url(console, email_settings, channels):
    from delivery.receipts import sendgrid_webhook_url

    body = console.get(f"/admin/delivery/channelsettings/{email_settings.pk}/change/").content.decode()
    assert sendgrid_webhook_url(project_id=email_settings.project_id) in body


@pytest.mark.parametrize("typed", ["••••56", ""])
def test_a_masked_or_blank_secret_keeps_the_stored_one(console, email_settings, channels, typed):
    response = _post(console, email_settings, {"api_key": typed, "from_email": "hello@shop.io"})
    assert response.status_code == 302
    email_settings.refresh_from_db()
    assert email_settings.settings == {"api_key": "k-123456", "from_email": "hello@shop.io"}


def test_a_new_secret_replaces_the_stored_one(console, email_settings, channels):
    assert _post(console, email_settings, {"api_key": "k-new-99", "from_email": "news@shop.io"}).status_code == 302
    email_settings.refresh_from_db()
    assert email_settings.settings["api_key"] == "k-new-99"


def test_bad_settings_are_a_form_error_naming_the_field_and_nothing_is_saved(console, email_settings, channels):
    response = _post(console, email_settings, {"api_key": "••••56", "from_email": "not-an-address"})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"settings": ["from_email: must be an email address"]}
    assert "k-123456" not in response.content.decode()
    email_settings.refresh_from_db()
    assert email_settings.settings["from_email"] == "news@shop.io"


def test_another_projects_settings_are_neither_shown_nor_writable(console, project_b, channels):
    theirs = ChannelSettings.objects.create(project=project_b[0], channel="email", settings={"api_key": "their-secret"})
    page = console.get(f"/admin/delivery/channelsettings/{theirs.pk}/change/")
    assert page.status_code == 302
    assert _post(console, theirs, {"api_key": "mine"}).status_code == 302
    theirs.refresh_from_db()
    assert theirs.settings == {"api_key": "their-secret"}
    added = console.post(
        "/admin/delivery/channelsettings/add/",
        {"project": project_b[0].pk, "channel": "sms", "enabled": "on", "settings": '{"api_key": "x"}'},
    )
    assert added.status_code == 200
    assert "project" in added.context["adminform"].form.errors
    assert not ChannelSettings.objects.filter(project=project_b[0], channel="sms").exists()


def test_adding_settings_validates_through_the_channel(console, project_a, channels):
    response = console.post(
        "/admin/delivery/channelsettings/add/",
        {"project": project_a[0].pk, "channel": "sms", "enabled": "on", "settings": "{}"},
    )
    assert response.context["adminform"].form.errors == {"settings": ["api_key: an API key is required"]}
    response = console.post(
        "/admin/delivery/channelsettings/add/",
        {"project": project_a[0].pk, "channel": "sms", "enabled": "on", "settings": '{"api_key": "s-1"}'},
    )
    assert response.status_code == 302
    assert ChannelSettings.objects.get(project=project_a[0], channel="sms").settings == {"api_key": "s-1"}


@pytest.mark.parametrize(
    ("caps", "field", "message"),
    [
        ('{"push": [{"max": 0, "days": 7}]}', "caps", "push[0].max: must be a whole number of at least 1"),
        ('{"fax": []}', "caps", "'fax' is not a channel (expected one of email, push, sms, webhook)"),
        ('{"email": [{"max": 1}]}', "caps", "email[0]: give exactly one window, days or hours"),
    ],
)
def test_bad_delivery_settings_are_a_form_error_naming_the_field(console, project_a, caps, field, message):
    response = console.post(
        "/admin/delivery/deliverysettings/add/",
        {"project": project_a[0].pk, "caps": caps, "min_gap_seconds": "0", "quiet_hours_policy": "delay"},
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {field: [message]}
    assert DeliverySettings.objects.count() == 0


def test_quiet_hours_need_both_ends(console, project_a):
    response = console.post(
        "/admin/delivery/deliverysettings/add/",
        {"project": project_a[0].pk, "caps": "{}", "min_gap_seconds": "0", "quiet_hours_start": "22:00",
         "quiet_hours_policy": "delay"},
    )  # fmt: skip
    assert response.context["adminform"].form.errors == {
        "quiet_hours_end": ["set both the start and the end of quiet hours, or neither"]
    }


@pytest.fixture
def messages_of_two_projects(shop, make_profile, project_b, channels):
    DeliverySettings.objects.create(project=shop, caps={"email": [{"max": 1, "days": 1}]})
    alice = make_profile(user_id="alice")
    other = make_profile(project=project_b[0], user_id="bob")
    for n in (1, 2):
        messages_enqueue(
            project_id=shop.pk,
            messages=[
                MessageIn(
                    profile_id=alice.pk, channel="email", idempotency_key=f"campaign:{n}:a", source=f"campaign:{n}"
                )
            ],  # fmt: skip
            now=T0,
        )
    messages_enqueue(
        project_id=project_b[0].pk,
        messages=[MessageIn(profile_id=other.pk, channel="email", idempotency_key="campaign:9:b", source="campaign:9")],
        now=T0,
    )
    messages_send(message_ids=list(Message.objects.filter(project=shop).values_list("pk", flat=True)), now=T0)
    return alice, other


def test_the_messages_changelist_is_the_marketers_projects_only_and_filters(console, messages_of_two_projects):
    page = console.get("/admin/delivery/message/")
    assert page.status_code == 200
    assert sorted(m.source for m in page.context["cl"].result_list) == ["campaign:1", "campaign:2"]
    capped = console.get("/admin/delivery/message/?skip_reason__exact=capped")
    assert [m.source for m in capped.context["cl"].result_list] == ["campaign:2"]
    by_source = console.get("/admin/delivery/message/?source=campaign:1&state__exact=sent")
    assert [m.source for m in by_source.context["cl"].result_list] == ["campaign:1"]
    assert list(console.get("/admin/delivery/message/?source=campaign:9").context["cl"].result_list) == []


def test_the_messages_changelist_costs_the_same_queries_for_more_rows(
    console, messages_of_two_projects, make_profile, shop
):
    with CaptureQueriesContext(connection) as few:
        assert console.get("/admin/delivery/message/").status_code == 200
    profiles = [make_profile() for _ in range(10)]
    messages_enqueue(
        project_id=shop.pk,
        messages=[MessageIn(profile_id=p.pk, channel="push", idempotency_key=f"k{p.pk}", source="s") for p in profiles],
    )
    with CaptureQueriesContext(connection) as many:
        response = console.get("/admin/delivery/message/")
    assert len(response.context["cl"].result_list) == 12
    assert len(many) == len(few)
    sql = [q["sql"] for q in many.captured_queries]
    # No unbounded COUNT(*) over the messages, no content loaded for the list.
    selects = [s for s in sql if 'FROM "delivery_message"' in s and "COUNT(" not in s.upper()]
    assert selects and all('"delivery_message"."content"' not in s for s in selects)
    counts = [s for s in sql if "COUNT(" in s.upper() and "delivery_message" in s]
    assert counts and all("LIMIT" in s.upper() for s in counts)


def test_the_profile_page_answers_why_the_user_did_not_get_a_source(console, messages_of_two_projects):
    alice, other = messages_of_two_projects
    page = console.get(f"/admin/crm/profile/{alice.pk}/change/", {"source": "campaign:2"}).content.decode()
    assert 'data-state="skipped" data-reason="capped"' in page
    assert 'data-state="sent"' not in page.split('id="profile-messages-source-rows"')[1].split("</div>")[0]
    never = console.get(f"/admin/crm/profile/{alice.pk}/change/", {"source": "campaign:77"}).content.decode()
    assert 'id="profile-messages-none"' in never
    # Another project's profile: not the marketer's page at all.
    assert console.get(f"/admin/crm/profile/{other.pk}/change/", {"source": "campaign:9"}).status_code == 302
