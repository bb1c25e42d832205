"""The console's campaign report page and its CSV: the exact figures of a small
campaign (the counters fed as tests/campaigns/test_results_report.py feeds
them), the SRM warning, the A/B rule and override, the links to it, and
another project's campaign answering 404."""

from __future__ import annotations

import csv
import io
import re
from html import unescape

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from campaigns.models import ABDecision, Campaign, CampaignRun, CampaignStat, CampaignStatus
from campaigns.results.statistics import two_proportion_z_test, wilson_interval
from catalog.models import Product
from crm.services import membership_add
from tests.campaigns.sending_fixtures import EMAIL, NOW, campaign_make
from tests.campaigns.test_results_report import DAY1, sent_campaign, told  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db


@pytest.fixture
def console(marketer_a) -> Client:
    client = Client()
    client.force_login(marketer_a)
    return client


@pytest.fixture
def console_b(project_b) -> Client:
    user = get_user_model().objects.create_user("bob", "bob@b.example", "pw-bob-12345", is_staff=True)
    membership_add(project_id=project_b[0].pk, user_id=user.pk)
    client = Client()
    client.force_login(user)
    return client


def url(campaign) -> str:
    return f"/admin/campaigns/campaign/{campaign.pk}/report/"


def row_of(html: str, table: str, **attrs: str) -> str:
    """The <tr> of `table` whose data attributes are `attrs`, as text."""
    body = html.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    wanted = "".join(f' data-{k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    match = re.search(rf"<tr{re.escape(wanted)}>(.*?)</tr>", body, re.S)
    assert match, f"no row {attrs} in {table}"
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1))).strip())


def interval(s: int, n: int) -> str:
    low, high = wilson_interval(s, n)
    return f"{s / n * 100:.2f} % ({low * 100:.2f} – {high * 100:.2f} %)"


def test_the_funnel_is_drawn_as_bars_as_wide_as_each_steps_share_of_targeted(console, sent_campaign):  # noqa: F811
    campaign, a, b = sent_campaign
    html = console.get(url(campaign)).content.decode()
    body = html.split('id="report-funnel"', 1)[1].split("</table>", 1)[0]

    def bars(group: str) -> list[int]:
        row = re.search(rf'<tr data-group="{group}">(.*?)</tr>', body, re.S).group(1)
        return [int(w) for w in re.findall(r'<rect width="(\d+)"', row)]

    # Of 80 px: A 40 targeted, 38 sent (95 %), 36 delivered, 20 opened, 10 clicked, 5 converted.
    assert bars(a) == [80, 76, 72, 40, 20, 10]
    # B delivered none: no bar for that step.
    assert bars(b) == [80, 80, 20, 8, 4]
    # Control: targeted (held out) and converted only.
    assert bars("control") == [80, 8]


