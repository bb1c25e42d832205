"""The campaigns console: the builder (form, variants inline, the project's
segments only, errors naming fields), the audience count, the preview for one
profile, the estimate page, the lifecycle buttons (POST, CSRF), the runs and
messages of a campaign, and the campaign settings admin; every page scoped to
the marketer's projects."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.test import Client

from campaigns.models import Campaign, CampaignRun, CampaignSettings, Segment, SegmentMembership, Variant
from crm.models import Profile
from crm.services import membership_add
from delivery.models import Message
from tests.campaigns.assignments import expected_groups

pytestmark = pytest.mark.django_db

ADD = "/admin/campaigns/campaign/add/"
ENTERED = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def console(marketer_a) -> Client:
    client = Client()
    client.force_login(marketer_a)
    return client


def _segment(project, name: str = "Germans", members: int = 0) -> Segment:
    segment = Segment.objects.create(project=project, name=name, rules={}, member_count=members)
    if members:
        profiles = Profile.objects.bulk_create(
            [Profile(project=project, user_id=f"{name}-{i}", email=f"{name}-{i}@example.com") for i in range(members)]
        )
        SegmentMembership.objects.bulk_create(
            [
                SegmentMembership(segment=segment, profile=p, entered_at=datetime(2026, 3, 1, tzinfo=UTC))
                for p in profiles
            ]
        )
    return segment


def _campaign(project, name: str = "Spring", channel: str = "email", **fields) -> Campaign:
    campaign = Campaign.objects.create(project=project, name=name, channel=channel, **fields)
    Variant.objects.create(campaign=campaign, name="A", share=100, content={"subject": "Hi", "html": "<p>x</p>"})
    return campaign


def _variant_data(i: int, **fields) -> dict[str, object]:
    data = {
        "name": "A",
        "share": 100,
        "rec_limit": 3,
        "rec_in_stock": "on",
        "rec_properties": "",
        "push_data": "",
    }
    data.update(fields)
    return {f"variants-{i}-{k}": v for k, v in data.items()}


def _form(project, variants: list[dict[str, object]], *, initial: int = 0, **fields) -> dict[str, object]:
    data: dict[str, object] = {
        "project": project.pk,
        "name": "Spring sale",
        "channel": "email",
        "marketing": "on",
        "segment": "",
        "control_percent": 0,
        "schedule_kind": "now",
        "schedule_timezone": "project",
        "past_time_policy": "skip",
        "trigger_delay_seconds": 0,
        "goal_window_hours": 72,
        "ab_test_percent": 0,
        "ab_decision_hours": 24,
        "ab_metric": "click_rate",
        "ab_confidence": 95,
        "ab_min_sample": 100,
        "ab_fallback": "keep_split",
        "quiet_hours_policy": "",
        "priority": 0,
        "max_per_session": 1,
        "max_per_day": 3,
        "variants-TOTAL_FORMS": len(variants),
        "variants-INITIAL_FORMS": initial,
        "variants-MIN_NUM_FORMS": 1,
        "variants-MAX_NUM_FORMS": 1000,
    }
    data.update(fields)
    for i, v in enumerate(variants):
        data.update(_variant_data(i, **v))
    return {k: v for k, v in data.items() if v is not None}


# --- the builder ---------------------------------------------------------------------------------


def test_the_add_form_offers_only_the_marketers_segments_with_their_project_and_count(console, project_a, project_b):
    mine = _segment(project_a[0], "Germans", members=3)
    _segment(project_b[0], "Theirs")
    page = console.get(ADD)
    html = page.content.decode()
    assert page.status_code == 200
    assert '<script src="/static/campaigns/campaign_builder.js"></script>' in html
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None  # no inline script
    assert "Theirs" not in html
    select = re.search(r'<select name="segment".*?</select>', html, re.S).group(0)
    option = re.search(rf'<option value="{mine.pk}"[^>]*>', select).group(0)
    assert f'data-project="{project_a[0].pk}"' in option and 'data-members="3"' in option
    assert "Germans (3 members)" in html
    assert "everyone reachable on the channel" in html
    # Each channel's template fields are there, in fieldsets the builder shows by channel.
    for channel in ("email", "push", "sms", "webhook", "in_app"):
        assert f"channel-fields channel-{channel}" in html


def test_saving_a_campaign_packs_each_variants_templates_and_recommendation_filters(console, project_a):
    segment = _segment(project_a[0], "Germans", members=2)
    data = _form(
        project_a[0],
        [
            {
                "name": "A",
                "share": 60,
                "email_subject": "Hi {{ user.first_name }}",
                "email_html": "<p>{% for p in recommendations %}{{ p.name }}{% endfor %}</p>",
                "email_text": "Picks",
                "sms_text": "ignored: not this channel",
                "rec_limit": 4,
                "rec_category": "Shoes",
                "rec_min_price": "10",
                "rec_max_price": "99.5",
                "rec_properties": '{"brand": "Acme"}',
                "rec_exclude": "sku-1, sku-2",
            },
            {"name": "B", "share": 40, "email_subject": "Hello", "rec_in_stock": None},
        ],
        segment=segment.pk,
        control_percent=20,
    )
    response = console.post(ADD, data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    # Saved as a draft, with what a start would refuse said.
    assert [str(m) for m in get_messages(response.wsgi_request)][0] == (
        "Saved; not ready to start: variants[1].content.html: give html or text"
    )
    campaign = Campaign.objects.get()
    assert (campaign.name, campaign.segment_id, campaign.control_percent, campaign.status) == (
        "Spring sale",
        segment.pk,
        20,
        "draft",
    )
    a, b = campaign.variants.order_by("pk")
    assert (a.name, a.share, b.name, b.share) == ("A", 60, "B", 40)
    assert a.content == {
        "subject": "Hi {{ user.first_name }}",
        "html": "<p>{% for p in recommendations %}{{ p.name }}{% endfor %}</p>",
        "text": "Picks",
    }
    assert a.recommendations == {
        "limit": 4,
        "category": "Shoes",
        "in_stock": True,
        "min_price": 10.0,
        "max_price": 99.5,
        "properties": {"brand": "Acme"},
        "exclude": ["sku-1", "sku-2"],
    }
    assert b.content == {"subject": "Hello"}
    assert b.recommendations["in_stock"] is False
    # Opened again, the form shows what was saved.
    page = console.get(f"/admin/campaigns/campaign/{campaign.pk}/change/")
    form = page.context["inline_admin_formsets"][0].formset.forms[0]
    assert form.initial["email_subject"] == "Hi {{ user.first_name }}"
    assert form.initial["rec_exclude"] == "sku-1, sku-2"


def test_a_liquid_error_names_its_variant_field_and_saves_nothing(console, project_a):
    data = _form(project_a[0], [{"email_subject": "Hi {{ user.first_name ", "email_html": "{% for %}"}])
    response = console.post(ADD, data)
    assert response.status_code == 200
    errors = response.context["inline_admin_formsets"][0].formset.errors[0]
    assert sorted(errors) == ["email_html", "email_subject"]
    assert errors["email_subject"][0].startswith("Liquid template error:")
    assert Campaign.objects.count() == 0


def test_another_projects_segment_or_project_is_refused_naming_the_field(console, project_a, project_b, marketer_a):
    theirs = _segment(project_b[0], "Theirs")
    response = console.post(ADD, _form(project_a[0], [{"email_subject": "x"}], segment=theirs.pk))
    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["segment"]
    response = console.post(ADD, _form(project_b[0], [{"email_subject": "x"}]))
    assert list(response.context["adminform"].form.errors) == ["project"]
    # A marketer of both projects: offered both, and still refused a mix of them.
    membership_add(project_id=project_b[0].pk, user_id=marketer_a.pk)
    client = Client()
    client.force_login(marketer_a)
    mixed = client.post(ADD, _form(project_a[0], [{"email_subject": "x"}], segment=theirs.pk))
    assert mixed.context["adminform"].form.errors == {"segment": ["not a segment of the campaign's project"]}
    assert Campaign.objects.count() == 0


def test_a_saved_campaign_offers_only_its_own_projects_segments(marketer_a, project_a, project_b):
    membership_add(project_id=project_b[0].pk, user_id=marketer_a.pk)
    client = Client()
    client.force_login(marketer_a)
    _segment(project_a[0], "Mine")
    _segment(project_b[0], "Other")
    campaign = _campaign(project_a[0])
    html = client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert "Mine (0 members)" in html and "Other (0 members)" not in html


def test_another_projects_campaigns_are_neither_listed_nor_opened_nor_changed(console, project_a, project_b):
    _campaign(project_a[0], "Ours")
    theirs = _campaign(project_b[0], "Theirs")
    listing = console.get("/admin/campaigns/campaign/").content.decode()
    assert "Ours" in listing and "Theirs" not in listing
    for url in ("change", "preview", "estimate"):
        response = console.get(f"/admin/campaigns/campaign/{theirs.pk}/{url}/")
        assert response.status_code in (302, 404)
        assert b"Theirs" not in response.content
    for action in ("start", "pause", "resume", "cancel"):
        assert console.post(f"/admin/campaigns/campaign/{theirs.pk}/{action}/").status_code == 404
    console.post(f"/admin/campaigns/campaign/{theirs.pk}/change/", _form(project_b[0], [{"email_subject": "x"}]))
    theirs.refresh_from_db()
    assert (theirs.name, theirs.status) == ("Theirs", "draft")


def test_the_changelist_costs_the_same_queries_for_more_campaigns(console, project_a, django_assert_max_num_queries):
    segment = _segment(project_a[0])
    for i in range(3):
        c = _campaign(project_a[0], f"C{i}", segment=segment)
        CampaignRun.objects.create(campaign=c, occurrence="now", planned_at=datetime(2026, 3, 1, 9, tzinfo=UTC))
    console.get("/admin/campaigns/campaign/")
    with django_assert_max_num_queries(20) as captured:
        page = console.get("/admin/campaigns/campaign/")
    html = page.content.decode()
    assert html.count("planning, 2026-03-01 09:00") == 3
    assert html.count(">Germans<") == 3
    for i in range(3, 9):
        _campaign(project_a[0], f"C{i}")
    with django_assert_max_num_queries(len(captured.captured_queries)):
        assert console.get("/admin/campaigns/campaign/").status_code == 200


# --- the audience count --------------------------------------------------------------------------


def test_the_audience_count_is_the_segments_members_or_everyone_reachable(console, project_a, project_b):
    project = project_a[0]
    segment = _segment(project, "Germans", members=4)
    Profile.objects.create(project=project, user_id="no-email")
    Profile.objects.create(project=project, user_id="out", email="out@example.com", email_subscribed=False)
    _segment(project_b[0], "Theirs", members=9)
    url = "/admin/campaigns/campaign/audience/"
    assert console.get(url, {"project": project.pk, "channel": "email", "segment": segment.pk}).json() == {
        "count": 4,
        "status": "pending",
        "progress": 0.0,
    }
    # Everyone reachable by email: the 4 members; not the one without an address nor the opt-out.
    assert console.get(url, {"project": project.pk, "channel": "email"}).json() == {"count": 4, "status": "ready"}
    assert console.get(url, {"project": project.pk, "channel": "email", "marketing": "0"}).json()["count"] == 5
    assert console.get(url, {"project": project.pk, "channel": "sms"}).json()["count"] == 0
    theirs = Segment.objects.get(name="Theirs")
    assert console.get(url, {"project": project.pk, "channel": "email", "segment": theirs.pk}).status_code == 404
    assert console.get(url, {"project": project_b[0].pk, "channel": "email"}).status_code == 404
    bad = console.get(url, {"project": project.pk, "channel": "fax"})
    assert (bad.status_code, list(bad.json())) == (400, ["channel"])
    assert list(console.get(url, {"project": "x", "channel": "email"}).json()) == ["project"]


# --- the estimate page --------------------------------------------------------------------------


def test_the_estimate_page_shows_the_counts_per_variant(console, project_a):
    project = project_a[0]
    segment = _segment(project, "Germans", members=10)
    Profile.objects.filter(user_id="Germans-0").update(email="")
    campaign = _campaign(project, segment=segment)
    html = console.get(f"/admin/campaigns/campaign/{campaign.pk}/estimate/").content.decode()
    variant = campaign.variants.get()
    row = re.search(rf'<tr data-variant="{variant.pk}">(.*?)</tr>', html, re.S).group(1)
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", row)
    # name, share, assigned 10, unsubscribed 0, no address 1, no provider: all 9 others.
    assert cells == ["A", "100 %", "10", "0", "1", "9", "0", "0", "0", "0"]
    assert 'id="estimate-not-configured"' in html


# --- runs and messages ----------------------------------------------------------------------------


def test_the_change_page_lists_runs_and_links_messages_by_state_and_reason(console, project_a):
    project = project_a[0]
    campaign = _campaign(project, status="running")
    CampaignRun.objects.create(
        campaign=campaign, occurrence="now", planned_at=datetime(2026, 3, 1, 9, tzinfo=UTC), counts={"control": 2}
    )
    profiles = Profile.objects.bulk_create([Profile(project=project, user_id=f"m{i}") for i in range(5)])
    states = [("sent", ""), ("sent", ""), ("skipped", "control"), ("skipped", "control"), ("failed", "no_address")]
    Message.objects.bulk_create(
        [
            Message(
                project=project,
                profile=p,
                channel="email",
                idempotency_key=f"k{p.pk}",
                source=campaign.source,
                state=state,
                skip_reason=reason,
            )
            for p, (state, reason) in zip(profiles, states, strict=True)
        ]  # fmt: skip
    )
    html = console.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert "<td>now</td><td>Planning</td>" in html
    assert "control 2" in html
    rows = re.findall(r'<tr data-state="(\w+)" data-reason="(\w*)">.*?<a href="([^"]+)">(\d+)</a>', html, re.S)
    source = f"campaign%3A{campaign.pk}"
    base = "/admin/delivery/message/?source="
    assert rows == [
        ("failed", "no_address", f"{base}{source}&amp;state__exact=failed&amp;skip_reason__exact=no_address", "1"),
        ("sent", "", f"{base}{source}&amp;state__exact=sent", "2"),
        ("skipped", "control", f"{base}{source}&amp;state__exact=skipped&amp;skip_reason__exact=control", "2"),
    ]
    # The link opens the delivery console on exactly those rows.
    listing = console.get(f"/admin/delivery/message/?source=campaign:{campaign.pk}&state__exact=skipped")
    assert listing.status_code == 200
    assert listing.context["cl"].result_count == 2
    # A running campaign is shown, not edited; its buttons are pause and cancel.
    assert re.findall(r'id="campaign-(start|pause|resume|cancel)"', html) == ["pause", "cancel"]
    assert 'name="_save"' not in html


# --- the lifecycle buttons ------------------------------------------------------------------------


def test_the_lifecycle_buttons_need_post_and_the_csrf_token(project_a, marketer_a):
    campaign = _campaign(project_a[0])
    checked = Client(enforce_csrf_checks=True)
    checked.force_login(marketer_a)
    assert checked.post(f"/admin/campaigns/campaign/{campaign.pk}/start/").status_code == 403
    assert checked.get(f"/admin/campaigns/campaign/{campaign.pk}/start/").status_code == 405
    campaign.refresh_from_db()
    assert campaign.status == "draft"
    anonymous = Client().post(f"/admin/campaigns/campaign/{campaign.pk}/start/")
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]


# --- campaign settings ------------------------------------------------------------------------------


def test_campaign_settings_are_per_project_and_the_system_control_share_at_most_10(console, project_a, project_b):
    CampaignSettings.objects.create(project=project_b[0], system_control_percent=5)
    refused = console.post(
        "/admin/campaigns/campaignsettings/add/", {"project": project_a[0].pk, "system_control_percent": 11}
    )
    assert refused.status_code == 200
    assert list(refused.context["adminform"].form.errors) == ["system_control_percent"]
    theirs = console.post(
        "/admin/campaigns/campaignsettings/add/", {"project": project_b[0].pk, "system_control_percent": 3}
    )
    assert list(theirs.context["adminform"].form.errors) == ["project"]
    saved = console.post(
        "/admin/campaigns/campaignsettings/add/", {"project": project_a[0].pk, "system_control_percent": 10}
    )
    assert saved.status_code == 302
    assert CampaignSettings.objects.get(project=project_a[0]).system_control_percent == 10
    listing = console.get("/admin/campaigns/campaignsettings/").content.decode()
    assert listing.count('<td class="field-system_control_percent">') == 1
    assert CampaignSettings.objects.get(project=project_b[0]).system_control_percent == 5


def test_a_staff_user_of_no_project_sees_no_campaign(project_a):
    _campaign(project_a[0])
    user = get_user_model().objects.create_user("bob", "bob@b.example", "pw-bob-12345", is_staff=True)
    client = Client()
    client.force_login(user)
    assert client.get("/admin/campaigns/campaign/").status_code == 403
    assert (
        client.get("/admin/campaigns/campaign/audience/", {"project": project_a[0].pk, "channel": "email"}).status_code
        == 404
    )


def test_the_project_rules_are_shown_with_a_link_to_the_delivery_settings(console, project_a):
    from delivery.models import DeliverySettings

    project = project_a[0]
    DeliverySettings.objects.create(
        project=project, caps={"email": [{"max": 1, "days": 1}]}, quiet_hours_start=time(22), quiet_hours_end=time(8)
    )
    campaign = _campaign(project)
    html = console.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert "at most 1 in 1 days; quiet hours 22:00–08:00 (delay until quiet hours end)" in html
    assert f'href="/admin/delivery/deliverysettings/?project__id__exact={project.pk}"' in html


# --- the preview for one profile ------------------------------------------------------------------


@pytest.fixture
def recs_shop(project_a):
    from recommendations.serving import serving_cache_clear
    from tests.campaigns.sending_fixtures import shop_catalog

    serving_cache_clear()
    shop_catalog(project_a[0].pk)
    yield project_a[0]
    serving_cache_clear()


def test_the_preview_renders_each_variant_with_the_users_real_recommendations(console, recs_shop, project_b):
    from recommendations.serving import ServeFilters, recommendations_for_user
    from tests.recommendations.serving_data import user_write

    project = recs_shop
    pid = user_write(project.pk, "u1", viewed=["p3", "p1"])
    Profile.objects.filter(pk=pid).update(email="ann@example.com", name="Ann Lee")
    campaign = Campaign.objects.create(project=project, name="Spring", channel="email")
    a = Variant.objects.create(
        campaign=campaign,
        name="A",
        share=50,
        content={
            "subject": "Hi {{ user.first_name }} & co",
            "html": "<p>{% for p in recommendations %}{{ p.id }};{% endfor %}</p>",
        },
        recommendations={"limit": 3, "in_stock": True, "max_price": 130},
    )
    # Stored past the form's check (an older template, a raw write): the preview shows the error.
    b = Variant.objects.create(campaign=campaign, name="B", share=50, content={"subject": "x", "html": "{% if %}"})
    url = f"/admin/campaigns/campaign/{campaign.pk}/preview/"

    page = console.get(url, {"profile": "u1"})
    html = page.content.decode()
    assert page.status_code == 200
    served = recommendations_for_user(
        project_id=project.pk, user_id="u1", limit=3, filters=ServeFilters(in_stock=True, price_max=130)
    )
    ids = [p.product_id for p in served.products]
    assert len(ids) == 3
    section_a = re.search(rf'data-variant="{a.pk}">(.*?)</fieldset>', html, re.S).group(1)
    assert '<tr data-key="subject"><th>subject</th><td><pre>Hi Ann &amp; co</pre></td></tr>' in section_a
    assert "<pre>&lt;p&gt;" + "".join(f"{i};" for i in ids) + "&lt;/p&gt;</pre>" in section_a
    assert re.findall(r'<li data-product="([^"]+)">', section_a) == ids
    assert 'sandbox=""' in section_a
    section_b = re.search(rf'data-variant="{b.pk}">(.*?)</fieldset>', html, re.S).group(1)
    assert re.search(r'class="errornote campaign-preview-template-error">Template error: html: ', section_b)
    groups = expected_groups(campaign, [pid], system_control_percent=0)
    expected = "gets variant A" if groups[pid] == a.pk else "gets variant B" if groups[pid] == b.pk else "control"
    assert f'<strong id="campaign-preview-assignment">{expected}' in html

    # By email, the same profile; nobody, another project's user: said so.
    assert console.get(url, {"profile": "ANN@example.com"}).context["preview"].profile.pk == pid
    Profile.objects.create(project=project_b[0], user_id="theirs", email="theirs@example.com")
    for query in ("nobody", "theirs", "theirs@example.com"):
        missing = console.get(url, {"profile": query})
        assert missing.context["preview"] is None
        assert 'id="campaign-preview-error"' in missing.content.decode()
    assert console.get(url, {"profile": "\x00"}).context["error"] == "Not a user id or an email address."


def test_the_sms_preview_shows_its_segment_count(console, project_a):
    project = project_a[0]
    Profile.objects.create(project=project, user_id="u1", phone="+15550001")
    campaign = Campaign.objects.create(project=project, name="Texts", channel="sms")
    short = Variant.objects.create(campaign=campaign, name="A", share=50, content={"text": "Hi {{ user.user_id }}"})
    long = Variant.objects.create(
        campaign=campaign, name="B", share=50, content={"text": "x" * 160 + "{{ user.user_id }}"}
    )
    unicode = Variant.objects.create(campaign=campaign, name="C", share=0, content={"text": "Привет " * 10})
    html = console.get(f"/admin/campaigns/campaign/{campaign.pk}/preview/", {"profile": "u1"}).content.decode()
    counts = dict(re.findall(r'data-variant="(\d+)">.*?campaign-preview-sms-segments">(\d+)<', html, re.S))
    # 5 characters: 1; 162 GSM-7 characters: 2 (past 160, 153 a part); 70 Cyrillic characters: UCS-2, 70 fit in 1.
    assert counts == {str(short.pk): "1", str(long.pk): "2", str(unicode.pk): "1"}


# --- the lifecycle -------------------------------------------------------------------------------------


def test_start_is_refused_with_campaign_validates_findings_naming_the_fields(console, project_a):
    project = project_a[0]
    campaign = Campaign.objects.create(project=project, name="Spring", channel="email", schedule_kind="at")
    Variant.objects.create(campaign=campaign, name="A", share=60, content={"subject": "Hi"})
    page = console.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    problems = re.findall(r'<li data-field="([^"]+)"><a href="([^"]+)"><strong>[^<]+</strong></a>: ([^<]+)</li>', page)
    assert sorted(problems) == [
        ("send_date", "#id_send_date", "required for a send at a date and time"),
        ("send_time", "#id_send_time", "required for a send at a date and time"),
        ("variants", "#variants-group", "shares must add up to 100 (they add up to 60)"),
        ("variants[0].content.html", "#id_variants-0-email_html", "give html or text"),
    ]
    # Each anchor is an element of the page.
    for _, anchor, _ in problems:
        assert f'id="{anchor[1:]}"' in page
    response = console.post(f"/admin/campaigns/campaign/{campaign.pk}/start/", follow=True)
    shown = [str(m) for m in response.context["messages"]]
    assert "variants: shares must add up to 100 (they add up to 60)" in shown
    assert "send_date: required for a send at a date and time" in shown
    campaign.refresh_from_db()
    assert campaign.status == "draft"
    assert CampaignRun.objects.count() == 0


def test_start_pause_resume_and_cancel_through_the_buttons(console, project_a):
    project = project_a[0]
    segment = _segment(project, "Germans", members=3)
    campaign = _campaign(project, segment=segment)
    base = f"/admin/campaigns/campaign/{campaign.pk}"
    page = console.get(f"{base}/change/").content.decode()
    assert re.findall(r'id="campaign-(start|pause|resume|cancel)"', page) == ["start"]
    assert 'id="campaign-problems"' not in page

    started = console.post(f"{base}/start/")
    assert (started.status_code, started["Location"]) == (302, f"{base}/change/")
    campaign.refresh_from_db()
    assert campaign.status == "running"
    assert list(campaign.runs.values_list("occurrence", "status")) == [("now", "planning")]
    again = console.post(f"{base}/start/", follow=True)
    # (after the first start's own message, not shown yet)
    assert [str(m) for m in again.context["messages"]] == [
        "Spring: start done; the campaign is running.",
        "status: only a draft can be started (this one is running)",
    ]

    console.post(f"{base}/pause/")
    campaign.refresh_from_db()
    assert campaign.status == "paused"
    page = console.get(f"{base}/change/").content.decode()
    assert re.findall(r'id="campaign-(start|pause|resume|cancel)"', page) == ["resume", "cancel"]
    console.post(f"{base}/resume/")
    campaign.refresh_from_db()
    assert campaign.status == "running"
    console.post(f"{base}/cancel/")
    campaign.refresh_from_db()
    assert campaign.status == "cancelled"
    assert list(campaign.runs.values_list("status", flat=True)) == ["cancelled"]
    assert (
        re.findall(r'id="campaign-(start|pause|resume|cancel)"', console.get(f"{base}/change/").content.decode()) == []
    )


def test_the_change_page_costs_the_same_queries_for_more_variants_and_runs(
    console, project_a, django_assert_max_num_queries
):
    project = project_a[0]
    campaign = _campaign(project, segment=_segment(project))
    url = f"/admin/campaigns/campaign/{campaign.pk}/change/"
    console.get(url)
    with django_assert_max_num_queries(40) as captured:
        assert console.get(url).status_code == 200
    for i in range(5):
        Variant.objects.create(campaign=campaign, name=f"V{i}", share=0, content={"subject": "s"})
        CampaignRun.objects.create(campaign=campaign, occurrence=f"r{i}", planned_at=ENTERED)
    with django_assert_max_num_queries(len(captured.captured_queries)):
        page = console.get(url)
    assert len(page.context["inline_admin_formsets"][0].formset.forms) == 6
