"""Rate limits (crm.rate_limits): the counter; per secret key on the APIs
(profiles, catalog, recommendations, fast path included) and per client address
for requests without a valid key, answered 429 with Retry-After and a JSON body;
counted in Redis across processes. The collectors' are in tests/ingestion."""

from __future__ import annotations

import http.client
import json
import uuid

import pytest
from django.core.cache.backends.redis import RedisCache

from crm.rate_limits import RateLimiter, RedisCounter, client_address
from crm.services import project_create
from tests.conftest import bearer_client, wsgi_call

HOUR = 3600  # windows long enough that no test straddles two


# --- The counter ------------------------------------------------------------------


def test_requests_past_the_limit_are_refused_until_the_window_ends():
    limiter = RateLimiter(None)
    assert [limiter.hit("k", 3, HOUR) for _ in range(3)] == [0, 0, 0]
    retry_after = limiter.hit("k", 3, HOUR)
    assert 1 <= retry_after <= HOUR
    assert limiter.hit("other", 3, HOUR) == 0


def test_counts_are_shared_by_processes_through_redis(redis_url):
    """Two limiters with their own Redis clients, as two processes have."""
    first = RateLimiter(RedisCounter(RedisCache(redis_url, {})))
    second = RateLimiter(RedisCounter(RedisCache(redis_url, {})))
    key = f"test-{uuid.uuid4().hex}"
    # A small limit syncs on every request: exact.
    answers = [(first if i % 3 else second).hit(key, 10, HOUR) for i in range(12)]
    assert [a == 0 for a in answers] == [True] * 10 + [False] * 2
    assert first.hit(key, 10, HOUR) > 0 and second.hit(key, 10, HOUR) > 0


def test_a_large_limit_syncs_in_batches_and_stays_within_it(redis_url):
    first = RateLimiter(RedisCounter(RedisCache(redis_url, {})))
    second = RateLimiter(RedisCounter(RedisCache(redis_url, {})))
    key = f"test-{uuid.uuid4().hex}"
    admitted = sum(1 for i in range(3000) if (first if i % 2 else second).hit(key, 2000, HOUR) == 0)
    # Near the limit every request syncs, so the two together admit exactly it.
    assert admitted == 2000


def test_an_unreachable_cache_leaves_the_limit_per_process():
    dead = RedisCache("redis://127.0.0.1:1/0", {"OPTIONS": {"socket_connect_timeout": 0.2}})
    limiter = RateLimiter(RedisCounter(dead))
    assert [limiter.hit("k", 2, HOUR) == 0 for _ in range(3)] == [True, True, False]


def test_the_client_address_comes_from_the_proxy_header_only_when_configured(settings):
    meta = {"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_FOR": "1.1.1.1, 203.0.113.7"}
    assert client_address(meta) == "10.0.0.5"
    settings.CLIENT_IP_HEADER = "HTTP_X_FORWARDED_FOR"
    # The entry our proxy added (the last); the ones left of it are the client's to write.
    assert client_address(meta) == "203.0.113.7"
    settings.CLIENT_IP_PROXY_COUNT = 2
    assert client_address(meta) == "1.1.1.1"
    assert client_address({"REMOTE_ADDR": "10.0.0.5"}) == "10.0.0.5"
    settings.CLIENT_IP_HEADER = ""
    assert client_address({"REMOTE_ADDR": "2001:db8:1:2:3:4:5:6"}) == "2001:db8:1:2::/64"


# --- The APIs -------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_apis_count_each_secret_key_across_profiles_catalog_and_recommendations(project_a, project_b, settings):
    settings.RATE_LIMIT_SECRET_KEY = (4, HOUR)
    keys = project_a[1]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {keys.secret_key}"}
    client = bearer_client(keys.secret_key)
    answers = [
        wsgi_call("/api/v1/users/u1/recommendations", **auth)[0],  # the fast path
        client.get("/api/v1/profiles").status_code,  # DRF
        client.get("/api/v1/products").status_code,  # DRF (catalog)
        client.get("/api/v1/trending").status_code,  # plain Django view
    ]
    assert answers == [200, 200, 200, 200]
    status, headers, body = wsgi_call("/api/v1/users/u1/recommendations", **auth)
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= HOUR
    assert json.loads(body) == {
        "error": "rate_limited",
        "message": f"too many requests for this secret key; retry in {headers['Retry-After']} s",
    }
    response = client.get("/api/v1/profiles")
    assert response.status_code == 429 and 1 <= int(response["Retry-After"]) <= HOUR
    assert response.json()["detail"].startswith("Request was throttled.")
    upload = client.post("/api/v1/catalog/uploads", {"mode": "upsert"})
    assert upload.status_code == 429
    assert bearer_client(project_b[1].secret_key).get("/api/v1/profiles").status_code == 200


@pytest.mark.django_db
def test_unknown_secret_keys_are_limited_per_client_address(project_a, settings):
    settings.RATE_LIMIT_UNKNOWN_KEY = (2, HOUR)
    here = {"REMOTE_ADDR": "198.51.100.1"}
    guess = {"HTTP_AUTHORIZATION": "Bearer sk_guess", **here}
    assert wsgi_call("/api/v1/users/u1/recommendations", **guess)[0] == 401
    assert bearer_client("sk_guess2").get("/api/v1/profiles", **here).status_code == 401
    status, headers, body = wsgi_call("/api/v1/users/u1/recommendations", **guess)
    assert (status, json.loads(body)["error"]) == (429, "rate_limited") and int(headers["Retry-After"]) >= 1
    response = bearer_client("sk_guess3").get("/api/v1/profiles", **here)
    assert response.status_code == 429 and int(response["Retry-After"]) >= 1
    from rest_framework.test import APIClient

    assert APIClient().get("/api/v1/products", **here).status_code == 429  # no key at all
    assert bearer_client("sk_guess4").get("/api/v1/profiles", REMOTE_ADDR="198.51.100.2").status_code == 401
    assert bearer_client(project_a[1].secret_key).get("/api/v1/profiles", **here).status_code == 200


# --- Across processes -------------------------------------------------------------------


def test_two_servers_share_the_limit_through_redis(uwsgi_process, redis_url):
    """The recommendation API on two uWSGI servers (two processes for certain)
    with Redis as the cache: the key's limit holds across both. Counted per
    process, each would admit ten."""
    project, keys = project_create(name="Two processes")
    project.rate_limit_secret_key = 10
    project.save(update_fields=["rate_limit_secret_key"])
    env = {"REDIS_URL": redis_url, "RATE_LIMIT_SECRET_KEY": f"50000/{HOUR}s"}
    first, second = uwsgi_process("--processes", "1", env=env), uwsgi_process("--processes", "1", env=env)

    def answers(port: int, count: int) -> list[int]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        statuses = []
        for _ in range(count):
            conn.request(
                "GET", "/api/v1/users/u1/recommendations", headers={"Authorization": f"Bearer {keys.secret_key}"}
            )
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
            if response.status == 429:
                assert int(response.getheader("Retry-After")) >= 1
        return statuses

    assert answers(first, 8) == [200] * 8
    assert answers(second, 8) == [200] * 2 + [429] * 6
    assert answers(first, 1) == [429]