def test_the_report_page_shows_the_exact_figures(console, sent_campaign):  # noqa: F811
    campaign, a, b = sent_campaign
    with CaptureQueriesContext(connection) as queries:
        response = console.get(url(campaign))
    assert response.status_code == 200
    # Session, user, memberships, the campaign, the report's reads, the variants, permissions:
    # a fixed number whatever the campaign's size (the counters are summed in the report).
    assert len(queries) <= 16
    html = response.content.decode()
    # Funnel: targeted → sent → delivered → opened → clicked → converted, share of targeted after the first.
    assert row_of(html, "report-funnel", group=a) == (
        f"■ A 40 38 95.0 % 36 90.0 % 20 50.0 % 10 25.0 % 5 12.5 % {interval(20, 38)} {interval(10, 38)} "
        f"{interval(5, 38)} 150.5000"
    )
    assert row_of(html, "report-funnel", group=b) == (
        f"■ B 40 40 100.0 % 0 0.0 % 10 25.0 % 4 10.0 % 2 5.0 % {interval(10, 40)} {interval(4, 40)} "
        f"{interval(2, 40)} 40.0000"
    )
    assert row_of(html, "report-funnel", group="control") == (
        f"■ Control (held out) 10 — — — — 1 10.0 % {interval(1, 10)} 10.0000"
    )
    assert row_of(html, "report-funnel", group="all").startswith("■ All variants 80 78 97.5 %")
    # Uplift with the two-sided p-value of the pooled test.
    z, p = two_proportion_z_test(5, 38, 1, 10)
    assert row_of(html, "report-uplift", group=a, against="control") == (
        f"A Control {interval(5, 38)} {interval(1, 10)} {(5 / 38 - 0.1) * 100:+.2f} pp "
        f"{(5 / 38 - 0.1) / 0.1 * 100:+.1f} % {z:.3f} {p:.4f} not significant"
    )
    # The daily chart: one polyline per group with days, each metric its own SVG.
    for metric in ("sent", "clicked", "converted"):
        assert f'data-metric="{metric}"' in html
    assert html.count(f'data-group="{a}"/>') == 3  # A has sends, clicks and conversions on day 1
    assert "<title>A 2026-12-01: 38</title>" in html
    # Products, coverage, diversity.
    assert row_of(html, "report-products", product="p1", group=a, slot="1") == ("p1 Red shoe A 1 38 3 7.89 % 2 99.5000")
    assert "Coverage: 3 distinct products recommended of 4 active (75.00 %)." in html
    assert row_of(html, "report-diversity", group="control") == "Control 1 10 100.0"
    # The decision (the override, newest), no SRM warning on these counts.
    assert "<strong>B</strong> chosen by hand (override)" in html
    assert "by alice" in html
    assert 'id="report-override"' not in html  # decided: no override any more
    assert 'id="report-srm"' not in html


def test_the_csv_has_its_sections_with_exact_figures_and_escaped_cells(console, sent_campaign):  # noqa: F811
    campaign, a, b = sent_campaign
    Product.objects.filter(project_id=campaign.project_id, product_id="p2").update(name="=HYPERLINK(1)")
    campaign.variants.filter(name="B").update(name="@B")
    response = console.get(url(campaign) + "?format=csv")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="campaign-{campaign.pk}-report.csv"'
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    sections = [r[1] for r in rows if r[:1] == ["section"]]
    assert sections == ["groups", "uplift", "days", "products"]
    groups = rows[1 : rows.index([])]
    assert groups[0][:13] == ["group", "name", "targeted", "held_out", "sent", "delivered", "failed", "bounced",
                              "opened", "clicked", "converted", "revenue", "unsubscribed"]  # fmt: skip
    by_group = {r[0]: r for r in groups[1:]}
    assert by_group[a][:13] == [a, "A", "40", "0", "38", "36", "2", "0", "20", "10", "5", "150.5000", "0"]
    low, high = wilson_interval(5, 38)
    assert by_group[a][19:22] == [f"{5 / 38:.6f}", f"{low:.6f}", f"{high:.6f}"]
    assert by_group["control"][:5] == ["control", "Control", "10", "10", "0"]
    assert set(by_group) == {a, b, "control", "system_control", "all"}
    days = [r for r in rows if len(r) == 7 and r[0][:4] == "2026"]
    assert ["2026-12-01", a, "38", "20", "10", "5", "150.5000"] in days
    assert ["2026-12-02", b, "40", "10", "4", "2", "40.0000"] in days
    products = {(r[0], r[2]): r for r in rows if len(r) == 8 and r[0] in ("p1", "p2", "p3")}
    assert products[("p1", a)] == ["p1", "Red shoe", a, "1", "38", "3", "2", "99.5000"]
    assert products[("p2", a)][1] == "'=HYPERLINK(1)"  # a spreadsheet shows it as text
    assert by_group[b][1] == "'@B"
    # Numbers are numbers: a negative uplift is not escaped.
    uplift = {(r[0], r[1]): r for r in rows if len(r) == 7 and r[1] in ("control", "system_control")}
    assert uplift[(b, "control")][2] == f"{2 / 40 - 0.1:.6f}" == "-0.050000"


def test_an_unknown_format_is_a_400_naming_it(console, sent_campaign):  # noqa: F811
    campaign, _, _ = sent_campaign
    response = console.get(url(campaign) + "?format=xlsx")
    assert response.status_code == 400
    assert response.content.decode() == "format: must be html or csv"


