"""End to end through the real broker and real worker processes.

The collectors run in pytest-django's live server (real HTTP); the official
Python SDKs (Segment's and RudderStack's) post to it, and so do requests
recorded in the shape the other official SDKs send; a `celery -A config worker`
process stores what the broker delivers.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import psycopg2
import pytest
from django.db import connection
from kombu import Connection, Queue

from config.celery import app
from crm.models import Device, Event, Profile
from crm.services import profile_upsert, project_create

pytestmark = [pytest.mark.broker, pytest.mark.django_db(transaction=True)]

RECORDED = Path(__file__).parent / "sdk_requests"


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def http_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_official_sdks_end_to_end(live_server, celery_worker_process):
    from rudderstack.analytics.client import Client as RudderClient
    from segment.analytics.client import Client as SegmentClient

    project, keys = project_create(name="SDK shop")
    celery_worker_process(queues=["ingest"])

    # Segment's Python SDK, gzip on, as a server would use it.
    segment_errors = []
    segment = SegmentClient(
        keys.write_key, host=live_server.url, gzip=True, sync_mode=True, on_error=lambda e, b: segment_errors.append(e)
    )
    segment.identify("py-user", {"email": "py@x.io", "plan": "pro"}, anonymous_id="py-anon")
    segment.track("py-user", "Product Viewed", {"product_id": "sku-1"})
    segment.track("py-user", "Order Completed", {"products": [{"product_id": "sku-2"}]})
    segment.page("py-user", "Docs", "Install")
    segment.alias("py-anon-old", "py-user")
    segment.flush()
    # RudderStack's Python SDK (gzip by default).
    rudder_errors = []
    rudder = RudderClient(
        keys.write_key, host=live_server.url, sync_mode=True, on_error=lambda e, b: rudder_errors.append(e)
    )
    rudder.identify("rs-user", {"email": "rs@x.io"})
    rudder.track("rs-user", "Product Added", {"product_id": "sku-3"})
    rudder.screen("rs-user", "Cart")
    rudder.group("rs-user", "acme", {"seats": 5})
    rudder.flush()
    assert segment_errors == [] and rudder_errors == []

    # Recorded requests of the other official SDKs (see sdk_requests/README.md).
    expected_recorded = 0
    for path in sorted(RECORDED.glob("*.json")):
        recorded = json.loads(path.read_text())
        body = json.dumps(recorded["body"]).replace("WRITE_KEY", keys.write_key).encode()
        headers = {k: v.replace("WRITE_KEY_BASIC", base64.b64encode(f"{keys.write_key}:".encode()).decode())
                   for k, v in recorded["headers"].items()}  # fmt: skip
        if headers.get("Content-Encoding") == "gzip":
            body = gzip.compress(body)
        status, answer = http_post(live_server.url + recorded["path"], body, headers)
        assert (path.name, status, answer) == (path.name, 200, {"success": True})
        expected_recorded += len(recorded["body"].get("batch", [recorded["body"]]))

    total = 9 + expected_recorded
    wait_for(lambda: Event.objects.filter(project=project).count() == total, what=f"{total} events stored")

    py = Profile.objects.get(project=project, user_id="py-user")
    assert py.traits == {"email": "py@x.io", "plan": "pro"}
    assert (py.recent_viewed, py.recent_purchased) == (["sku-1"], ["sku-2"])
    assert set(py.anonymous_ids.values_list("anonymous_id", flat=True)) == {"py-anon", "py-anon-old"}
    assert Event.objects.filter(profile=py).count() == 5
    rs = Profile.objects.get(project=project, user_id="rs-user")
    assert (rs.email, rs.recent_viewed) == ("rs@x.io", ["sku-3"])
    assert sorted(Event.objects.filter(profile=rs).values_list("type", flat=True)) == [
        "group", "identify", "screen", "track",
    ]  # fmt: skip
    # The mobile SDKs' context reached the device and the profile.
    ios = Device.objects.get(project=project, device_id="B8E6E2A4-3C4E-4F0B-9D1B-6A1C2F7B9E11")
    apns = "ff15bc0c20c4aa6cd50854ff165fd265c838e5405bfeb9571066395b8c9da449"
    assert (ios.platform, ios.push_token, ios.os_version, ios.app_version) == ("ios", apns, "17.4.1", "2.3.0")
    android = Device.objects.get(project=project, device_id="9e3d2a7b61f04c55")
    assert (android.platform, android.os_name, android.profile.user_id) == ("android", "Android", "kotlin-user")
    assert android.profile.locale == "de-DE"
    web = Profile.objects.get(project=project, user_id="js-user")
    assert web.recent_viewed == ["js-sku-9"]


@pytest.mark.amqp
def test_worker_killed_mid_batch_loses_nothing_and_stores_everything_once(live_server, celery_worker_process):
    """kill -9 of the worker (`--pool solo`, as production runs it) while it
    waits inside a batch: chunk 1 (1,000 messages) is committed, chunk 2 is
    not. The broker redelivers the unacknowledged message to the restarted
    worker. (The prefork pool is what the SDK test above runs.)"""
    project, keys = project_create(name="Kill shop")
    blocker_profile = profile_upsert(project_id=project.pk, user_id="blocked")
    auth = "Basic " + base64.b64encode(f"{keys.write_key}:".encode()).decode()
    messages = [
        {"type": "track", "userId": f"u{i % 50}", "event": "Product Viewed", "messageId": f"k{i}",
         "properties": {"product_id": f"p{i}"}, "timestamp": f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z"}
        for i in range(1000)
    ]  # fmt: skip
    # Chunk 2 touches the profile the test keeps locked, so the worker waits there.
    messages += [
        {"type": "track", "userId": "blocked", "event": "Product Viewed", "messageId": f"k{1000 + i}",
         "properties": {"product_id": f"q{i}"}, "timestamp": f"2026-01-01T01:00:{i:02d}Z"}
        for i in range(20)
    ]  # fmt: skip
    messages.append({**messages[5]})  # a repeated message id: stored once
    db = connection.settings_dict
    lock = psycopg2.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"] or "postgres", dbname=db["NAME"]
    )
    lock_cursor = lock.cursor()
    lock_cursor.execute("SELECT id FROM crm_profile WHERE id = %s FOR UPDATE", [blocker_profile.pk])

    worker = celery_worker_process(queues=["ingest"], pool="solo")
    status, answer = http_post(
        live_server.url + "/v1/batch",
        json.dumps({"batch": messages}).encode(),
        {"Authorization": auth, "Content-Type": "application/json"},
    )
    assert (status, answer) == (200, {"success": True})
    wait_for(lambda: Event.objects.filter(project=project).count() == 1000, what="chunk 1 committed")
    time.sleep(1.0)  # the worker is now blocked on the locked row in chunk 2
    assert Event.objects.filter(project=project).count() == 1000

    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    lock.rollback()
    lock.close()
    celery_worker_process(queues=["ingest"], pool="solo")
    wait_for(lambda: Event.objects.filter(project=project).count() == 1020, timeout=90, what="redelivery stored")
    time.sleep(1.0)  # nothing else arrives later
    assert Event.objects.filter(project=project).count() == 1020
    assert Event.objects.filter(project=project).values("message_id").distinct().count() == 1020
    blocked = Profile.objects.get(pk=blocker_profile.pk)
    assert blocked.recent_viewed == [f"q{i}" for i in range(19, 9, -1)]
    # u0 viewed p0, p50, ..., p950 in chunk 1: its newest ten, once each.
    assert Profile.objects.get(project=project, user_id="u0").recent_viewed == [f"p{i}" for i in range(950, 450, -50)]
    with Connection(app.conf.broker_url) as conn:
        assert conn.default_channel.queue_declare("ingest", passive=True).message_count == 0


@pytest.mark.amqp
@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_worker_killed_repeatedly_under_load_stores_every_accepted_event_once(
    queue_type, uwsgi_process, celery_worker_process
):
    """The proof of the delivery guarantee, on each queue type offered
    (INGEST_QUEUE_TYPE): batches keep arriving at the collectors (uWSGI, as
    production runs them) while the worker's main process (`--pool solo`: the
    one that runs the tasks) is killed with SIGKILL three times and restarted.
    Every message answered 200 is stored exactly once, and the last one within
    a minute of the last start."""
    import threading

    env = {"INGEST_QUEUE_TYPE": queue_type}
    with Connection(app.conf.broker_url) as conn:
        # A queue's type is fixed when it is declared: this test's queue is its own.
        conn.default_channel.queue_delete("ingest")
        if queue_type == "quorum":
            conn.default_channel.queue_declare(
                "ingest", durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"}
            )
    project, keys = project_create(name=f"Kill load shop {queue_type}")
    port = uwsgi_process("--processes", "2", "--threads", "4", env=env)
    auth = "Basic " + base64.b64encode(f"{keys.write_key}:".encode()).decode()
    accepted: list[str] = []
    answers: list[int] = []
    stop = threading.Event()

    def post_batches(sender: int) -> None:
        n = 0
        while not stop.is_set():
            ids = [f"s{sender}-{n}-{i}" for i in range(20)]
            batch = [
                {"type": "track", "userId": f"u{(n + i) % 30}", "event": "Product Viewed", "messageId": mid,
                 "properties": {"product_id": f"p{i}"}}
                for i, mid in enumerate(ids)
            ]  # fmt: skip
            status, _ = http_post(
                f"http://127.0.0.1:{port}/v1/batch",
                json.dumps({"batch": batch}).encode(),
                {"Authorization": auth, "Content-Type": "application/json"},
            )
            answers.append(status)
            if status == 200:
                accepted.extend(ids)
            n += 1
            time.sleep(0.02)

    senders = [threading.Thread(target=post_batches, args=(k,)) for k in range(2)]
    worker = celery_worker_process(queues=["ingest"], pool="solo", extra_env=env)
    for thread in senders:
        thread.start()
    try:
        for _ in range(3):
            time.sleep(1.5)  # batches stored, in flight and queued
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
            time.sleep(0.5)  # accepted while no worker runs: they wait in the queue
            worker = celery_worker_process(queues=["ingest"], pool="solo", extra_env=env)
        last_start = time.monotonic()
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in senders:
            thread.join()

    try:
        assert set(answers) == {200}
        assert len(accepted) >= 3 * 20 * 10  # it was under load: hundreds of events per kill
        wait_for(
            lambda: Event.objects.filter(project=project).count() >= len(accepted),
            timeout=60,
            what="every accepted event",
        )
        assert time.monotonic() - last_start < 60
        time.sleep(1.0)  # a late redelivery would show up now
        stored = list(Event.objects.filter(project=project).values_list("message_id", flat=True))
        assert len(stored) == len(accepted)
        assert sorted(stored) == sorted(accepted)
    finally:
        if queue_type == "quorum":
            with Connection(app.conf.broker_url) as conn:
                conn.default_channel.queue_delete("ingest")  # the other tests declare a classic one


def test_the_collector_only_queues_and_the_message_waits_for_a_worker(live_server):
    """No worker: the 200 comes back, the message is in the `ingest` queue, and
    nothing is in the database."""
    project, keys = project_create(name="Queue shop")
    with Connection(app.conf.broker_url) as conn:
        channel = conn.default_channel
        channel.queue_declare(queue="ingest", durable=True, auto_delete=False)
        channel.queue_purge("ingest")
        auth = "Basic " + base64.b64encode(f"{keys.write_key}:".encode()).decode()
        status, answer = http_post(
            live_server.url + "/v1/track",
            json.dumps({"userId": "u1", "event": "Queued", "messageId": "q-1"}).encode(),
            {"Authorization": auth},
        )
        assert (status, answer) == (200, {"success": True})
        queue = Queue("ingest").bind(channel)
        message = wait_for(lambda: queue.get(no_ack=True), what="the queued message")
        assert message.headers["task"] == "ingestion.ingest_batch"
        # The task's one argument: the requests' messages as one string of JSON.
        payload = message.decode()[0][0]
        assert isinstance(payload, str)
        items = json.loads(payload)
        assert [(i["project_id"], [m["messageId"] for m in i["messages"]]) for i in items] == [(project.pk, ["q-1"])]
    assert Event.objects.count() == 0 and Profile.objects.count() == 0
