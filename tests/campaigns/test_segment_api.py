"""The segments API (secret key): CRUD with rules validated naming paths, the
preview, the members and a user's segments; another project's segments and
profiles are never visible nor writable (404)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from campaigns.models import Segment, SegmentMembership, SegmentStatus
from crm import services
from crm.models import Device, Profile
from tests.conftest import bearer_client

pytestmark = pytest.mark.django_db

# Country DE AND at least 3 "Product Viewed" in the last 7 days.
RULES: dict[str, Any] = {
    "all": [
        {"profile": "country", "op": "in", "value": ["DE"]},
        {"event": "Product Viewed", "count": {"op": "gte", "value": 3}, "window": {"last_days": 7}},
    ]
}


def _views(project_id: int, profile: Profile, n: int, *, days_ago: float = 1) -> None:
    at = (timezone.now() - timedelta(days=days_ago)).isoformat()
    services.events_insert_new(
        project_id=project_id,
        rows=[[profile.pk, "track", "Product Viewed", {}, {}, at, at, f"{profile.pk}-v{i}"] for i in range(n)],
    )


def audience(project_id: int, *, prefix: str = "") -> dict[str, Profile]:
    """Four profiles; RULES selects u1 and u4.
    u1: DE, 3 views, email (never asked), push token (never asked), phone but SMS opted out.
    u2: DE, 1 view, no email, a device without a token.
    u3: FR, 3 views, email opted out.
    u4: DE, 5 views (and 4 more 10 days ago), email subscribed, push token but push opted out, phone."""
    p = {
        "u1": Profile.objects.create(
            project_id=project_id,
            user_id=f"{prefix}u1",
            country="DE",
            email="u1@x.io",
            phone="+491",
            sms_subscribed=False,
        ),
        "u2": Profile.objects.create(project_id=project_id, user_id=f"{prefix}u2", country="DE"),
        "u3": Profile.objects.create(
            project_id=project_id, user_id=f"{prefix}u3", country="FR", email="u3@x.io", email_subscribed=False
        ),
        "u4": Profile.objects.create(
            project_id=project_id,
            user_id=f"{prefix}u4",
            country="DE",
            email="u4@x.io",
            email_subscribed=True,
            phone="+492",
            push_subscribed=False,
        ),
    }
    Device.objects.create(project_id=project_id, profile=p["u1"], device_id=f"{prefix}d1", push_token="tok1")
    Device.objects.create(project_id=project_id, profile=p["u2"], device_id=f"{prefix}d2")
    Device.objects.create(project_id=project_id, profile=p["u4"], device_id=f"{prefix}d4", push_token="tok4")
    _views(project_id, p["u1"], 3)
    _views(project_id, p["u2"], 1)
    _views(project_id, p["u3"], 3)
    _views(project_id, p["u4"], 5)
    at = (timezone.now() - timedelta(days=10)).isoformat()
    services.events_insert_new(
        project_id=project_id,
        rows=[[p["u2"].pk, "track", "Product Viewed", {}, {}, at, at, f"{prefix}old{i}"] for i in range(4)],
    )
    return p


@pytest.fixture
def api_a(project_a):
    return bearer_client(project_a[1].secret_key)


@pytest.fixture
def api_b(project_b):
    return bearer_client(project_b[1].secret_key)


def _segment(project_id: int, name: str = "Germans", **kwargs: Any) -> Segment:
    return Segment.objects.create(project_id=project_id, name=name, rules=kwargs.pop("rules", RULES), **kwargs)


# --- CRUD -----------------------------------------------------------------------


def test_create_stores_the_segment_pending_with_its_dependencies(api_a, project_a):
    response = api_a.post("/api/v1/segments", {"name": "Active Germans", "rules": RULES}, format="json")
    assert response.status_code == 201
    body = response.json()
    segment = Segment.objects.get()
    assert body["id"] == segment.pk
    assert (body["name"], body["description"], body["rules"], body["status"]) == (
        "Active Germans",
        "",
        RULES,
        "pending",
    )
    assert segment.project_id == project_a[0].pk
    assert segment.dependencies["event_names"] == ["Product Viewed"]
    assert segment.dependencies["profile_fields"] == ["country"]


def test_invalid_rules_are_a_400_naming_each_path_and_store_nothing(api_a):
    rules = {
        "all": [
            {"profile": "country", "op": "in", "value": ["DE"]},
            {"profile": "city", "op": "sounds_like", "value": "x"},
            {"event": "Order Completed", "count": {"op": "gte", "value": -1}},
        ]
    }
    response = api_a.post("/api/v1/segments", {"name": "Bad", "rules": rules}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"rules"}
    messages = response.json()["rules"]
    assert len(messages) == 2
    assert messages[0].startswith("rules.all[1].op: ")
    assert messages[1] == "rules.all[2].count.value: must be >= 0"
    assert Segment.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rules": RULES}, "name"),
        ({"name": "x" * 201, "rules": RULES}, "name"),
        ({"name": "a\x00b", "rules": RULES}, "name"),
        ({"name": "ok"}, "rules"),
        ({"name": "ok", "rules": {"profile": "country", "op": "eq", "value": "a\x00"}}, "rules"),
    ],
)
def test_a_bad_field_is_a_400_naming_it(api_a, body, field):
    response = api_a.post("/api/v1/segments", body, format="json")
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert Segment.objects.count() == 0


def test_list_shows_counts_status_and_progress_in_pages_of_its_project_only(
    api_a, project_a, project_b, django_assert_max_num_queries
):
    mine = [
        _segment(project_a[0].pk, f"S{i}", member_count=i, status=SegmentStatus.COMPUTING, progress=0.5)
        for i in range(3)
    ]
    _segment(project_b[0].pk, "Theirs")
    with django_assert_max_num_queries(3):
        response = api_a.get("/api/v1/segments")
    assert response.status_code == 200
    assert [
        (s["id"], s["name"], s["member_count"], s["status"], s["progress"]) for s in response.json()["results"]
    ] == [(s.pk, s.name, s.member_count, "computing", 0.5) for s in mine]


def test_update_and_patch_go_through_the_service(api_a, project_a):
    # New rules are a new version (recomputed); a new description alone is not.
    segment = _segment(project_a[0].pk)
    put = api_a.put(
        f"/api/v1/segments/{segment.pk}",
        {"name": "French", "description": "d", "rules": {"profile": "country", "op": "eq", "value": "FR"}},
        format="json",
    )
    assert put.status_code == 200
    assert (put.json()["name"], put.json()["rules_version"]) == ("French", 2)
    patch = api_a.patch(f"/api/v1/segments/{segment.pk}", {"description": "only this"}, format="json")
    assert patch.status_code == 200
    segment.refresh_from_db()
    assert (segment.name, segment.description, segment.rules, segment.rules_version) == (
        "French",
        "only this",
        {"profile": "country", "op": "eq", "value": "FR"},
        2,
    )


def test_a_bad_update_is_a_400_naming_the_path_and_changes_nothing(api_a, project_a):
    segment = _segment(project_a[0].pk)
    response = api_a.patch(
        f"/api/v1/segments/{segment.pk}",
        {"rules": {"any": [{"event": "X", "count": {"op": "gte", "value": -2}}]}},
        format="json",
    )
    assert (response.status_code, response.json()) == (400, {"rules": ["rules.any[0].count.value: must be >= 0"]})
    segment.refresh_from_db()
    assert (segment.rules, segment.rules_version) == (RULES, 1)


def test_delete_removes_the_segment(api_a, project_a):
    segment = _segment(project_a[0].pk)
    assert api_a.delete(f"/api/v1/segments/{segment.pk}").status_code == 204
    assert not Segment.objects.filter(pk=segment.pk).exists()


def test_another_projects_segment_is_404_for_every_method_and_unchanged(api_b, project_a):
    segment = _segment(project_a[0].pk)
    url = f"/api/v1/segments/{segment.pk}"
    assert api_b.get(url).status_code == 404
    assert api_b.put(url, {"name": "x", "rules": RULES}, format="json").status_code == 404
    assert api_b.patch(url, {"name": "x"}, format="json").status_code == 404
    assert api_b.delete(url).status_code == 404
    assert api_b.get(f"{url}/members").status_code == 404
    assert api_b.get("/api/v1/segments").json()["results"] == []
    segment.refresh_from_db()
    assert (segment.name, segment.rules_version) == ("Germans", 1)


def test_without_the_secret_key_nothing_answers(project_a):
    from rest_framework.test import APIClient

    segment = _segment(project_a[0].pk)
    client = APIClient()
    for url in ("/api/v1/segments", f"/api/v1/segments/{segment.pk}", f"/api/v1/segments/{segment.pk}/members"):
        assert client.get(url).status_code in (401, 403)
    assert client.post("/api/v1/segments/preview", {"rules": RULES}, format="json").status_code in (401, 403)
    write_key = bearer_client(project_a[1].write_key)
    assert write_key.get("/api/v1/segments").status_code in (401, 403)


# --- Preview ----------------------------------------------------------------------


def test_preview_counts_members_and_reachable_per_channel_with_a_sample(api_a, api_b, project_a, project_b):
    p = audience(project_a[0].pk)
    audience(project_b[0].pk, prefix="b-")  # the same people in project B: not counted
    response = api_a.post("/api/v1/segments/preview", {"rules": RULES}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert body["reachable"] == {"email": 2, "push": 1, "sms": 1}
    assert [(s["profile_id"], s["user_id"], s["email"]) for s in body["sample"]] == [
        (p["u1"].pk, "u1", "u1@x.io"),
        (p["u4"].pk, "u4", "u4@x.io"),
    ]
    for sample in body["sample"]:
        assert [(c["path"], c["met"]) for c in sample["conditions"]] == [
            ("rules", True),
            ("rules.all[0]", True),
            ("rules.all[1]", True),
        ]
        assert all(c["label"] for c in sample["conditions"])
    assert Segment.objects.count() == 0  # a preview stores nothing


def test_preview_sample_is_the_first_20_by_id_and_the_count_is_all(api_a, project_a):
    project_id = project_a[0].pk
    Profile.objects.bulk_create([Profile(project_id=project_id, user_id=f"x{i}", country="IT") for i in range(25)])
    response = api_a.post(
        "/api/v1/segments/preview",
        {
            "rules": {
                "any": [
                    {"profile": "country", "op": "eq", "value": "IT"},
                    {"profile": "city", "op": "eq", "value": "Rome"},
                ]
            }
        },
        format="json",
    )
    body = response.json()
    assert body["count"] == 25
    assert body["reachable"] == {"email": 0, "push": 0, "sms": 0}
    ids = list(Profile.objects.filter(project_id=project_id).order_by("pk").values_list("pk", flat=True)[:20])
    assert [s["profile_id"] for s in body["sample"]] == ids
    assert [(c["path"], c["met"]) for c in body["sample"][0]["conditions"]] == [
        ("rules", True),
        ("rules.any[0]", True),
        ("rules.any[1]", False),
    ]


def test_preview_of_invalid_rules_is_a_400_naming_the_path(api_a):
    response = api_a.post(
        "/api/v1/segments/preview",
        {"rules": {"all": [RULES, {"not": {"event": "X", "count": {"op": "gte", "value": -5}}}]}},
        format="json",
    )
    assert (response.status_code, response.json()) == (400, {"rules": ["rules.all[1].not.count.value: must be >= 0"]})
    missing = api_a.post("/api/v1/segments/preview", {}, format="json")
    assert (missing.status_code, list(missing.json())) == (400, ["rules"])


def test_preview_queries_are_bounded(api_a, project_a, django_assert_max_num_queries):
    audience(project_a[0].pk)
    # auth + aggregate + sample + the explanation of the sample's conditions.
    with django_assert_max_num_queries(8):
        response = api_a.post("/api/v1/segments/preview", {"rules": RULES}, format="json")
    assert response.json()["count"] == 2


# --- Members ------------------------------------------------------------------


def test_members_are_paged_by_profile_id_with_user_id_and_entered_at(api_a, project_a, django_assert_max_num_queries):
    project_id = project_a[0].pk
    segment = _segment(project_id)
    profiles = Profile.objects.bulk_create([Profile(project_id=project_id, user_id=f"m{i}") for i in range(150)])
    entered = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    # Inserted in reverse: the order is the profile id's, not the row's.
    SegmentMembership.objects.bulk_create(
        [SegmentMembership(segment=segment, profile=p, entered_at=entered) for p in reversed(profiles)]
    )
    with django_assert_max_num_queries(3):
        first = api_a.get(f"/api/v1/segments/{segment.pk}/members")
    assert first.status_code == 200
    page = first.json()
    assert [m["profile_id"] for m in page["results"]] == [p.pk for p in profiles[:100]]
    assert page["results"][0] == {"profile_id": profiles[0].pk, "user_id": "m0", "entered_at": "2026-03-01T12:00:00Z"}
    second = api_a.get(page["next"]).json()
    assert [m["user_id"] for m in second["results"]] == [f"m{i}" for i in range(100, 150)]
    assert second["next"] is None


def test_members_of_an_unknown_segment_are_404(api_a):
    assert api_a.get("/api/v1/segments/999999/members").status_code == 404


def test_a_forged_members_cursor_is_a_400_naming_cursor(api_a, project_a):
    segment = _segment(project_a[0].pk)
    response = api_a.get(f"/api/v1/segments/{segment.pk}/members", {"cursor": "not base64!"})
    assert (response.status_code, list(response.json())) == (400, ["cursor"])


# --- A user's segments --------------------------------------------------------------


def test_a_users_segments_by_user_id(api_a, project_a):
    project_id = project_a[0].pk
    profile = Profile.objects.create(project_id=project_id, user_id="user/42")
    other = Profile.objects.create(project_id=project_id, user_id="u9")
    zeta, alpha, none_of = _segment(project_id, "Zeta"), _segment(project_id, "Alpha"), _segment(project_id, "Not in")
    at = datetime(2026, 2, 3, 4, 5, tzinfo=UTC)
    SegmentMembership.objects.bulk_create(
        [
            SegmentMembership(segment=zeta, profile=profile, entered_at=at),
            SegmentMembership(segment=alpha, profile=profile, entered_at=at),
            SegmentMembership(segment=none_of, profile=other, entered_at=at),
        ]
    )
    response = api_a.get("/api/v1/users/user/42/segments")
    assert response.status_code == 200
    assert response.json() == {
        "user_id": "user/42",
        "segments": [
            {"id": alpha.pk, "name": "Alpha", "entered_at": "2026-02-03T04:05:00Z"},
            {"id": zeta.pk, "name": "Zeta", "entered_at": "2026-02-03T04:05:00Z"},
        ],
    }


def test_another_projects_user_is_404(api_a, api_b, project_a):
    Profile.objects.create(project_id=project_a[0].pk, user_id="alice")
    assert api_a.get("/api/v1/users/alice/segments").status_code == 200
    assert api_b.get("/api/v1/users/alice/segments").status_code == 404
    assert api_a.get("/api/v1/users/nobody/segments").status_code == 404


def test_a_segment_other_rules_refer_to_is_409_and_kept(api_a, project_a):
    germans = api_a.post("/api/v1/segments", {"name": "Germans", "rules": RULES}, format="json").json()
    outsiders = api_a.post(
        "/api/v1/segments", {"name": "Outsiders", "rules": {"segment": germans["id"], "member": False}}, format="json"
    ).json()
    response = api_a.delete(f"/api/v1/segments/{germans['id']}")
    assert response.status_code == 409
    assert response.json()["used_by"] == ["Outsiders"]
    assert Segment.objects.filter(pk=germans["id"]).exists()
    assert api_a.delete(f"/api/v1/segments/{outsiders['id']}").status_code == 204
    assert api_a.delete(f"/api/v1/segments/{germans['id']}").status_code == 204
    assert Segment.objects.count() == 0


# --- hostile rule trees -----------------------------------------------------------------

_LEAF_KEYS = ["profile", "op", "value", "device", "field", "event", "count", "window", "where", "did", "aggregate",
              "first", "last", "recent_item", "product", "category", "segment", "member", "bucket", "last_days",
              "between", "days", "fn", "property", "all", "any", "not"]  # fmt: skip


def _trees():  # noqa: ANN202 - a hypothesis strategy
    from hypothesis import strategies as st

    from tests.test_fuzz import json_values

    leaves = st.one_of(
        st.dictionaries(st.sampled_from(_LEAF_KEYS), json_values(deep=False), max_size=4),
        st.sampled_from(RULES["all"]).flatmap(
            lambda leaf: st.dictionaries(st.sampled_from(sorted(leaf)), json_values(deep=False), max_size=2).map(
                lambda changes: {**leaf, **changes}
            )
        ),
        json_values(deep=False),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3).map(lambda items: {"all": items}),
            st.lists(inner, max_size=3).map(lambda items: {"any": items}),
            inner.map(lambda item: {"not": item}),
        ),
        max_leaves=8,
    )


def test_hostile_rule_trees_are_answered_never_with_a_5xx(api_a, project_a):
    from hypothesis import given
    from hypothesis import strategies as st

    from tests.test_fuzz import FUZZ, dumps

    audience(project_a[0].pk)

    @FUZZ
    @given(tree=_trees(), endpoint=st.sampled_from(["/api/v1/segments", "/api/v1/segments/preview"]))
    def check(tree: Any, endpoint: str) -> None:
        from django.db import transaction

        with transaction.atomic():
            body = dumps({"name": "Fuzzed", "rules": tree})
            response = api_a.generic("POST", endpoint, body, content_type="application/json")
            assert response.status_code < 500, (tree, response.content[:300])
            if response.status_code == 400:
                answer = response.json()
                assert isinstance(answer, dict) and answer, response.content
                if list(answer) == ["rules"]:
                    assert all(isinstance(m, str) and m.startswith("rules") for m in answer["rules"]), answer
            else:
                assert response.status_code in (200, 201)
            transaction.set_rollback(True)

    check()


def test_rules_cannot_refer_to_another_projects_segment(api_a, project_b):
    theirs = _segment(project_b[0].pk, "Theirs")
    for endpoint in ("/api/v1/segments", "/api/v1/segments/preview"):
        response = api_a.post(endpoint, {"name": "x", "rules": {"segment": theirs.pk, "member": True}}, format="json")
        assert response.status_code == 400
        assert list(response.json()) == ["rules"]
        assert len(response.json()["rules"]) == 1
        assert response.json()["rules"][0].startswith("rules.segment: ")
        assert f"no segment {theirs.pk} in this project" in response.json()["rules"][0]
    assert Segment.objects.count() == 1
