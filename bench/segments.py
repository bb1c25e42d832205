"""Segments benchmark: count, full computation and incremental membership of the
issue's segment on 1,000,000 profiles and 5,000,000 events, against PostgreSQL.
Prints one JSON object on its last line.

    .venv/bin/python bench/segments.py [--users 1000000 --events 5000000 --products 100000]
        [--database engage_bench_segments] [--prepare]

1. Data (skipped when the state file var/bench_segments.json names a database
   generated less than a day ago, unless --prepare): a fresh database, migrated,
   one project, `generate_demo_data` (90 days of history ending now), ANALYZE.
2. `count_s`: the segment "country in (GB, US, DE) AND did Product Viewed at
   least 3 times in the last 7 days AND did not Order Completed in the last 30
   days" counted by its one compiled SQL query, three times (`count_s` is the
   median, `count_first_s` the first); its EXPLAIN (ANALYZE, BUFFERS) goes to
   var/bench_segments_plan.txt. `preview_s`: the whole preview of the console
   and the API (campaigns.segments.selectors.segment_preview).
3. `full_compute_s`: the segment's membership stored from scratch
   (campaigns.segments.membership.segment_compute_full).
4. `incremental_p99_ms`: the production processes (uWSGI collectors, one Celery
   worker on `ingest`, one on `segments`) under --background-rate events/s of
   batches for existing users (bench/ingest_load.py), while a probe posts, every
   --probe-interval seconds, a new user's identify (country GB) and three
   Product Viewed in one batch, and times from the moment its last event is
   visible in the events table to the moment its membership row is.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STATE = ROOT / "var" / "bench_segments.json"
PLAN = ROOT / "var" / "bench_segments_plan.txt"
PG = "postgres://postgres@127.0.0.1:5432"

RULES = {
    "all": [
        {"profile": "country", "op": "in", "value": ["GB", "US", "DE"]},
        {"event": "Product Viewed", "count": {"op": "gte", "value": 3}, "window": {"last_days": 7}},
        {"event": "Order Completed", "did": False, "window": {"last_days": 30}},
    ]
}


def _log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def _env(database: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": f"{PG}/{database}",
        "DEBUG": "0",
        "SECRET_KEY": "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "0",
        "STATIC_MANIFEST": "0",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("CELERY_BROKER_URL", None)
    return env


def _sql(database: str, statement: str) -> None:
    connection = psycopg2.connect(f"{PG}/{database}")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(statement)
    connection.close()


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    env = _env(args.database)
    manage = [sys.executable, str(ROOT / "manage.py")]
    _sql("postgres", f'DROP DATABASE IF EXISTS "{args.database}"')
    _sql("postgres", f'CREATE DATABASE "{args.database}"')
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True)
    created = subprocess.run(
        [*manage, "create_project", "Segments bench"], env=env, check=True, capture_output=True, text=True
    )
    keys = json.loads(created.stdout)
    started = time.perf_counter()
    generated_at = datetime.now(UTC)
    subprocess.run(
        [*manage, "generate_demo_data", "--project", str(keys["id"]), "--users", str(args.users),
         "--products", str(args.products), "--events", str(args.events), "--seed", "5", "--no-progress"],
        env=env, check=True,
    )  # fmt: skip
    # VACUUM too: a freshly loaded table has no visibility map yet, and index-only scans
    # would visit the heap for every row until autovacuum reaches it.
    _sql(args.database, "VACUUM ANALYZE")
    state = {
        **keys,
        "database": args.database,
        "users": args.users,
        "products": args.products,
        "events": args.events,
        "generated_at": generated_at.isoformat(),
        "generate_s": round(time.perf_counter() - started, 1),
    }
    STATE.parent.mkdir(parents=True, exist_ok=True)
    STATE.write_text(json.dumps(state))
    return state


def _state(args: argparse.Namespace) -> dict[str, Any]:
    if not args.prepare and STATE.exists():
        state = json.loads(STATE.read_text())
        age = datetime.now(UTC) - datetime.fromisoformat(state["generated_at"])
        same = all(state.get(k) == getattr(args, k) for k in ("database", "users", "events", "products"))
        # The rules look back 7 and 30 days from now: older data would thin the windows out.
        if same and age.total_seconds() < 86400:
            manage = [sys.executable, str(ROOT / "manage.py")]
            subprocess.run([*manage, "migrate", "-v0"], env=_env(args.database), check=True)
            return state
    _log("generating the data set (several minutes)")
    return prepare(args)


def in_process(state: dict[str, Any]) -> dict[str, Any]:
    """count_s and full_compute_s, in this process (Django set up on the bench database)."""
    os.environ.update(_env(state["database"]))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection, transaction
    from django.utils import timezone

    from campaigns.models import Segment, SegmentMembership
    from campaigns.segments.compiler import rules_q, segment_session_prepare
    from campaigns.segments.membership import segment_compute_full
    from campaigns.segments.rules import rules_dependencies, rules_parse
    from campaigns.segments.selectors import segment_preview
    from crm.models import Profile

    project_id = state["id"]
    node = rules_parse(RULES, project_id=project_id)
    now = timezone.now()
    query = Profile.objects.filter(project_id=project_id).filter(rules_q(node, now=now))
    counts, times = [], []
    for _ in range(3):
        started = time.perf_counter()
        with transaction.atomic():
            segment_session_prepare()  # as the service runs it
            counts.append(query.count())
        times.append(time.perf_counter() - started)
    started = time.perf_counter()
    preview = segment_preview(project_id=project_id, rules=RULES, now=now)
    preview_s = time.perf_counter() - started
    sql, sql_params = query.values("id").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET jit = off")
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) SELECT count(*) FROM ({sql}) AS members", sql_params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    shown = sql % tuple(map(repr, sql_params))
    PLAN.write_text(f"-- {datetime.now(UTC):%Y-%m-%d} bench/segments.py count query\n{shown}\n\n{plan}\n")

    Segment.objects.filter(project_id=project_id).delete()
    segment = Segment.objects.create(
        project_id=project_id, name="Bench segment", rules=RULES, dependencies=rules_dependencies(node).as_json()
    )
    started = time.perf_counter()
    members = segment_compute_full(segment_id=segment.pk, rules_version=segment.rules_version)
    full_compute_s = time.perf_counter() - started
    stored = SegmentMembership.objects.filter(segment_id=segment.pk).count()
    return {
        "segment_id": segment.pk,
        "count": counts[0],
        "count_s": round(statistics.median(times), 3),
        "count_first_s": round(times[0], 3),
        # The console's and API's preview: the count with the reachable count per
        # channel (one aggregate), the 20-profile sample and its explanation.
        "preview_s": round(preview_s, 3),
        "preview_reachable": preview.reachable,
        "full_compute_s": round(full_compute_s, 2),
        "full_compute_members": members,
        "members_stored": stored,
    }


class Probe(threading.Thread):
    """Posts a new user who meets the segment's rules, times event-visible to member-visible."""

    def __init__(self, args: argparse.Namespace, state: dict[str, Any], segment_id: int) -> None:
        super().__init__(daemon=True)
        self.args, self.state, self.segment_id = args, state, segment_id
        self.auth = "Basic " + base64.b64encode(f"{state['write_key']}:".encode()).decode()
        self.stop_event = threading.Event()
        self.samples: list[float] = []
        self.missed = 0

    def run(self) -> None:
        conn = psycopg2.connect(f"{PG}/{self.state['database']}")
        conn.autocommit = True
        client = http.client.HTTPConnection("127.0.0.1", self.args.port, timeout=10)
        project_id = self.state["id"]
        while not self.stop_event.is_set():
            started = time.perf_counter()
            user = f"probe-{uuid.uuid4().hex[:12]}"
            last = f"probe-{uuid.uuid4().hex}"
            batch = [{"type": "identify", "userId": user, "traits": {"address": {"country": "GB"}}}] + [
                {
                    "type": "track",
                    "userId": user,
                    "event": "Product Viewed",
                    "properties": {"product_id": f"P{n}"},
                    **({"messageId": last} if n == 2 else {}),
                }
                for n in range(3)
            ]
            client.request(
                "POST",
                "/v1/batch",
                body=json.dumps({"batch": batch}).encode(),
                headers={"Authorization": self.auth, "Content-Type": "application/json"},
            )
            response = client.getresponse()
            response.read()
            if response.status != 200:
                self.missed += 1
                continue
            stored = member = None
            with conn.cursor() as cur:
                deadline = time.perf_counter() + 30
                while time.perf_counter() < deadline and member is None:
                    if stored is None:
                        cur.execute(
                            "SELECT 1 FROM crm_event WHERE project_id = %s AND message_id = %s", [project_id, last]
                        )
                        if cur.fetchone():
                            stored = time.perf_counter()
                    cur.execute(
                        "SELECT 1 FROM campaigns_segmentmembership m JOIN crm_profile p ON p.id = m.profile_id"
                        " WHERE m.segment_id = %s AND p.project_id = %s AND p.user_id = %s",
                        [self.segment_id, project_id, user],
                    )
                    if cur.fetchone():
                        member = time.perf_counter()
                        stored = stored or member
                    else:
                        time.sleep(0.005)
            if member is None:
                self.missed += 1
            else:
                self.samples.append(member - stored)
            time.sleep(max(0.0, self.args.probe_interval - (time.perf_counter() - started)))
        conn.close()


