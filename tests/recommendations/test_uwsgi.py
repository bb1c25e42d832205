"""The recommendation API as production runs it: uWSGI processes (HTTP/1.1
keep-alive, threads enabled for the tracking flush), answering over a real socket."""

import http.client
import json
import time

import pytest

from recommendations.models import RecommendationServed
from tests.recommendations.serving_data import catalog_write, user_write, version_write


@pytest.fixture
def uwsgi_server(uwsgi_process):  # noqa: ANN001, ANN201
    # Buffered tracking: written by the flush thread, which needs --enable-threads.
    return uwsgi_process("--processes", "2", env={"RECS_TRACKING_FLUSH_SECONDS": "0.2"})


def test_uwsgi_answers_over_one_kept_alive_connection_and_records_the_lists(uwsgi_server, project_a):
    project, keys = project_a
    catalog_write(project.pk)
    version_write(project.pk)
    user_write(project.pk, "u1", viewed=["p3", "p1"])
    conn = http.client.HTTPConnection("127.0.0.1", uwsgi_server, timeout=10)
    answers = []
    for _ in range(3):  # the same connection each time: HTTP/1.1 keep-alive
        conn.request(
            "GET", "/api/v1/users/u1/recommendations?limit=3", headers={"Authorization": f"Bearer {keys.secret_key}"}
        )
        response = conn.getresponse()
        answers.append((response.status, json.loads(response.read())))
    conn.request("GET", "/healthz")  # Django's own routes, same process
    assert conn.getresponse().status == 200
    assert [status for status, _ in answers] == [200, 200, 200]
    assert [[p["product_id"] for p in body["products"]] for _, body in answers] == [["p2", "p4", "p5"]] * 3
    ids = {body["recommendation_id"] for _, body in answers}
    deadline = time.monotonic() + 10
    while RecommendationServed.objects.filter(pk__in=ids).count() < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(RecommendationServed.objects.filter(pk__in=ids).values_list("surface", flat=True)) == {"api"}
    assert RecommendationServed.objects.filter(pk__in=ids).count() == 3
