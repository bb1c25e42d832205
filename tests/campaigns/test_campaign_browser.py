"""The campaign builder in a real browser: headless Debian Chromium driven by
Playwright, against a live server, with a real Celery worker on the `sends`
queue and the local provider server. An email campaign with two variants and a
20 % control group is built for a segment, started with its button, and its
messages arrive at the local SendGrid: each member outside the control group
gets the subject of the variant the fan-out assigned, and each member of the
control group is recorded as skipped `control`."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from campaigns.models import Campaign, Segment, SegmentMembership, SegmentStatus
from crm.models import Profile
from delivery.models import ChannelSettings, Message
from localproviders.models import OutboxMessage
from tests.campaigns.assignments import expected_groups
from tests.campaigns.test_segment_browser import CHROMIUM_ARGS
from tests.localproviders.server import (  # noqa: F401 - fixtures
    channel_settings,  # noqa: F811 - the fixture imported above
    local_server,
    local_server_url,
    local_service_account_key,
)

pytestmark = [pytest.mark.browser, pytest.mark.broker]

MEMBERS = 40
SUBJECTS = {"A": "Spring picks, variant A", "B": "Spring picks, variant B"}


def _wait(condition, seconds: float, what) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what()
        time.sleep(0.5)


def test_build_start_and_deliver_an_email_campaign_with_two_variants_and_a_control_group(
    live_server,
    celery_worker_process,
    marketer_a,
    project_a,
    project_b,
    channel_settings,  # noqa: F811 - the fixture imported above
    tmp_path,
    monkeypatch,
):
    from playwright.sync_api import expect, sync_playwright

    # The test reads the database between browser steps, inside Playwright's
    # sync API, which runs an event loop in this thread: Django's guard against
    # ORM calls from async code would refuse them, though they are plain sync calls.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    project = project_a[0]
    ChannelSettings.objects.create(project=project, channel="email", settings=channel_settings["email"])
    profiles = Profile.objects.bulk_create(
        [Profile(project=project, user_id=f"u{i}", email=f"u{i}@example.com") for i in range(MEMBERS)]
    )
    Profile.objects.create(project=project, user_id="outsider", email="outsider@example.com")
    segment = Segment.objects.create(
        project=project, name="Spring buyers", rules={}, status=SegmentStatus.READY, member_count=MEMBERS
    )
    SegmentMembership.objects.bulk_create(
        [SegmentMembership(segment=segment, profile=p, entered_at=p.first_seen) for p in profiles]
    )
    Segment.objects.create(project=project_b[0], name="Their segment", rules={})
    celery_worker_process(queues=["sends"], log_path=str(tmp_path / "sends.log"))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(60_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{live_server.url}/admin/login/?next=/admin/campaigns/campaign/add/")
        page.fill("#id_username", "alice")
        page.fill("#id_password", "pw-alice-123")
        page.click("input[type=submit]")
        page.wait_for_url("**/admin/campaigns/campaign/add/")

        page.select_option("#id_project", str(project.pk))
        page.fill("#id_name", "Spring sale")
        page.select_option("#id_channel", "email")
        assert page.locator("#id_segment option", has_text="Their segment").count() == 0
        page.select_option("#id_segment", str(segment.pk))
        expect(page.locator("#campaign-audience-count")).to_have_text(f"{MEMBERS} profiles")
        page.fill("#id_control_percent", "20")
        page.select_option("#id_schedule_kind", "now")
        expect(page.locator(".form-row.field-send_date")).to_be_hidden()
        # Only the email templates are shown.
        expect(page.locator("fieldset.channel-sms").first).to_be_hidden()
        expect(page.locator("#id_variants-0-email_subject")).to_be_visible()

        page.fill("#id_variants-0-name", "A")
        page.fill("#id_variants-0-share", "50")
        page.fill("#id_variants-0-email_subject", SUBJECTS["A"])
        page.fill("#id_variants-0-email_html", "<p>Hello {{ user.email }}</p>")
        page.fill("#id_variants-0-email_text", "Hello {{ user.email }}")
        page.click("#variants-group .add-row a")
        expect(page.locator("#id_variants-1-email_subject")).to_be_visible()
        expect(page.locator("#variants-1 fieldset.channel-push")).to_be_hidden()
        page.fill("#id_variants-1-name", "B")
        page.fill("#id_variants-1-share", "50")
        page.fill("#id_variants-1-email_subject", SUBJECTS["B"])
        page.fill("#id_variants-1-email_html", "<p>Hi {{ user.email }}</p>")
        page.fill("#id_variants-1-email_text", "Hi {{ user.email }}")
        page.click("input[name=_continue]")
        page.wait_for_url("**/admin/campaigns/campaign/*/change/")
        expect(page.locator("#campaign-problems")).to_have_count(0)

        campaign = Campaign.objects.get(project=project, name="Spring sale")
        assert [(v.name, v.share) for v in campaign.variants.order_by("pk")] == [("A", 50), ("B", 50)]
        groups = expected_groups(campaign, [p.pk for p in profiles], system_control_percent=0)
        control = sorted(pid for pid, g in groups.items() if g == "control")
        sent = MEMBERS - len(control)
        assert 0 < len(control) < MEMBERS

        page.click("#campaign-start")
        page.wait_for_url("**/admin/campaigns/campaign/*/change/")
        expect(page.locator("#campaign-status")).not_to_have_text("Draft")

        _wait(
            lambda: OutboxMessage.objects.filter(provider="sendgrid").count() >= sent,
            90,
            lambda: (
                f"{OutboxMessage.objects.filter(provider='sendgrid').count()} of {sent} emails at the provider; "
                f"messages {Counter(Message.objects.values_list('state', 'skip_reason'))}; "
                f"worker log: {(tmp_path / 'sends.log').read_text()[-3000:]}"
            ),
        )
        # The change page shows the run and the messages by state, linked to the delivery console.
        _wait(
            lambda: Message.objects.filter(source=campaign.source, state="sent").count() == sent,
            30,
            lambda: f"{Counter(Message.objects.values_list('state', 'skip_reason'))}",
        )
        page.reload()
        expect(page.locator("#campaign-runs tbody tr[data-run]")).to_have_count(1)
        control_row = page.locator('#campaign-message-counts tr[data-state="skipped"][data-reason="control"]')
        expect(control_row.locator("a")).to_have_text(str(len(control)))
        expect(page.locator('#campaign-message-counts tr[data-state="sent"] a')).to_have_text(str(sent))
        control_row.locator("a").click()
        page.wait_for_url("**/admin/delivery/message/**")
        expect(page.locator("#result_list tbody tr")).to_have_count(len(control))
        assert errors == []
        browser.close()

    variant_name = {v.pk: v.name for v in campaign.variants.all()}
    email_of = {p.pk: p.email for p in profiles}
    expected = {email_of[pid]: SUBJECTS[variant_name[g]] for pid, g in groups.items() if g != "control"}
    rows = list(OutboxMessage.objects.filter(provider="sendgrid"))
    assert {r.recipient: r.subject for r in rows} == expected
    assert len(rows) == sent  # each once
    assert set(expected.values()) == set(SUBJECTS.values())
    assert "outsider@example.com" not in {r.recipient for r in rows}
    skipped = Message.objects.filter(source=campaign.source, state="skipped", skip_reason="control")
    assert sorted(skipped.values_list("profile_id", flat=True)) == control
