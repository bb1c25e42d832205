"""The recommendation API as production runs it: uWSGI processes (HTTP/1.1
keep-alive, threads enabled for the tracking flush), answering over a real socket."""

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from recommendations.models import RecommendationServed
from tests.recommendations.serving_data import catalog_write, user_write, version_write

pytestmark = pytest.mark.postgres

UWSGI = str(Path(sys.executable).with_name("uwsgi"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def uwsgi_server(transactional_db):  # noqa: ANN001, ANN201
    db = connection.settings_dict
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/"
        f"{db['NAME']}",
        # Buffered tracking: written by the flush thread, which needs --enable-threads.
        "RECS_TRACKING_FLUSH_SECONDS": "0.2",
    }
    proc = subprocess.Popen(
        [UWSGI, "--http11-socket", f"127.0.0.1:{port}", "--processes", "2", "--module", "config.wsgi:application",
         "--master", "--lazy-apps", "--enable-threads", "--die-on-term", "--need-app", "--disable-logging"],
        env=env, cwd=Path(__file__).resolve().parents[2], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                os.killpg(proc.pid, signal.SIGKILL)
                raise AssertionError("uWSGI did not start") from None
            time.sleep(0.2)
    yield port
    # The whole process group: workers must not outlive the test with their
    # database connections (the test database is dropped at the end).
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


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
