"""The segment console: the changelist (counts, size chart, bounded queries), the
change form with the builder (rules errors naming paths, saving through
segment_save), the preview view (staff session, CSRF, the marketer's projects
only), the members page and the profile page's "Segments" section."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from html import unescape as html_unescape

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from campaigns.models import Segment, SegmentMembership, SegmentSize, SegmentStatus
from campaigns.segments import rules
from campaigns.segments.catalogue import segment_rule_catalogue
from crm.models import Profile
from crm.services import membership_add
from tests.campaigns.test_segment_api import RULES, audience

pytestmark = pytest.mark.django_db

PREVIEW = "/admin/campaigns/segment/preview/"


@pytest.fixture
def console(marketer_a) -> Client:
    client = Client()
    client.force_login(marketer_a)
    return client


def _segment(project_id: int, name: str = "Germans", **kwargs) -> Segment:  # noqa: ANN003
    return Segment.objects.create(project_id=project_id, name=name, rules=kwargs.pop("rules", RULES), **kwargs)


# --- changelist -------------------------------------------------------------------


def test_changelist_shows_counts_status_progress_and_a_size_chart_in_bounded_queries(
    console, project_a, project_b, django_assert_max_num_queries
):
    now = timezone.now()
    segments = []
    for i in range(6):
        s = _segment(project_a[0].pk, f"S{i}", member_count=10 + i, status=SegmentStatus.COMPUTING, progress=0.25)
        SegmentSize.objects.bulk_create(
            [SegmentSize(segment=s, at=now - timedelta(days=d), members=100 * i + d) for d in (3, 2, 1)]
        )
        segments.append(s)
    SegmentSize.objects.create(segment=segments[0], at=now - timedelta(days=40), members=999)  # outside the chart
    _segment(project_b[0].pk, "Theirs")
    console.get("/admin/campaigns/segment/")  # warm the session and content types
    with django_assert_max_num_queries(12) as captured:
        page = console.get("/admin/campaigns/segment/")
    six_queries = len(captured.captured_queries)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Theirs" not in html
    assert html.count('<svg class="segment-chart"') == 6
    assert "<title>3 → 1 members</title>" in html  # S0: 3, 2, 1 (the 40-day-old size left out)
    assert "<title>103 → 101 members</title>" in html
    assert html.count(">25%<") == 6
    assert f'href="/admin/campaigns/segment/{segments[5].pk}/members/" class="segment-members-link">15 members' in html
    # One more page of segments costs no more queries (no query per row).
    for i in range(6, 12):
        s = _segment(project_a[0].pk, f"S{i}")
        SegmentSize.objects.create(segment=s, at=now, members=1)
    with django_assert_max_num_queries(six_queries):
        assert console.get("/admin/campaigns/segment/").status_code == 200


def test_another_projects_segment_pages_are_closed(console, project_b):
    theirs = _segment(project_b[0].pk, "Theirs")
    for url in (f"/admin/campaigns/segment/{theirs.pk}/change/", f"/admin/campaigns/segment/{theirs.pk}/members/"):
        response = console.get(url)
        assert response.status_code in (302, 404)
        assert b"Theirs" not in response.content
    response = console.post(
        f"/admin/campaigns/segment/{theirs.pk}/change/",
        {"name": "Mine now", "description": "", "rules": json.dumps(RULES)},
    )
    assert response.status_code in (302, 404)
    theirs.refresh_from_db()
    assert theirs.name == "Theirs"


# --- change form ---------------------------------------------------------------------


def test_add_form_carries_the_builder_its_catalogue_and_no_inline_script(console, project_a):
    _segment(project_a[0].pk, "Buyers")
    page = console.get("/admin/campaigns/segment/add/")
    html = page.content.decode()
    assert page.status_code == 200
    assert '<script src="/static/campaigns/segment_builder.js"></script>' in html
    assert 'id="segment-builder"' in html
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None  # no inline script anywhere
    assert " style=" not in html
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'; script-src 'self'")
    catalogue = json.loads(html_unescape(re.search(r'data-catalogue="([^"]*)"', html).group(1)))
    assert catalogue == json.loads(json.dumps(segment_rule_catalogue()))
    segments = json.loads(html_unescape(re.search(r'data-segments="([^"]*)"', html).group(1)))
    assert [s["name"] for s in segments] == ["Buyers"]


def test_saving_goes_through_the_service(console, project_a):
    response = console.post(
        "/admin/campaigns/segment/add/",
        {"project": project_a[0].pk, "name": "Active Germans", "description": "", "rules": json.dumps(RULES)},
    )
    assert response.status_code == 302
    segment = Segment.objects.get()
    assert (segment.name, segment.rules, segment.status, segment.rules_version) == (
        "Active Germans",
        RULES,
        "pending",
        1,
    )
    assert segment.dependencies["event_names"] == ["Product Viewed"]
    edited = console.post(
        f"/admin/campaigns/segment/{segment.pk}/change/",
        {"name": "Germans", "description": "", "rules": json.dumps({"profile": "country", "op": "eq", "value": "DE"})},
    )
    assert edited.status_code == 302
    segment.refresh_from_db()
    assert (segment.name, segment.rules_version, segment.project_id) == ("Germans", 2, project_a[0].pk)


def test_bad_rules_are_form_errors_naming_paths_and_save_nothing(console, project_a):
    rules = {"all": [RULES, {"event": "Order Completed", "count": {"op": "gte", "value": -1}}]}
    response = console.post(
        "/admin/campaigns/segment/add/",
        {"project": project_a[0].pk, "name": "Bad", "description": "", "rules": json.dumps(rules)},
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"rules": ["rules.all[1].count.value: must be >= 0"]}
    assert 'id="rules-errors"' in response.content.decode()
    not_json = console.post(
        "/admin/campaigns/segment/add/", {"project": project_a[0].pk, "name": "Bad", "rules": "{not json"}
    )
    assert list(not_json.context["adminform"].form.errors) == ["rules"]
    assert Segment.objects.count() == 0


def test_the_project_choice_is_the_marketers_own(console, project_a, project_b):
    response = console.post(
        "/admin/campaigns/segment/add/",
        {"project": project_b[0].pk, "name": "Theirs", "description": "", "rules": json.dumps(RULES)},
    )
    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["project"]
    assert Segment.objects.count() == 0


# --- preview ----------------------------------------------------------------------------


def _preview(client: Client, body: object) -> tuple[int, dict]:
    response = client.post(PREVIEW, json.dumps(body), content_type="application/json")
    return response.status_code, response.json() if response["Content-Type"] == "application/json" else {}


def test_preview_answers_the_count_reach_and_sample_for_the_marketers_project(console, project_a, project_b):
    p = audience(project_a[0].pk)
    audience(project_b[0].pk, prefix="b-")
    status, body = _preview(console, {"project": project_a[0].pk, "rules": RULES})
    assert status == 200
    assert (body["count"], body["reachable"]) == (2, {"email": 2, "push": 1, "sms": 1})
    assert [s["profile_id"] for s in body["sample"]] == [p["u1"].pk, p["u4"].pk]
    assert [c["met"] for c in body["sample"][0]["conditions"]] == [True, True, True]


def test_preview_of_another_project_is_404(console, project_b):
    audience(project_b[0].pk)
    status, _ = _preview(console, {"project": project_b[0].pk, "rules": RULES})
    assert status == 404


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"rules": RULES}, {"project": ["choose a project"]}),
        (
            {"project": "x", "rules": RULES},
            {"project": ["project must be an integer from 1 to 9223372036854775807, got 'x'"]},
        ),
        ([1], {"body": ["must be a JSON object"]}),
    ],
)
def test_preview_bad_bodies_are_400s_naming_the_field(console, project_a, body, expected):
    assert _preview(console, body) == (400, expected)


def test_preview_bad_rules_are_400_naming_the_path(console, project_a):
    status, body = _preview(
        console, {"project": project_a[0].pk, "rules": {"any": [{"event": "X", "count": {"op": "gte", "value": -1}}]}}
    )
    assert (status, body) == (400, {"rules": ["rules.any[0].count.value: must be >= 0"]})


def test_preview_needs_a_staff_session_and_the_csrf_token(project_a, marketer_a):
    anonymous = Client()
    response = anonymous.post(
        PREVIEW, json.dumps({"project": project_a[0].pk, "rules": RULES}), content_type="application/json"
    )
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    checked = Client(enforce_csrf_checks=True)
    checked.force_login(marketer_a)
    refused = checked.post(
        PREVIEW, json.dumps({"project": project_a[0].pk, "rules": RULES}), content_type="application/json"
    )
    assert refused.status_code == 403
    page = checked.get("/admin/campaigns/segment/add/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    accepted = checked.post(
        PREVIEW,
        json.dumps({"project": project_a[0].pk, "rules": RULES}),
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert (accepted.status_code, accepted.json()["count"]) == (200, 0)
    assert checked.get(PREVIEW).status_code == 405


def test_a_staff_user_of_no_project_gets_no_preview(project_a):
    user = get_user_model().objects.create_user("bob", "bob@b.example", "pw-bob-12345", is_staff=True)
    client = Client()
    client.force_login(user)
    status, _ = _preview(client, {"project": project_a[0].pk, "rules": RULES})
    assert status == 404


# --- members page -------------------------------------------------------------------------


def test_members_page_links_each_profile_in_pages(console, project_a, django_assert_max_num_queries):
    project_id = project_a[0].pk
    segment = _segment(project_id, member_count=120)
    profiles = Profile.objects.bulk_create([Profile(project_id=project_id, user_id=f"m{i:03d}") for i in range(120)])
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    SegmentMembership.objects.bulk_create(
        [SegmentMembership(segment=segment, profile=p, entered_at=at) for p in profiles]
    )
    url = f"/admin/campaigns/segment/{segment.pk}/members/"
    console.get(url)
    with django_assert_max_num_queries(8):
        page = console.get(url)
    html = page.content.decode()
    assert html.count('<tr><td><a href="/admin/crm/profile/') == 100
    first = profiles[0].pk
    assert (
        f'<a href="/admin/crm/profile/{first}/change/">#{first}</a></td><td>m000</td><td>2026-03-01 12:00:00</td>'
        in html
    )
    assert f'href="?after={profiles[99].pk}"' in html
    rest = console.get(f"{url}?after={profiles[99].pk}").content.decode()
    assert rest.count('<tr><td><a href="/admin/crm/profile/') == 20
    assert "m119" in rest and "m099" not in rest and 'id="members-next"' not in rest
    assert console.get(f"{url}?after=abc").status_code == 404
    change = console.get(f"/admin/campaigns/segment/{segment.pk}/change/").content.decode()
    assert f'href="{url}" class="segment-members-link">120 members</a>' in change


# --- the profile page ------------------------------------------------------------------------


def test_profile_page_lists_its_segments_and_why_for_the_chosen_one(console, project_a, project_b):
    project_id = project_a[0].pk
    p = audience(project_id)
    germans = _segment(project_id, "Active Germans")
    french = _segment(project_id, "French", rules={"profile": "country", "op": "eq", "value": "FR"})
    _segment(project_b[0].pk, "Theirs")
    SegmentMembership.objects.create(segment=germans, profile=p["u1"], entered_at=datetime(2026, 3, 1, tzinfo=UTC))
    url = f"/admin/crm/profile/{p['u1'].pk}/change/"
    html = console.get(url).content.decode()
    assert 'id="profile-segments"' in html
    assert "Theirs" not in html
    rows = re.findall(r'<tr data-segment="(\d+)">\s*<td>([^<]+)</td>\s*<td>([^<]+)</td>', html)
    assert rows == [
        (str(germans.pk), "Active Germans", "yes, since 2026-03-01 00:00"),
        (str(french.pk), "French", "no"),
    ]
    assert 'id="profile-segment-why"' not in html

    why = console.get(f"{url}?segment={germans.pk}").content.decode()
    assert "Active Germans: in it" in why
    assert re.findall(r'<li class="(met|not-met)" data-path="([^"]+)">', why) == [
        ("met", "rules"),
        ("met", "rules.all[0]"),
        ("met", "rules.all[1]"),
    ]
    why_not = console.get(f"{url}?segment={french.pk}").content.decode()
    assert "French: not in it" in why_not
    assert re.findall(r'<li class="(met|not-met)" data-path="([^"]+)">', why_not) == [("not-met", "rules")]


def test_profile_page_refuses_another_projects_segment_and_bad_ids(console, project_a, project_b):
    profile = Profile.objects.create(project_id=project_a[0].pk, user_id="alice")
    theirs = _segment(project_b[0].pk, "Theirs")
    url = f"/admin/crm/profile/{profile.pk}/change/"
    for raw in (str(theirs.pk), "abc", "0"):
        page = console.get(f"{url}?segment={raw}")
        assert page.status_code == 200
        html = page.content.decode()
        assert 'id="profile-segment-error"' in html
        assert "Theirs" not in html


def test_a_marketer_of_two_projects_sees_only_the_profiles_project_segments(marketer_a, project_a, project_b):
    membership_add(project_id=project_b[0].pk, user_id=marketer_a.pk)
    client = Client()
    client.force_login(marketer_a)
    profile = Profile.objects.create(project_id=project_b[0].pk, user_id="bee")
    _segment(project_a[0].pk, "A's")
    _segment(project_b[0].pk, "B's")
    html = client.get(f"/admin/crm/profile/{profile.pk}/change/").content.decode()
    assert "B&#x27;s" in html and "A&#x27;s" not in html


def test_deleting_lists_the_segments_that_refer_to_it_and_refuses(console, project_a):
    from campaigns.segments.membership import segment_save

    project_id = project_a[0].pk
    germans = segment_save(project_id=project_id, name="Germans", rules=RULES)
    segment_save(project_id=project_id, name="Outsiders", rules={"segment": germans.pk, "member": False})
    page = console.get(f"/admin/campaigns/segment/{germans.pk}/delete/")
    assert page.status_code == 200
    assert page.context["protected"] == ["Outsiders (its rules refer to Germans)"]
    refused = console.post(f"/admin/campaigns/segment/{germans.pk}/delete/", {"post": "yes"})
    assert refused.status_code in (200, 403)
    assert Segment.objects.filter(pk=germans.pk).exists()


def test_bulk_delete_of_a_segment_and_the_one_referring_to_it(console, project_a):
    from campaigns.segments.membership import segment_save

    project_id = project_a[0].pk
    germans = segment_save(project_id=project_id, name="Germans", rules=RULES)
    outsiders = segment_save(project_id=project_id, name="Outsiders", rules={"segment": germans.pk, "member": False})
    SegmentMembership.objects.create(
        segment=germans, profile=Profile.objects.create(project_id=project_id), entered_at=timezone.now()
    )
    response = console.post(
        "/admin/campaigns/segment/",
        {"action": "delete_selected", "_selected_action": [germans.pk, outsiders.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert Segment.objects.count() == 0
    assert SegmentMembership.objects.count() == 0


# --- the builder's catalogue against the grammar ---------------------------------------------

_SAMPLES = {
    "text": {"value": "2.1"},
    "number": {"value": 5},
    "list": {"value": ["a", "b"]},
    "list_number": {"value": [1, 2]},
    "pair": {"value": ["1.0", "2.0"]},
    "pair_number": {"value": [1, 2]},
    "pair_datetime": {"value": ["2026-01-01", "2026-02-01"]},
    "days": {"value": {"days": 7}},
    "datetime": {"value": "2026-01-01"},
    "boolean": {"value": True},
    "none": {},
}


def _offered_trees() -> list[dict]:
    """One tree for every field, operator, window, function and kind the builder offers."""
    c = segment_rule_catalogue()
    ops = c["operators"]
    trees = []
    for f in c["profile_fields"]:
        field = f["field"] + "plan" if f.get("keyed") else f["field"]
        trees += [{"profile": field, "op": o["op"], **_SAMPLES[o["value"]]} for o in ops[f["type"]]]
    for f in c["device_fields"]:
        trees += [{"device": [{"field": f["field"], "op": o["op"], **_SAMPLES[o["value"]]}]} for o in ops[f["type"]]]
    trees += [{"event": "X", "count": {"op": o["op"], "value": 3}} for o in ops["count"]]
    trees += [
        {"event": "X", "where": [{"property": "p", "op": o["op"], **_SAMPLES[o["value"]]}]}
        for o in ops[c["property_type"]]
    ]
    trees += [
        {"event": "X", "aggregate": {"fn": fn, "property": "price", "op": o["op"], **_SAMPLES[o["value"]]}}
        for fn in c["event"]["aggregate_functions"]
        for o in ops["aggregate"]
    ]
    trees += [
        {"event": "X", fl["key"]: {"op": o["op"], **_SAMPLES[o["value"]]}}
        for fl in c["event"]["first_last"]
        for o in ops["event_time"]
    ]
    windows = {"ever": "ever", "last_days": {"last_days": 7}, "between": {"between": ["2026-01-01", "2026-02-01"]}}
    trees += [{"event": "X", "did": False, "window": windows[w["key"]]} for w in c["event"]["windows"]]
    trees += [
        {"recent_item": lst["key"], t["key"]: "SKU1"}
        for lst in c["recent_items"]["lists"]
        for t in c["recent_items"]["targets"]
    ]
    trees += [{"bucket": {"op": o["op"], **_SAMPLES[o["value"]]}} for o in ops["bucket"]]
    trees += [
        {g["key"]: {"profile": "country", "op": "exists"}}
        if g["key"] == "not"
        else {g["key"]: [{"profile": "country", "op": "exists"}]}
        for g in c["groups"]
    ]
    return trees


def test_every_field_and_operator_the_builder_offers_is_one_the_grammar_accepts(project_a):
    trees = _offered_trees()
    refused = []
    for tree in trees:
        try:
            rules.rules_parse(tree, project_id=project_a[0].pk)
        except rules.RulesInvalid as exc:
            refused.append((tree, exc.errors))
    assert refused == []
    assert len(trees) > 150
    kinds = {c["key"] for c in segment_rule_catalogue()["conditions"]}
    assert kinds == {"profile", "device", "event", "recent_item", "segment", "bucket"}
