"""The campaign report in a real browser (headless Chromium driven by Playwright)
against a live server, after a campaign was sent, clicked and converted in the
test through the real path: started by its service, fanned out and sent by a
real Celery worker on the `sends` queue to the local SendGrid, clicked through
its signed tracked links (/t/c/), converted by orders posted to the collector
and stored by the same worker on the `ingest` queue (the stored-events hook
credits them). The page shows the exact figures the counters hold."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from campaigns.models import CampaignStat, CampaignStatus, Segment, SegmentMembership, SegmentStatus
from campaigns.results.statistics import wilson_interval
from campaigns.sending.lifecycle import campaign_start
from crm.models import Profile
from delivery.models import ChannelSettings, Message
from tests.campaigns.assignments import expected_groups
from tests.campaigns.sending_fixtures import campaign_make
from tests.campaigns.test_segment_browser import CHROMIUM_ARGS
from tests.conftest import basic_header
from tests.localproviders.server import (  # noqa: F401 - fixtures
    channel_settings,  # noqa: F811 - the fixture imported above
    local_server,
    local_server_url,
    local_service_account_key,
)

pytestmark = [pytest.mark.browser, pytest.mark.broker]

MEMBERS = 30
ORDER = "Order Completed"


def _content(name: str) -> dict[str, str]:
    return {
        "subject": f"Spring, variant {name}",
        "html": f'<p>Hi {{{{ user.email }}}}</p><a href="https://shop.example/spring?v={name}">Shop</a>',
        "text": "Hi",
    }


def _wait(condition, seconds: float, what) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what()
        time.sleep(0.5)


def _interval(s: int, n: int) -> str:
    low, high = wilson_interval(s, n)
    return f"{s / n * 100:.2f} % ({low * 100:.2f} – {high * 100:.2f} %)"


def _stat(campaign, group: str, metric: str) -> int:
    return sum(
        CampaignStat.objects.filter(campaign=campaign, group=group, metric=metric).values_list("count", flat=True)
    )


def test_the_report_of_a_sent_clicked_and_converted_campaign_shows_its_figures(
    live_server,
    celery_worker_process,
    marketer_a,
    project_a,
    channel_settings,  # noqa: F811 - the fixture imported above
    tmp_path,
    monkeypatch,
):
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM reads between browser steps (see the builder test)
    project, keys = project_a
    ChannelSettings.objects.create(project=project, channel="email", settings=channel_settings["email"])
    profiles = Profile.objects.bulk_create(
        [Profile(project=project, user_id=f"u{i}", email=f"u{i}@example.com") for i in range(MEMBERS)]
    )
    segment = Segment.objects.create(
        project=project, name="Spring buyers", rules={}, status=SegmentStatus.READY, member_count=MEMBERS
    )
    SegmentMembership.objects.bulk_create(
        [SegmentMembership(segment=segment, profile=p, entered_at=p.first_seen) for p in profiles]
    )
    campaign = campaign_make(
        project.pk,
        segment=segment,
        variants=[("A", 50, _content("A")), ("B", 50, _content("B"))],
        control_percent=20,
        goal_event=ORDER,
        status=CampaignStatus.DRAFT,
    )
    va, vb = campaign.variants.order_by("pk")
    groups = expected_groups(campaign, [p.pk for p in profiles], system_control_percent=0)
    of_a = sorted(pid for pid, g in groups.items() if g == va.pk)
    of_b = sorted(pid for pid, g in groups.items() if g == vb.pk)
    control = sorted(pid for pid, g in groups.items() if g == "control")
    assert len(of_a) >= 3 and len(of_b) >= 1 and len(control) >= 1
    user_of = {p.pk: p.user_id for p in profiles}
    log = tmp_path / "worker.log"
    celery_worker_process(queues=["sends", "ingest"], log_path=str(log))

    campaign_start(campaign_id=campaign.pk)
    sent = len(of_a) + len(of_b)
    _wait(
        lambda: (
            Message.objects.filter(source=campaign.source, state="sent").count() == sent
            and _stat(campaign, f"variant:{va.pk}", "sent") + _stat(campaign, f"variant:{vb.pk}", "sent") == sent
        ),
        90,
        lambda: f"{Counter(Message.objects.values_list('state', 'skip_reason'))}; log: {log.read_text()[-3000:]}",
    )

    # Three of A's recipients and one of B's click their message's tracked link.
    clicker = Client()
    clickers = of_a[:3] + of_b[:1]
    for pid in clickers:
        html = Message.objects.get(source=campaign.source, profile_id=pid).content["html"]
        [link] = re.findall(r'href="[^"]*(/t/c/[^"]+)"', html)
        response = clicker.get(link.replace("&amp;", "&"))
        assert response.status_code == 302
        assert response["Location"].startswith("https://shop.example/spring")
    # Two of A's clickers and one control profile order (the control converts from when it was held out).
    now = timezone.now()
    buyers = [(of_a[0], "30.00"), (of_a[1], "12.50"), (control[0], "20")]
    batch = [
        {"type": "track", "userId": user_of[pid], "event": ORDER, "messageId": f"order-{pid}",
         "timestamp": now.isoformat(), "properties": {"revenue": revenue}}
        for pid, revenue in buyers
    ]  # fmt: skip
    response = Client().generic(
        "POST",
        "/v1/batch",
        json.dumps({"batch": batch}),
        content_type="application/json",
        HTTP_AUTHORIZATION=basic_header(keys.write_key),
    )
    assert response.status_code == 200, response.content
    _wait(
        lambda: _stat(campaign, f"variant:{va.pk}", "converted") == 2 and _stat(campaign, "control", "converted") == 1,
        60,
        lambda: (
            f"{list(CampaignStat.objects.filter(campaign=campaign).values_list('group', 'metric', 'count'))}; "
            f"log: {log.read_text()[-3000:]}"
        ),
    )

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(60_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        report = f"/admin/campaigns/campaign/{campaign.pk}/report/"
        page.goto(f"{live_server.url}/admin/login/?next={report}")
        page.fill("#id_username", "alice")
        page.fill("#id_password", "pw-alice-123")
        page.click("input[type=submit]")
        page.wait_for_url(f"**{report}")

        a_row = page.locator(f'#report-funnel tr[data-group="variant:{va.pk}"]')
        n_a = len(of_a)
        expect(a_row.locator('td[data-step="targeted"] .report-count')).to_have_text(str(n_a))
        expect(a_row.locator('td[data-step="sent"] .report-count')).to_have_text(str(n_a))
        expect(a_row.locator('td[data-step="opened"] .report-count')).to_have_text("3")  # a click implies the open
        expect(a_row.locator('td[data-step="clicked"] .report-count')).to_have_text("3")
        expect(a_row.locator('td[data-step="converted"] .report-count')).to_have_text("2")
        expect(a_row.locator('td[data-rate="click"]')).to_have_text(_interval(3, n_a))
        expect(a_row.locator('td[data-rate="conversion"]')).to_have_text(_interval(2, n_a))
        expect(a_row.locator('td[data-rate="revenue"]')).to_have_text(str(Decimal("42.5000")))
        b_row = page.locator(f'#report-funnel tr[data-group="variant:{vb.pk}"]')
        expect(b_row.locator('td[data-step="sent"] .report-count')).to_have_text(str(len(of_b)))
        expect(b_row.locator('td[data-step="clicked"] .report-count')).to_have_text("1")
        expect(b_row.locator('td[data-step="converted"] .report-count')).to_have_text("0")
        c_row = page.locator('#report-funnel tr[data-group="control"]')
        expect(c_row.locator('td[data-step="targeted"] .report-count')).to_have_text(str(len(control)))
        expect(c_row.locator('td[data-step="converted"] .report-count')).to_have_text("1")
        expect(c_row.locator('td[data-rate="conversion"]')).to_have_text(_interval(1, len(control)))
        all_row = page.locator('#report-funnel tr[data-group="all"]')
        expect(all_row.locator('td[data-step="sent"] .report-count')).to_have_text(str(sent))
        expect(all_row.locator('td[data-step="clicked"] .report-count')).to_have_text("4")
        # The chart of today's sends, clicks and conversions, a line per group.
        expect(page.locator("#report-charts svg.report-chart")).to_have_count(3)
        expect(page.locator(f'svg[data-metric="clicked"] polyline[data-group="variant:{va.pk}"]')).to_have_count(1)
        # The uplift of A against the control group, and the CSV link.
        uplift = page.locator(f'#report-uplift tr[data-group="variant:{va.pk}"][data-against="control"]')
        absolute = (2 / n_a - 1 / len(control)) * 100
        expect(uplift.locator('td[data-col="absolute"]')).to_have_text(f"{absolute:+.2f} pp")
        expect(page.locator("#report-csv")).to_have_attribute("href", f"{report}?format=csv")
        assert errors == []
        browser.close()


def test_the_builder_words_the_ab_rule_as_its_fields_change(live_server, marketer_a, project_a, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{live_server.url}/admin/login/?next=/admin/campaigns/campaign/add/")
        page.fill("#id_username", "alice")
        page.fill("#id_password", "pw-alice-123")
        page.click("input[type=submit]")
        page.wait_for_url("**/admin/campaigns/campaign/add/")
        rule = page.locator(".form-row.field-ab_rule .readonly")
        expect(rule).to_have_text("No A/B test: every variant is sent by its share at once.")
        page.fill("#id_ab_test_percent", "20")
        page.dispatch_event("#id_ab_test_percent", "change")
        page.fill("#id_ab_confidence", "90")
        page.dispatch_event("#id_ab_confidence", "change")
        page.select_option("#id_ab_fallback", "first_variant")
        expect(rule).to_contain_text("20 % of the audience (after control) get the variants by their shares")
        expect(rule).to_contain_text("at 90 % confidence")
        expect(rule).to_contain_text("Otherwise the rest get the first variant.")
        page.fill("#id_ab_confidence", "100")
        page.dispatch_event("#id_ab_confidence", "change")
        expect(rule).to_have_text("ab_confidence: ab_confidence must be an integer from 50 to 99, got '100'")
        assert errors == []
        browser.close()