def test_another_projects_campaign_is_404(console_b, sent_campaign):  # noqa: F811
    campaign, _, _ = sent_campaign
    assert console_b.get(url(campaign)).status_code == 404
    assert console_b.get(url(campaign) + "?format=csv").status_code == 404
    a = campaign.variants.order_by("pk").first()
    response = console_b.post(f"/admin/campaigns/campaign/{campaign.pk}/ab-override/", {"variant": a.pk})
    assert response.status_code == 404


def test_the_srm_warning_shows_when_the_split_is_off(console, project_a):
    campaign = campaign_make(project_a[0].pk, variants=[("A", 50, EMAIL), ("B", 50, EMAIL)])
    va, vb = campaign.variants.order_by("pk")
    told(campaign, "created", f"variant:{va.pk}", 100, at=DAY1)
    told(campaign, "created", f"variant:{vb.pk}", 40, at=DAY1)
    html = console.get(url(campaign)).content.decode()
    assert 'id="report-srm"' in html
    assert f"Observed: system_control 0, control 0, variant:{va.pk} 100, variant:{vb.pk} 40." in html


def test_the_override_decides_before_the_rule_and_is_refused_after(console, project_a):
    project = project_a[0]
    campaign = campaign_make(
        project.pk, variants=[("A", 50, EMAIL), ("B", 50, EMAIL)], ab_test_percent=20, status=CampaignStatus.RUNNING
    )
    va, vb = campaign.variants.order_by("pk")
    CampaignRun.objects.create(campaign=campaign, occurrence="now", planned_at=NOW, started_at=NOW)
    html = console.get(url(campaign)).content.decode()
    assert "20 % of the audience (after control) get the variants by their shares" in html
    assert "one-sided two-proportion z-test at 95 % confidence, no correction with two variants (p &lt; 0.05)" in html
    assert 'id="report-decision-pending"' in html and 'id="report-override"' in html

    override = f"/admin/campaigns/campaign/{campaign.pk}/ab-override/"
    response = console.post(override, {"variant": "x"})
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "variant must be an integer from 1 to 9223372036854775807, got 'x'"
    ]
    assert not ABDecision.objects.exists()
    response = console.post(override, {"variant": vb.pk})
    assert response.status_code == 302
    decision = ABDecision.objects.get(campaign=campaign)
    assert (decision.outcome, decision.winner_id, decision.decided_by) == ("override", vb.pk, "alice")
    assert CampaignRun.objects.filter(campaign=campaign, occurrence="now:winner").exists()

    response = console.post(override, {"variant": va.pk}, follow=True)
    # The messages of the three posts, shown together on this first page rendered since.
    bad, success, message = [str(m) for m in get_messages(response.wsgi_request)]
    assert bad.startswith("variant must be an integer")
    assert success == "B chosen: the winner run sends it to the held-back profiles."
    assert message.startswith("winner: already decided (override, by alice) and the winner run started at ")
    assert ABDecision.objects.filter(campaign=campaign).count() == 1
    html = response.content.decode()
    assert "<strong>B</strong> chosen by hand (override)" in html
    assert 'id="report-override"' not in html


def test_the_change_page_and_the_list_link_to_the_report(console, project_a):
    campaign = campaign_make(project_a[0].pk)
    change = console.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert f'href="/admin/campaigns/campaign/{campaign.pk}/report/"' in change
    assert "No A/B test: every variant is sent by its share at once." in change
    listing = console.get("/admin/campaigns/campaign/").content.decode()
    assert f'<a href="/admin/campaigns/campaign/{campaign.pk}/report/">report</a>' in listing


