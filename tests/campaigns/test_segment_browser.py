"""The segment builder in a real browser: headless Debian Chromium driven by
Playwright, against a live server, with a real Celery worker on the segments
queue (saving queues the full computation). Two conditions in an `all` group
are built row by row, previewed (the exact count, reach per channel and the
sample), saved; the segment is in the list, and once the worker has computed
it, so are its two members."""

from __future__ import annotations

import json
import time

import pytest

from campaigns.models import Segment
from campaigns.segments.rules import rules_label, rules_parse
from tests.campaigns.test_segment_api import audience

pytestmark = [pytest.mark.browser, pytest.mark.broker]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Every kind of condition the builder draws; opened in the builder, it must come back unchanged.
EVERY_KIND = {
    "all": [
        {"profile": "traits.plan", "op": "in", "value": ["pro", "team"]},
        {"profile": "last_seen", "op": "within_last", "value": {"days": 7}},
        {"profile": "age", "op": "between", "value": [18, 30]},
        {"profile": "email_subscribed", "op": "eq", "value": False},
        {"device": [{"field": "platform", "op": "eq", "value": "ios"}, {"field": "push_token", "op": "exists"}]},
        {
            "event": "Order Completed",
            "where": [{"property": "price", "op": "gt", "value": 50}],
            "count": {"op": "eq", "value": 2},
            "window": {"between": ["2026-01-01", "2026-02-01"]},
            "aggregate": {"fn": "sum", "property": "price", "op": "gt", "value": 100},
            "last": {"op": "within_last", "value": {"days": 3}},
        },
        {"event": "App Opened", "did": False, "window": {"last_days": 30}},
        {"recent_item": "purchased", "category": "Shoes"},
        {"bucket": {"op": "between", "value": [0, 99]}},
        {"not": {"any": [{"profile": "country", "op": "eq", "value": "FR"}, {"profile": "city", "op": "exists"}]}},
        {"not": {"profile": "country", "op": "eq", "value": "IT"}},
    ]
}
BUILT = {
    "all": [
        {"profile": "country", "op": "eq", "value": "DE"},
        {"event": "Product Viewed", "count": {"op": "gte", "value": 3}, "window": {"last_days": 7}},
    ]
}


def test_build_preview_and_save_a_segment_in_chromium(
    live_server, celery_worker_process, marketer_a, project_a, project_b
):
    from playwright.sync_api import expect, sync_playwright

    project = project_a[0]
    profiles = audience(project.pk)
    audience(project_b[0].pk, prefix="b-")  # another project's people: never counted
    celery_worker_process(queues=["segments"])
    # Stored as it is (not through segment_save: nothing to compute), for the builder to open.
    every = Segment.objects.create(project=project, name="Every kind", rules=EVERY_KIND)
    tree = rules_parse(BUILT, project_id=project.pk)
    labels = [rules_label(tree), *(rules_label(c) for c in tree.children)]

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(60_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{live_server.url}/admin/login/?next=/admin/campaigns/segment/add/")
        page.fill("#id_username", "alice")
        page.fill("#id_password", "pw-alice-123")
        page.click("input[type=submit]")
        page.wait_for_url("**/admin/campaigns/segment/add/")

        page.select_option("#id_project", str(project.pk))
        page.fill("#id_name", "Active Germans")
        add = page.locator("#builder-tree > .builder-group > .builder-row > .builder-add-condition")
        add.click()
        first = page.locator(".builder-condition").nth(0)
        expect(first.locator(".builder-field")).to_have_value("country")
        first.locator(".builder-op").select_option("eq")
        first.locator(".builder-value-text").fill("DE")

        add.click()
        second = page.locator(".builder-condition").nth(1)
        second.locator(".builder-kind").select_option("event")
        second.locator(".builder-event-name").fill("Product Viewed")
        second.locator(".builder-count-op").select_option("gte")
        second.locator(".builder-count").fill("3")
        second.locator(".builder-window").select_option("last_days")
        second.locator(".builder-window-days").fill("7")
        expect(page.locator(".builder-condition")).to_have_count(2)
        assert page.locator("#builder-tree .builder-mode").first.input_value() == "all"

        # The hidden field and the JSON view hold the same tree.
        assert json.loads(page.locator("#id_rules").input_value()) == BUILT
        page.click("#builder-json-toggle")
        expect(page.locator("#builder-json-text")).to_be_visible()
        assert json.loads(page.locator("#builder-json-text").input_value()) == BUILT

        page.click("#builder-preview")
        expect(page.locator("#preview-count")).to_have_text("2")
        expect(page.locator("#preview-email")).to_have_text("2")
        expect(page.locator("#preview-push")).to_have_text("1")
        expect(page.locator("#preview-sms")).to_have_text("1")
        sample = page.locator("#preview-sample tbody tr")
        expect(sample).to_have_count(2)
        assert [sample.nth(i).locator("td").first.inner_text() for i in range(2)] == ["u1", "u4"]
        assert [sample.nth(i).locator("td").nth(1).inner_text() for i in range(2)] == [
            profiles["u1"].email,
            profiles["u4"].email,
        ]
        # The tree, then each condition: all met by both.
        assert sample.nth(0).locator("li").all_inner_texts() == ["✓ " + label for label in labels]
        assert sample.nth(1).locator("li.met").count() == 3

        page.click("input[name=_save]")
        page.wait_for_url("**/admin/campaigns/segment/")
        row = page.locator("#result_list tbody tr", has_text="Active Germans")
        expect(row).to_have_count(1)
        # The worker computes the members in the background (after the
        # dependencies cache's few seconds); the list shows them on a reload.
        deadline = time.monotonic() + 60
        while "2 members" not in row.inner_text() and time.monotonic() < deadline:
            time.sleep(1)
            page.reload()
        expect(row.locator(".segment-members-link")).to_have_text("2 members")
        row.locator(".segment-members-link").click()
        expect(page.locator("#members-table tbody tr")).to_have_count(2)
        assert page.locator("#members-table tbody tr td:nth-child(2)").all_inner_texts() == ["u1", "u4"]

        # Opened again, the builder shows the saved tree and leaves it as it was,
        # for every kind of condition it draws.
        page.go_back()
        page.click("#result_list a:text-is('Active Germans')")
        page.wait_for_url("**/admin/campaigns/segment/*/change/")
        expect(page.locator(".builder-condition")).to_have_count(2)
        assert json.loads(page.locator("#id_rules").input_value()) == BUILT
        page.goto(f"{live_server.url}/admin/campaigns/segment/{every.pk}/change/")
        expect(page.locator(".builder-condition")).to_have_count(12)
        assert json.loads(page.locator("#id_rules").input_value()) == EVERY_KIND
        assert errors == []
        browser.close()

    segment = Segment.objects.get(project=project, name="Active Germans")
    assert (segment.name, segment.rules) == ("Active Germans", BUILT)
