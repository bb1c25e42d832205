"""Ingestion benchmark: the production processes on this machine, load from a
separate process, figures on the last line as one JSON object.

    .venv/bin/python bench/ingest.py [--duration 20] [--broker amqp://guest:guest@127.0.0.1:5672//]

Starts, against a fresh PostgreSQL database (dropped and created):
gunicorn (config.wsgi, gthread workers, as in production) and one Celery worker
process on the `ingest` queue. Then:

1. warm-up: every benchmark user is identified once through the collector, and
   the tables are ANALYZEd (a store in service has its users and statistics);
2. batches of 100 events from bench/ingest_load.py for --duration seconds,
   while a probe posts one `Product Viewed` every 100 ms and times how long
   after the collector's 200 the product is first in the profile's
   recent_viewed (`freshness_*`); then waits until every accepted event is
   stored (`events_per_s_stored` = accepted events / time from the first
   request until the last one was stored);
3. single-event requests (`/v1/track`) for --duration seconds
   (`single_requests_per_s`, `p50_ms`, `p99_ms` of those requests), and the
   time until they are stored.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def _psql(admin_url: str, sql: str) -> None:
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


class Stack:
    """The processes under test, stopped on exit."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs: list[subprocess.Popen] = []
        self.env = {
            **os.environ,
            "DATABASE_URL": args.database,
            "CELERY_BROKER_URL": args.broker,
            "SECRET_KEY": "bench-" + "k" * 60,
            "DEBUG": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            # Plain HTTP on the loopback: no TLS proxy in front in this benchmark.
            "SECURE_SSL_REDIRECT": "0",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }

    def manage(self, *argv: str) -> str:
        out = subprocess.run(
            [sys.executable, "manage.py", *argv], cwd=ROOT, env=self.env, check=True, capture_output=True, text=True
        )
        return out.stdout

    def start(self, argv: list[str], name: str) -> None:
        log = open(Path(self.args.log_dir) / f"{name}.log", "w")  # noqa: SIM115 - kept open for the process
        self.procs.append(
            subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _stored(conn: Any, project_id: int) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM crm_event WHERE project_id = %s", [project_id])
        return cur.fetchone()[0]


def _wait_stored(conn: Any, project_id: int, target: int, timeout: float) -> float:
    """Seconds (perf_counter) at which the project's event count reached target."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if _stored(conn, project_id) >= target:
            return time.perf_counter()
        time.sleep(0.05)
    raise RuntimeError(f"only {_stored(conn, project_id)} of {target} events stored after {timeout} s")


def _load(args: argparse.Namespace, write_key: str, mode: str, prefix: int, connections: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "ingest_load.py"),
            "--port",
            str(args.port),
            "--write-key",
            write_key,
            "--mode",
            mode,
            "--duration",
            str(args.duration),
            "--connections",
            str(connections),
            "--users",
            str(args.users),
            "--prefix",
            str(prefix),
            "--batch-size",
            str(args.batch_size),
        ],  # fmt: skip
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


class FreshnessProbe(threading.Thread):
    """Posts one Product Viewed at a time and waits until the product is first
    in the profile's recent_viewed; records seconds after the collector's 200."""

    def __init__(self, args: argparse.Namespace, write_key: str, project_id: int) -> None:
        super().__init__(daemon=True)
        self.args, self.project_id = args, project_id
        self.auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
        self.stop_event = threading.Event()
        self.samples: list[float] = []
        self.missed = 0

    def run(self) -> None:
        conn = psycopg2.connect(self.args.database.replace("postgres://", "postgresql://"))
        conn.autocommit = True
        client = http.client.HTTPConnection("127.0.0.1", self.args.port, timeout=10)
        n = 0
        while not self.stop_event.is_set():
            n += 1
            user, product = f"probe-{n % 20}", f"fresh-{uuid.uuid4().hex[:12]}"
            body = json.dumps(
                {"userId": user, "event": "Product Viewed", "properties": {"product_id": product}}
            ).encode()
            started = time.perf_counter()
            client.request(
                "POST", "/v1/track", body=body, headers={"Authorization": self.auth, "Content-Type": "application/json"}
            )
            response = client.getresponse()
            response.read()
            answered = time.perf_counter()
            if response.status != 200:
                self.missed += 1
                continue
            seen = None
            with conn.cursor() as cur:
                while time.perf_counter() - answered < 30:
                    cur.execute(
                        "SELECT recent_viewed->>0 FROM crm_profile WHERE project_id = %s AND user_id = %s",
                        [self.project_id, user],
                    )
                    row = cur.fetchone()
                    if row and row[0] == product:
                        seen = time.perf_counter()
                        break
                    time.sleep(0.002)
            if seen is None:
                self.missed += 1
            else:
                self.samples.append(seen - answered)
            time.sleep(max(0.0, 0.1 - (time.perf_counter() - started)))
        conn.close()


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per load phase")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/engage_bench_ingest")
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--port", type=int, default=8391)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--web-threads", type=int, default=8)
    parser.add_argument("--ingest-concurrency", type=int, default=2)
    parser.add_argument("--batch-connections", type=int, default=8)
    parser.add_argument("--single-connections", type=int, default=16)
    parser.add_argument("--log-dir", default="/tmp/bench-ingest")
    args = parser.parse_args()
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)

    db_name = args.database.rsplit("/", 1)[1]
    admin_url = args.database.rsplit("/", 1)[0].replace("postgres://", "postgresql://") + "/postgres"
    _psql(admin_url, f'DROP DATABASE IF EXISTS "{db_name}"')
    _psql(admin_url, f'CREATE DATABASE "{db_name}"')

    stack = Stack(args)
    try:
        _log("migrating a fresh database")
        stack.manage("migrate", "--noinput")
        project = json.loads(stack.manage("create_project", "Bench shop").strip().splitlines()[-1])
        project_id, write_key = project["id"], project["write_key"]

        from kombu import Connection

        with Connection(args.broker) as conn:
            try:
                conn.default_channel.queue_purge("ingest")
            except Exception:  # noqa: BLE001 - the queue does not exist yet
                pass

        stack.start(
            [
                str(BIN / "gunicorn"),
                "config.wsgi:application",
                "--bind",
                f"127.0.0.1:{args.port}",
                "--worker-class",
                "gthread",
                "--workers",
                str(args.web_workers),
                "--threads",
                str(args.web_threads),
                "--keep-alive",
                "30",
                "--backlog",
                "2048",
            ],  # fmt: skip
            "gunicorn",
        )
        stack.start(
            [
                str(BIN / "celery"),
                "-A",
                "config",
                "worker",
                "-Q",
                "ingest",
                "--concurrency",
                str(args.ingest_concurrency),
                "-n",
                "bench-ingest@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "WARNING",
            ],  # fmt: skip
            "celery-ingest",
        )
        for _ in range(200):
            try:
                http.client.HTTPConnection("127.0.0.1", args.port, timeout=1).request("GET", "/healthz")
                break
            except OSError:
                time.sleep(0.1)
        db = psycopg2.connect(args.database.replace("postgres://", "postgresql://"))
        db.autocommit = True

        _log(f"warm-up: identifying {args.users} users")
        auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
        warm = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
        for start in range(0, args.users, 500):
            batch = [
                {"type": "identify", "userId": f"user-{u}", "anonymousId": f"anon-{u}", "traits": {"plan": "free"}}
                for u in range(start, min(args.users, start + 500))
            ]
            warm.request("POST", "/v1/batch", body=json.dumps({"batch": batch}), headers={"Authorization": auth})
            response = warm.getresponse()
            response.read()
            assert response.status == 200, response.status
        _wait_stored(db, project_id, args.users, timeout=300)
        with db.cursor() as cur:
            cur.execute("ANALYZE")
        base = _stored(db, project_id)

        _log(f"phase 1: batches of {args.batch_size} for {args.duration} s, with the freshness probe")
        probe = FreshnessProbe(args, write_key, project_id)
        started = time.perf_counter()
        probe.start()
        batch = _load(args, write_key, "batch", 0, args.batch_connections)
        probe.stop_event.set()
        probe.join()
        target = base + batch["events_accepted"] + len(probe.samples) + probe.missed
        stored_at = _wait_stored(db, project_id, target - probe.missed, timeout=600)
        events_per_s_stored = batch["events_accepted"] / (stored_at - started)
        base = _stored(db, project_id)

        _log(f"phase 2: single-event requests for {args.duration} s")
        started = time.perf_counter()
        single = _load(args, write_key, "single", 10**9, args.single_connections)
        single_stored_at = _wait_stored(db, project_id, base + single["ok"], timeout=600)
    finally:
        stack.stop()

    result = {
        "events_per_s_accepted": batch["events_per_s_accepted"],
        "events_per_s_stored": round(events_per_s_stored, 1),
        "single_requests_per_s": single["requests_per_s"],
        "p50_ms": single["p50_ms"],
        "p99_ms": single["p99_ms"],
        "freshness_p50_ms": _pct(probe.samples, 0.50),
        "freshness_p99_ms": _pct(probe.samples, 0.99),
        "freshness_samples": len(probe.samples),
        "freshness_missed": probe.missed,
        "batch_requests_per_s": batch["requests_per_s"],
        "batch_p50_ms": batch["p50_ms"],
        "batch_p99_ms": batch["p99_ms"],
        "batch_errors": batch["errors"],
        "single_errors": single["errors"],
        "single_events_per_s_stored": round(single["ok"] / (single_stored_at - started), 1),
        "duration_s": args.duration,
        "batch_size": args.batch_size,
        "web": f"gunicorn gthread {args.web_workers}x{args.web_threads}",
        "ingest_workers": args.ingest_concurrency,
        "broker": args.broker.split(":", 1)[0],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
