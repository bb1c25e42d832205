"""A `Product Viewed` posted to the collector changes that user's next
recommendations within one second, through the real broker and worker."""

from __future__ import annotations

import base64
import json
import time
import urllib.request

import pytest

from crm.services import profile_upsert
from tests.recommendations.serving_data import catalog_write, user_write, version_write

pytestmark = [pytest.mark.broker, pytest.mark.django_db(transaction=True)]


def _call(url: str, headers: dict[str, str], body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_a_view_changes_the_next_recommendations_within_a_second(live_server, celery_worker_process, make_project):
    project, keys = make_project("Fresh shop")
    catalog_write(project.pk)
    version_write(project.pk)
    user_write(project.pk, "u1", viewed=["p1"])
    profile_upsert(project_id=project.pk, user_id="warm")
    celery_worker_process(queues=["ingest"])
    write = {"Authorization": "Basic " + base64.b64encode(f"{keys.write_key}:".encode()).decode()}
    read = {"Authorization": f"Bearer {keys.secret_key}"}
    recs_url = live_server.url + "/api/v1/users/u1/recommendations?limit=3"

    def recs() -> list[str]:
        return [p["product_id"] for p in _call(recs_url, read)["products"]]

    # Warm the worker (connections, imports) with another user's event first.
    _call(
        live_server.url + "/v1/track",
        write,
        {"userId": "warm", "event": "Product Viewed", "properties": {"product_id": "p7"}},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (
            _call(live_server.url + "/api/v1/users/warm/recommendations?limit=1", read)["products"][0]["product_id"]
            != "p7"
        ):
            break
        time.sleep(0.05)

    before = recs()
    assert before == ["p2", "p3", "p5"]
    answer = _call(
        live_server.url + "/v1/track",
        write,
        {"userId": "u1", "event": "Product Viewed", "properties": {"product_id": "p5"}},
    )
    answered = time.monotonic()
    assert answer == {"success": True}
    # p5 is now viewed (excluded) and the newest item: its related p6 comes first.
    while recs() != ["p6", "p2", "p3"]:
        assert time.monotonic() - answered < 1.0, "recommendations did not change within one second"
        time.sleep(0.02)
    assert time.monotonic() - answered < 1.0