def incremental(args: argparse.Namespace, state: dict[str, Any], segment_id: int) -> dict[str, Any]:
    env = {
        **_env(state["database"]),
        "CELERY_BROKER_URL": args.broker,
        "WEB_SWITCH_INTERVAL_MS": "0",
        "INGEST_PUBLISH_LINGER_MS": "10",
    }
    if args.broker.startswith("amqp"):
        vhost = args.broker.rsplit("/", 1)[1] or "/"
        for argv in (["add_vhost", vhost], ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]):
            subprocess.run(["rabbitmqctl", *argv], capture_output=True, check=False)
    logs = Path(args.log_dir)
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []

    def start(argv: list[str], name: str) -> None:
        log = open(logs / f"{name}.log", "w")  # noqa: SIM115 - kept open for the process
        procs.append(
            subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )

    worker = [str(BIN / "celery"), "-A", "config", "worker", "--without-gossip", "--without-mingle",
              "--without-heartbeat", "-l", "WARNING", "--pool", "solo"]  # fmt: skip
    try:
        start(
            [str(BIN / "uwsgi"), "--http11-socket", f"127.0.0.1:{args.port}", "--module", "config.wsgi:application",
             "--master", "--lazy-apps", "--enable-threads", "--processes", "2", "--threads", "16",
             "--disable-logging", "--die-on-term", "--need-app"],
            "uwsgi",
        )  # fmt: skip
        start([*worker, "-Q", "ingest", "-n", "bench-seg-ingest@%h"], "celery-ingest")
        start([*worker, "-Q", "segments", "-n", "bench-seg-segments@%h"], "celery-segments")
        for _ in range(300):
            try:
                probe = http.client.HTTPConnection("127.0.0.1", args.port, timeout=1)
                probe.request("GET", "/healthz")
                probe.getresponse().read()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(3)  # workers connected
        probe = Probe(args, state, segment_id)
        probe.start()
        load = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "ingest_load.py"), "--port", str(args.port),
             "--write-key", state["write_key"], "--mode", "batch", "--batch-size", "100",
             "--rate", str(args.background_rate / 100), "--connections", "4", "--duration", str(args.duration),
             "--users", str(args.users), "--user-digits", "7", "--prefix", str(int(time.time()) % 10**6 * 1000)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        probe.stop_event.set()
        probe.join()
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
    background = json.loads(load.stdout.strip().splitlines()[-1])
    samples = sorted(probe.samples)

    def pct(p: float) -> float:
        return round(samples[min(len(samples) - 1, int(p * len(samples)))] * 1000, 1) if samples else 0.0

    return {
        "incremental_p50_ms": pct(0.50),
        "incremental_p99_ms": pct(0.99),
        "incremental_max_ms": round(samples[-1] * 1000, 1) if samples else 0.0,
        "incremental_samples": len(samples),
        "incremental_missed": probe.missed,
        "background_events_per_s_accepted": background["events_per_s_accepted"],
        "background_errors": background["errors"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--database", default="engage_bench_segments")
    parser.add_argument("--prepare", action="store_true", help="generate the data set even if a fresh one exists")
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/bench_segments")
    parser.add_argument("--port", type=int, default=8393)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the incremental phase")
    parser.add_argument("--background-rate", type=float, default=1000.0, help="background events per second")
    parser.add_argument("--probe-interval", type=float, default=0.25)
    parser.add_argument("--skip-incremental", action="store_true")
    parser.add_argument("--log-dir", default="/tmp/bench-segments")
    args = parser.parse_args()

    state = _state(args)
    if args.prepare_only:
        print(json.dumps(state))
        return
    result: dict[str, Any] = {"users": state["users"], "events": state["events"], "generate_s": state["generate_s"]}
    result.update(in_process(state))
    if not args.skip_incremental:
        result.update(incremental(args, state, result["segment_id"]))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
