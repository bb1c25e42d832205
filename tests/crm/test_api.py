"""The profiles API on hostile input: every refusal is a 400 naming the field,
and a refused change changes nothing."""

import base64

import pytest

from crm import services
from crm.models import Profile
from tests.conftest import bearer_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(project_a):
    services.profile_upsert(project_id=project_a[0].pk, user_id="alice", traits={"email": "alice@x.io", "plan": "pro"})
    return bearer_client(project_a[1].secret_key)


def _cursor(token: str) -> str:
    return base64.b64encode(token.encode()).decode()


def test_an_email_filter_with_a_nul_is_a_400_naming_email(api):
    response = api.get("/api/v1/profiles?email=%00")
    assert (response.status_code, response.json()) == (400, {"email": ["email must not contain a NUL character"]})
    listed = api.get("/api/v1/profiles?email=ALICE@x.io")
    assert [p["user_id"] for p in listed.json()["results"]] == ["alice"]


@pytest.mark.parametrize("raw", ["%C2%B2", "%D9%A3", "0", "501", "-1", "1e2", "%00", ""])
def test_the_events_limit_is_ascii_digits_from_1_to_500(api, raw):
    # "²".isdigit() is true and int("²") fails; int("٣") is 3.
    response = api.get(f"/api/v1/profiles/alice/events?limit={raw}")
    assert response.status_code == 400
    assert list(response.json()) == ["limit"]
    assert response.json()["limit"][0].startswith("limit must be an integer from 1 to 500, got ")
    assert api.get("/api/v1/profiles/alice/events?limit=500").status_code == 200


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor("p=abc"),  # a position that is not an id: a ValueError in the query
        _cursor("o=0&p=%C2%B2"),
        _cursor("p=" + "9" * 30),
        _cursor("r=x"),
        "not base64!",
    ],
)
def test_a_forged_cursor_is_a_400_naming_cursor(api, cursor):
    response = api.get("/api/v1/profiles", {"cursor": cursor})
    assert (response.status_code, response.json()) == (
        400,
        {"cursor": ["cursor is not one this API gave (use the next and previous links)"]},
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"traits": {"plan": "x\\u0000"}}', "traits['plan']: must not contain a NUL character"),
        (b'{"traits": {"pl\\u0000an": 1}}', "traits['pl\\x00an']: the key must not contain a NUL character"),
        (b'{"traits": {"score": 1e999}}', "traits['score']: must be a finite number"),
        (
            b'{"traits": {"tags": ["ok", "\\ud800"]}}',
            "traits['tags'][1]: must be valid Unicode (it has a lone surrogate)",
        ),
        (b'{"traits": {"n": 123456789012345678901234567890}}', "traits['n']: integer out of range (64 bits)"),
        (
            b'{"traits": {"deep": ' + b"[" * 80 + b"]" * 80 + b"}}",
            "traits['deep']" + "[0]" * 63 + ": nested deeper than 64 levels",
        ),
    ],
)
def test_traits_the_store_cannot_hold_are_a_400_naming_where_and_change_nothing(api, project_a, body, message):
    response = api.generic("PATCH", "/api/v1/profiles/alice", body, content_type="application/json")
    assert (response.status_code, response.json()) == (400, {"traits": [message]})
    profile = Profile.objects.get(project=project_a[0], user_id="alice")
    assert profile.traits == {"email": "alice@x.io", "plan": "pro"}


def test_a_body_nested_too_deep_to_parse_is_a_400_and_changes_nothing(api, project_a):
    # Python's json stops at its recursion limit (about 1,000 levels), before
    # any field is known: the answer is DRF's parse error.
    body = b'{"traits": {"deep": ' + b"[" * 3000 + b"]" * 3000 + b"}}"
    response = api.generic("PATCH", "/api/v1/profiles/alice", body, content_type="application/json")
    assert (response.status_code, response.json()) == (400, {"detail": "JSON parse error - nested too deeply"})
    assert Profile.objects.get(project=project_a[0], user_id="alice").traits == {"email": "alice@x.io", "plan": "pro"}


def test_storable_traits_nested_and_unicode_are_merged(api, project_a):
    traits = {"tags": ["a", {"b": [1, 2.5, None, True]}], "name": "Zoë 🎉", "big": 2**63 - 1}
    response = api.patch("/api/v1/profiles/alice", {"traits": traits}, format="json")
    assert response.status_code == 200
    assert Profile.objects.get(project=project_a[0], user_id="alice").traits == {
        "email": "alice@x.io",
        "plan": "pro",
        **traits,
    }