def test_the_builder_saves_the_ab_fields_and_names_what_a_start_refuses(console, project_a):
    from tests.campaigns.test_campaign_admin import ADD, _form

    data = _form(
        project_a[0],
        [{"name": "A", "share": 100, "email_subject": "Hi", "email_html": "<p>x</p>"}],
        ab_test_percent=25,
        ab_decision_hours=6,
        ab_metric="open_rate",
        ab_confidence=90,
        ab_min_sample=500,
        ab_fallback="first_variant",
        schedule_kind="triggered",
        trigger_event="Added To Cart",
    )
    response = console.post(ADD, data)
    assert response.status_code == 302
    assert [str(m) for m in get_messages(response.wsgi_request)][0] == (
        "Saved; not ready to start: ab_test_percent: an A/B test needs at least two variants (this campaign has 1); "
        "schedule_kind: an A/B test first needs send now or at a date and time (not triggered or recurring)"
    )
    campaign = Campaign.objects.get()
    assert (
        campaign.ab_test_percent,
        campaign.ab_decision_hours,
        campaign.ab_metric,
        campaign.ab_confidence,
        campaign.ab_min_sample,
        campaign.ab_fallback,
    ) == (25, 6, "open_rate", 90, 500, "first_variant")
    change = console.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert (
        "6 hours after the test started, the variant with the highest open rate wins if every variant has at "
        "least 500 messages sent"
    ) in change
    assert "Otherwise the rest get the first variant." in change
    # Too big a test share: refused by the form, naming the field, nothing saved.
    response = console.post(ADD, {**data, "name": "Too big", "ab_test_percent": 95})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["ab_test_percent"] == [
        "Ensure this value is less than or equal to 90."
    ]


def test_the_srm_check_of_an_ab_test_expects_the_test_share_then_the_winner(console, project_a):
    from campaigns.results.report import campaign_report

    # Control 10 %: buckets [0, 100); the 20 % test share of the rest is [100, 280): A [100, 190), B [190, 280).
    campaign = campaign_make(
        project_a[0].pk, variants=[("A", 50, EMAIL), ("B", 50, EMAIL)], control_percent=10, ab_test_percent=20
    )
    va, vb = campaign.variants.order_by("pk")
    told(campaign, "created", "control", 10, at=DAY1)
    told(campaign, "created", f"variant:{va.pk}", 9, at=DAY1)
    told(campaign, "created", f"variant:{vb.pk}", 9, at=DAY1)
    srm = campaign_report(campaign=campaign).sample_ratio
    assert srm.expected == {
        "system_control": 0.0,
        "control": pytest.approx(28 * 100 / 280),
        f"variant:{va.pk}": pytest.approx(28 * 90 / 280),
        f"variant:{vb.pk}": pytest.approx(28 * 90 / 280),
    }
    assert srm.mismatch is False
    assert 'id="report-srm"' not in console.get(url(campaign)).content.decode()
    # The first variant sent to the rest (fallback): the variants are checked together against control.
    ABDecision.objects.create(
        campaign=campaign, rule={}, figures={"chosen": [va.pk]}, outcome="fallback:first_variant", decided_at=NOW
    )
    told(campaign, "created", f"variant:{va.pk}", 72, at=DAY1)
    srm = campaign_report(campaign=campaign).sample_ratio
    assert srm.observed == {"system_control": 0, "control": 10, "variants": 90}
    assert srm.expected["variants"] == pytest.approx(90.0)
    assert srm.mismatch is False


def test_the_builders_rule_view_words_the_fields_and_names_a_bad_one(console):
    base = {
        "ab_test_percent": "30",
        "ab_decision_hours": "12",
        "ab_metric": "conversion_rate",
        "ab_confidence": "99",
        "ab_min_sample": "200",
        "ab_fallback": "keep_split",
        "variants": "3",
    }
    response = console.get("/admin/campaigns/campaign/ab-rule/", base)
    assert response.status_code == 200
    assert response.json() == {
        "text": "30 % of the audience (after control) get the variants by their shares; the rest wait. "
        "12 hours after the test started, the variant with the highest conversion rate wins if every variant has "
        "at least 200 messages sent and it beats each other variant in a one-sided two-proportion z-test at 99 % "
        "confidence, Bonferroni-corrected for the 2 comparisons (each p < 0.005); the rest then get the winner. "
        "Otherwise the rest get the variants by their shares (keep the split)."
    }
    bad = console.get("/admin/campaigns/campaign/ab-rule/", {**base, "ab_confidence": "100"})
    assert bad.status_code == 400
    assert bad.json() == {"ab_confidence": ["ab_confidence must be an integer from 50 to 99, got '100'"]}
    bad = console.get("/admin/campaigns/campaign/ab-rule/", {**base, "ab_metric": "revenue"})
    assert bad.status_code == 400
    assert bad.json() == {"ab_metric": ["must be one of open_rate, click_rate, conversion_rate"]}


