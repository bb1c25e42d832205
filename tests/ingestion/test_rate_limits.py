"""The collectors' rate limits (crm.rate_limits): per write key, fast path and
Django view alike, with a project's own limit; per client address for requests
without a valid write key. 429 with Retry-After and the collectors' JSON error."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from crm.models import Event
from crm.selectors import project_key_cache_clear
from tests.conftest import basic_header, wsgi_call

HOUR = 3600  # windows long enough that no test straddles two


def track(message_id: str) -> bytes:
    return json.dumps({"userId": "u1", "event": "Product Viewed", "messageId": message_id}).encode()


def collect(write_key: str | None, message_id: str, **environ: str) -> tuple[int, dict[str, str], bytes]:
    if write_key is not None:
        environ["HTTP_AUTHORIZATION"] = basic_header(write_key)
    return wsgi_call("/v1/track", method="POST", body=track(message_id), **environ)


@pytest.mark.django_db
def test_collectors_past_the_write_key_limit_answer_429_with_retry_after(project_a, project_b, settings, eager):
    settings.RATE_LIMIT_WRITE_KEY = (3, HOUR)
    project, keys = project_a
    assert [collect(keys.write_key, f"m{i}")[0] for i in range(3)] == [200, 200, 200]
    status, headers, body = collect(keys.write_key, "m3")
    assert status == 429
    assert 1 <= int(headers["Retry-After"]) <= HOUR
    assert json.loads(body) == {
        "success": False,
        "code": "rate_limited",
        "message": f"too many requests for this write key; retry in {headers['Retry-After']} s",
        "retry_after": int(headers["Retry-After"]),
    }
    assert headers["Access-Control-Allow-Origin"] == "*"  # browsers may read the refusal
    # The Django view (same code) counts on the same key.
    response = Client().post("/v1/track", track("m4"), content_type="application/json",
                             HTTP_AUTHORIZATION=basic_header(keys.write_key))  # fmt: skip
    assert response.status_code == 429 and response["Retry-After"]
    assert sorted(Event.objects.filter(project=project).values_list("message_id", flat=True)) == ["m0", "m1", "m2"]
    # Another write key is not affected.
    assert collect(project_b[1].write_key, "b0")[0] == 200


@pytest.mark.django_db
def test_a_write_key_in_the_body_is_limited_too(project_a, settings, eager):
    settings.RATE_LIMIT_WRITE_KEY = (1, HOUR)
    keys = project_a[1]
    body = json.dumps({"userId": "u1", "event": "E", "writeKey": keys.write_key}).encode()
    assert wsgi_call("/v1/track", method="POST", body=body)[0] == 200
    assert wsgi_call("/v1/track", method="POST", body=body)[0] == 429


@pytest.mark.django_db
def test_a_projects_own_limit_replaces_the_default(project_a, project_b, settings, eager):
    settings.RATE_LIMIT_WRITE_KEY = (2, HOUR)
    project, keys = project_a
    project.rate_limit_write_key = 4
    project.save(update_fields=["rate_limit_write_key"])
    project_key_cache_clear()
    assert [collect(keys.write_key, f"m{i}")[0] for i in range(5)] == [200, 200, 200, 200, 429]
    assert [collect(project_b[1].write_key, f"b{i}")[0] for i in range(3)] == [200, 200, 429]


@pytest.mark.django_db
def test_unknown_write_keys_are_limited_per_client_address(project_a, settings, eager):
    settings.RATE_LIMIT_UNKNOWN_KEY = (3, HOUR)
    here = {"REMOTE_ADDR": "198.51.100.1"}
    answers = [collect(f"wk_guess{i}", f"m{i}", **here)[0] for i in range(3)]
    answers.append(collect(None, "m3", **here)[0])  # no key at all counts too
    assert answers == [401, 401, 401, 429]
    status, headers, body = collect("wk_guess9", "m4", **here)
    assert (status, json.loads(body)["code"]) == (429, "rate_limited") and int(headers["Retry-After"]) >= 1
    # Another address is not affected; a valid key from the same address still works.
    assert collect("wk_guess", "m5", REMOTE_ADDR="198.51.100.2")[0] == 401
    assert collect(project_a[1].write_key, "m6", **here)[0] == 200
