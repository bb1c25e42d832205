"""The collectors as production runs them: uWSGI processes with threads (the
publisher's group commit needs requests side by side), a real broker, and solo
ingest workers. Requests from several kept-alive connections at once are
answered 200 only once queued, and every event is stored once."""

import base64
import http.client
import json
import threading

import pytest

from crm.models import Event, Profile
from crm.services import project_create
from tests.ingestion.test_worker import wait_for

pytestmark = [pytest.mark.broker]


def test_concurrent_requests_on_uwsgi_threads_are_stored_once(uwsgi_process, celery_worker_process):
    project, keys = project_create(name="uWSGI shop")
    port = uwsgi_process("--processes", "2", "--threads", "4")
    celery_worker_process(queues=["ingest"], pool="solo")
    auth = "Basic " + base64.b64encode(f"{keys.write_key}:".encode()).decode()
    answers: list[tuple[int, dict]] = []

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in range(20):  # one kept-alive connection per client
            body = {"userId": f"u{n}", "event": "Product Viewed", "messageId": f"c{n}-{i}",
                    "properties": {"product_id": f"p{i}"}, "timestamp": f"2026-01-01T00:00:{i:02d}Z"}  # fmt: skip
            conn.request("POST", "/v1/track", json.dumps(body), {"Authorization": auth})
            response = conn.getresponse()
            answers.append((response.status, json.loads(response.read())))
        batch = [{"type": "track", "userId": f"u{n}", "event": "Product Viewed", "messageId": f"c{n}-{i}",
                  "properties": {"product_id": f"p{i}"}} for i in range(15, 25)]  # fmt: skip
        conn.request("POST", "/v1/batch", json.dumps({"batch": batch}), {"Authorization": auth})
        response = conn.getresponse()
        answers.append((response.status, json.loads(response.read())))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert answers == [(200, {"success": True})] * (6 * 21)
    # 20 single events and 5 new of the batch's 10 per client (5 repeat message ids).
    wait_for(lambda: Event.objects.filter(project=project).count() == 6 * 25, what="all events stored")
    assert Event.objects.filter(project=project).values("message_id").distinct().count() == 6 * 25
    # Every user's newest ten views, in time order (the batch's five new ones last).
    assert Profile.objects.get(project=project, user_id="u3").recent_viewed[:5] == ["p24", "p23", "p22", "p21", "p20"]