def test_a_started_campaigns_ab_fields_are_fixed(console, project_a):
    from tests.campaigns.test_campaign_admin import _form

    campaign = campaign_make(
        project_a[0].pk,
        variants=[("A", 50, EMAIL), ("B", 50, EMAIL)],
        ab_test_percent=20,
        status=CampaignStatus.PAUSED,
    )
    change = f"/admin/campaigns/campaign/{campaign.pk}/change/"
    html = console.get(change).content.decode()
    assert 'name="ab_test_percent"' not in html  # shown, not editable
    assert 'name="name"' in html  # a paused campaign's other settings still are
    va, vb = campaign.variants.order_by("pk")
    variants = [
        {"id": v.pk, "campaign": campaign.pk, "name": v.name, "share": 50, "email_subject": "Hi", "email_html": "x"}
        for v in (va, vb)
    ]
    data = _form(project_a[0], variants, initial=2, name="Renamed", ab_test_percent=80, ab_min_sample=1)
    response = console.post(change, data)
    assert response.status_code == 302
    campaign.refresh_from_db()
    assert (campaign.name, campaign.ab_test_percent, campaign.ab_min_sample) == ("Renamed", 20, 100)


def test_the_rules_decision_is_shown_with_the_figures_it_saw(console, project_a):
    from campaigns.results import decision as decisions

    campaign = campaign_make(
        project_a[0].pk,
        variants=[("A", 50, EMAIL), ("B", 50, EMAIL)],
        ab_test_percent=20,
        ab_min_sample=10,
        status=CampaignStatus.SCHEDULED,
    )
    va, vb = campaign.variants.order_by("pk")
    CampaignRun.objects.create(campaign=campaign, occurrence="now", planned_at=NOW, started_at=NOW, status="done")
    for v, sent, clicked in ((va, 1000, 100), (vb, 1000, 130)):
        for metric, count in (("sent", sent), ("clicked", clicked)):
            CampaignStat.objects.create(
                campaign=campaign, group=f"variant:{v.pk}", day=NOW.date(), metric=metric, count=count
            )
    decisions.ab_decide(campaign_id=campaign.pk, now=NOW)
    html = console.get(url(campaign)).content.decode()
    assert "<strong>B</strong> won." in html
    assert "(B beats every other variant at p &lt; 0.05)" in html
    p = decisions.rule_apply(
        rule=decisions.Rule.of(campaign),
        counts=[decisions.VariantCount(va.pk, "A", 1000, 100), decisions.VariantCount(vb.pk, "B", 1000, 130)],
    ).figures["comparisons"][str(va.pk)]["p_one_sided"]
    assert row_of(html, "report-decision-figures", variant=va.pk) == (
        f"A 1000 100 {interval(100, 1000)} {p:.4f} beaten (p < 0.0500)"
    )
    assert row_of(html, "report-decision-figures", variant=vb.pk) == f"B 1000 130 {interval(130, 1000)} leader leader"


def test_the_estimate_page_shows_the_held_back_share(console, project_a):
    from campaigns.sending.estimate import campaign_estimate
    from tests.campaigns.test_results_decision import ab_campaign

    campaign, _ = ab_campaign(project_a[0].pk, n=120)
    estimate = console.get(f"/admin/campaigns/campaign/{campaign.pk}/estimate/").content.decode()
    held = campaign_estimate(campaign).held_for_winner
    assert held > 0
    assert row_of(estimate, "estimate-audience", key="held_for_winner") == (
        f"− held back for the A/B winner (sent after the decision) {held}"
    )
