"""Ingestion benchmark: the production processes on this machine, load from a
separate process, figures on the last line as one JSON object.

    .venv/bin/python bench/ingest.py [--duration 20] [--broker amqp://guest:guest@127.0.0.1:5672/bench_ingest]

Starts, against a fresh PostgreSQL database (dropped and created):
the collectors' web server (config.wsgi on uWSGI or gunicorn, --server) and the
Celery workers of the `ingest` queue (--ingest-pool, --ingest-workers). Then:

1. warm-up: every benchmark user is identified once through the collector,
   then batches like the target load's run for --warm-seconds (the workers'
   memory of identities and devices fills, as in a store in service), and
   the tables are ANALYZEd (a store in service has its users and statistics);
2. the target load: batches of 100 events from bench/ingest_load.py for
   --duration seconds, offered at --batch-rate requests/s (default 100: 10,000
   events/s, open loop), while a probe posts one `Product Viewed` every 100 ms
   and times how long after the collector's 200 the product is first in the
   profile's recent_viewed (`freshness_*`); then waits until every accepted
   event is stored (`events_per_s_stored_at_target`);
3. capacity: the same batches offered above the target, at --capacity-rate
   requests/s (default 120: 12,000 events/s), until every accepted event is
   stored (`events_per_s_stored` = accepted events / time from the first
   request until the last one was stored: what the pipeline stores end to end
   when offered more than it can take; offered exactly the target, that ratio
   could not reach the target even for a pipeline that keeps up);
4. single-event requests (`/v1/track`) for --duration seconds, offered open
   loop at --single-rate requests/s over --single-connections keep-alive
   connections (`single_requests_per_s`, and `p50_ms`, `p99_ms` timed from
   each request's scheduled send), and the time until they are stored.

Each phase also reports the CPU seconds every group of processes used on the
machine meanwhile (`*_phase_cpu_s`, "other" being work that is not this
benchmark), since the machine is shared.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import resource
import shutil
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
            "INGEST_PUBLISH_LINGER_MS": str(args.linger_ms),
            "WEB_SWITCH_INTERVAL_MS": str(args.switch_interval_ms),
            "INGEST_QUEUE_TYPE": args.ingest_queue_type,
        }
        if args.without_stored_hooks:
            self.env["DJANGO_SETTINGS_MODULE"] = "bench.ingest_settings_without_hooks"

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


def _cpu_by_process() -> dict[str, float]:
    """CPU seconds used so far by every process on the machine, by command name
    (processes that ended in between are not counted: sample around a phase)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[f"{entry}:{name}"] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def _cpu_delta(before: dict[str, float], after: dict[str, float], load_cpu: float) -> dict[str, float]:
    """CPU seconds per group of processes between two samples; the load
    generator has exited by then, so its time is measured apart (rusage)."""
    groups: dict[str, float] = {"load generator": round(load_cpu, 2)}
    for key, seconds in after.items():
        pid, name = key.split(":", 1)
        used = seconds - before.get(key, 0.0)
        if used <= 0:
            continue
        if name in ("gunicorn", "celery", "postgres"):
            group = name
        elif name == "uwsgi":
            group = "gunicorn"  # the web server, whichever it is
        elif name in ("beam.smp", "erl_child_setup", "inet_gethost", "epmd"):
            group = "rabbitmq"
        elif int(pid) == os.getpid():
            group = "bench driver + probe"
        else:
            group = "other (not this benchmark)"
        groups[group] = round(groups.get(group, 0.0) + used, 2)
    return dict(sorted(groups.items()))


class StoredCounter:
    """Counts a project's events stored since the counter was made: a range
    scan of the primary key past the highest id at that moment, polled every
    half second. (A full count(*) every 50 ms, as a first version did, made
    PostgreSQL scan the whole events table and slowed down what it measured.)"""

    def __init__(self, conn: Any, project_id: int) -> None:
        self.conn, self.project_id = conn, project_id
        with conn.cursor() as cur:
            cur.execute("SELECT coalesce(max(id), 0) FROM crm_event")
            self.base_id = cur.fetchone()[0]

    def count(self) -> int:
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM crm_event WHERE id > %s AND project_id = %s", [self.base_id, self.project_id]
            )
            return cur.fetchone()[0]

    def wait_for(self, target: int, timeout: float) -> float:
        """perf_counter() time at which at least `target` events were stored."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.count() >= target:
                return time.perf_counter()
            time.sleep(0.5)
        raise RuntimeError(f"only {self.count()} of {target} events stored after {timeout} s")


def _load(
    args: argparse.Namespace,
    write_key: str,
    mode: str,
    prefix: int,
    connections: int,
    rate: float,
    duration: float | None = None,
) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
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
            str(duration or args.duration),
            "--connections",
            str(connections),
            "--users",
            str(args.users),
            "--prefix",
            str(prefix),
            "--batch-size",
            str(args.batch_size),
            "--rate",
            str(rate),
            "--arrivals",
            args.arrivals,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["cpu_s"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return result


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
                    time.sleep(0.005)
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
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/engage_bench_ingest")
    # A vhost of its own: a worker of another test run on the same broker must
    # not take this benchmark's messages (nor this one theirs).
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/bench_ingest")
    parser.add_argument("--port", type=int, default=8391)
    parser.add_argument("--server", choices=["gunicorn", "uwsgi"], default="uwsgi", help="the collectors' server")
    parser.add_argument(
        "--uwsgi-router", action="store_true", help="uWSGI's HTTP router process in front of its workers"
    )
    parser.add_argument("--web-workers", type=int, default=2)
    # uWSGI's HTTP/1.1 socket gives a thread to each kept-alive connection: as
    # many threads as the load's connections (64 single + 8 batch + the probe).
    parser.add_argument("--web-threads", type=int, default=40)
    parser.add_argument("--ingest-concurrency", type=int, default=2, help="prefork pool processes per worker")
    parser.add_argument(
        "--ingest-pool",
        choices=["prefork", "solo"],
        default="solo",
        help="solo: --ingest-workers worker processes that run tasks themselves (no pool processes)",
    )
    parser.add_argument("--ingest-workers", type=int, default=2, help="worker processes (with --ingest-pool solo)")
    parser.add_argument(
        "--ingest-nice",
        type=int,
        default=0,
        help="the ingest workers' niceness (10: the collectors get the CPU first on a shared host)",
    )
    parser.add_argument(
        "--ingest-queue-type", choices=["classic", "quorum"], default="classic", help="INGEST_QUEUE_TYPE (RabbitMQ)"
    )
    parser.add_argument("--linger-ms", type=int, default=10, help="INGEST_PUBLISH_LINGER_MS of the web process")
    parser.add_argument("--switch-interval-ms", type=int, default=0, help="WEB_SWITCH_INTERVAL_MS of the web process")
    parser.add_argument(
        "--without-stored-hooks",
        action="store_true",
        help="run the worker without INGEST_STORED_EVENT_HOOKS (bench/ingest_settings_without_hooks.py)",
    )
    parser.add_argument("--batch-connections", type=int, default=8)
    parser.add_argument(
        "--warm-seconds", type=float, default=20.0, help="seconds of batch traffic after the identify warm-up"
    )
    parser.add_argument(
        "--capacity-rate", type=float, default=120.0, help="batch requests per second offered in the capacity phase"
    )
    parser.add_argument(
        "--batch-rate", type=float, default=100.0, help="batch requests per second offered (0: as fast as answered)"
    )
    parser.add_argument(
        "--single-rate",
        type=float,
        default=1500.0,
        help="single requests per second offered, open loop (0: closed loop, as fast as answered)",
    )
    parser.add_argument("--single-connections", type=int, default=64)
    parser.add_argument(
        "--arrivals",
        choices=["poisson", "lockstep"],
        default="lockstep",
        help="open-loop schedule of each connection (bench/ingest_load.py): independent clients, or all at once",
    )
    parser.add_argument(
        "--single-only", action="store_true", help="only the single-event phase, after the warm-up (batch figures 0)"
    )
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

        if args.broker.startswith("amqp") and shutil.which("rabbitmqctl"):
            vhost = args.broker.rsplit("/", 1)[1] or "/"
            for argv in (["add_vhost", vhost], ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]):
                subprocess.run(["rabbitmqctl", *argv], capture_output=True, check=False)

        with Connection(args.broker) as conn:
            # Deleted, not purged: --ingest-queue-type may differ from the last run's.
            conn.default_channel.queue_delete("ingest")

        if args.server == "uwsgi":
            stack.start(
                [
                    str(BIN / "uwsgi"),
                    *(
                        ["--http", f"127.0.0.1:{args.port}", "--http-keepalive"]
                        if args.uwsgi_router
                        else ["--http11-socket", f"127.0.0.1:{args.port}"]
                    ),
                    "--module",
                    "config.wsgi:application",
                    "--master",
                    "--lazy-apps",
                    "--enable-threads",
                    "--processes",
                    str(args.web_workers),
                    "--threads",
                    str(args.web_threads),
                    "--disable-logging",
                    "--listen",
                    "1024",
                    "--die-on-term",
                    "--need-app",
                    "--worker-reload-mercy",
                    "20",
                ],  # fmt: skip
                "uwsgi",
            )
        else:
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
        # --ingest-nice: the workers yield the CPU to the collectors (README, "Running in production").
        niced = ["nice", "-n", str(args.ingest_nice)] if args.ingest_nice else []
        worker_argv = [
            *niced, str(BIN / "celery"), "-A", "config", "worker", "-Q", "ingest",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING",
        ]  # fmt: skip
        if args.ingest_pool == "solo":
            for n in range(args.ingest_workers):
                stack.start([*worker_argv, "--pool", "solo", "-n", f"bench-ingest-{n}@%h"], f"celery-ingest-{n}")
        else:
            stack.start(
                [*worker_argv, "--concurrency", str(args.ingest_concurrency), "-n", "bench-ingest@%h"], "celery-ingest"
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
        warm_counter = StoredCounter(db, project_id)
        for start in range(0, args.users, 500):
            batch = [
                {"type": "identify", "userId": f"user-{u}", "anonymousId": f"anon-{u}", "traits": {"plan": "free"}}
                for u in range(start, min(args.users, start + 500))
            ]
            warm.request("POST", "/v1/batch", body=json.dumps({"batch": batch}), headers={"Authorization": auth})
            response = warm.getresponse()
            response.read()
            assert response.status == 200, response.status
        warm_counter.wait_for(args.users, timeout=300)
        if args.warm_seconds:
            # Traffic like the load's for a while: the workers' memory of
            # identities and devices (crm.services) fills as in a store in
            # service, where workers run for days.
            _log(f"warm-up: batches for {args.warm_seconds:g} s")
            warm_counter = StoredCounter(db, project_id)
            warm_load = _load(
                args, write_key, "batch", 2 * 10**9, args.batch_connections, args.batch_rate, args.warm_seconds
            )
            warm_counter.wait_for(warm_load["events_accepted"], timeout=600)
        with db.cursor() as cur:
            cur.execute("ANALYZE")

        if args.single_only:
            # Only the single-event phase, for work on its tail: the batch
            # phases' figures are reported as 0.
            batch = capacity = {"events_per_s_accepted": 0, "requests_per_s": 0, "p50_ms": 0, "p99_ms": 0, "errors": 0}
            events_per_s_stored = events_per_s_stored_at_target = 0.0
            batch_cpu = capacity_cpu = {}
            batch_wall = capacity_wall = 0.0
            probe = FreshnessProbe.__new__(FreshnessProbe)
            probe.samples, probe.missed = [], 0
        else:
            _log(f"target load: batches of {args.batch_size} for {args.duration} s, with the freshness probe")
            probe = FreshnessProbe(args, write_key, project_id)
            counter = StoredCounter(db, project_id)
            cpu_before = _cpu_by_process()
            started = time.perf_counter()
            probe.start()
            batch = _load(args, write_key, "batch", 0, args.batch_connections, args.batch_rate)
            probe.stop_event.set()
            probe.join()
            stored_at = counter.wait_for(batch["events_accepted"] + len(probe.samples), timeout=900)
            events_per_s_stored_at_target = batch["events_accepted"] / (stored_at - started)
            batch_cpu = _cpu_delta(cpu_before, _cpu_by_process(), batch["cpu_s"])
            batch_wall = stored_at - started

            _log(
                f"capacity: batches offered at {args.capacity_rate * args.batch_size:g} events/s for {args.duration} s"
            )
            counter = StoredCounter(db, project_id)
            cpu_before = _cpu_by_process()
            started = time.perf_counter()
            capacity = _load(args, write_key, "batch", 5 * 10**8, args.batch_connections, args.capacity_rate)
            capacity_stored_at = counter.wait_for(capacity["events_accepted"], timeout=900)
            events_per_s_stored = capacity["events_accepted"] / (capacity_stored_at - started)
            capacity_cpu = _cpu_delta(cpu_before, _cpu_by_process(), capacity["cpu_s"])
            capacity_wall = capacity_stored_at - started

        _log(f"single-event requests offered at {args.single_rate:g}/s for {args.duration} s")
        counter = StoredCounter(db, project_id)
        cpu_before = _cpu_by_process()
        started = time.perf_counter()
        single = _load(args, write_key, "single", 10**9, args.single_connections, args.single_rate)
        single_stored_at = counter.wait_for(single["ok"], timeout=900)
        single_cpu = _cpu_delta(cpu_before, _cpu_by_process(), single["cpu_s"])
        single_wall = single_stored_at - started
    finally:
        stack.stop()

    result = {
        "events_per_s_accepted": batch["events_per_s_accepted"],
        "events_per_s_stored": round(events_per_s_stored, 1),
        "events_per_s_stored_at_target": round(events_per_s_stored_at_target, 1),
        "capacity_events_per_s_accepted": capacity["events_per_s_accepted"],
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
        "batch_rate_offered": args.batch_rate * args.batch_size,
        "capacity_rate_offered": args.capacity_rate * args.batch_size,
        "single_rate_offered": args.single_rate,
        "single_connections": args.single_connections,
        "arrivals": args.arrivals,
        "web": f"{args.server} {args.web_workers} processes x {args.web_threads} threads",
        "ingest_workers": (
            f"{args.ingest_workers} x solo" if args.ingest_pool == "solo" else f"prefork {args.ingest_concurrency}"
        ),
        "ingest_nice": args.ingest_nice,
        "linger_ms": args.linger_ms,
        "switch_interval_ms": args.switch_interval_ms,
        "stored_event_hooks": not args.without_stored_hooks,
        "broker": args.broker.split(":", 1)[0],
        "ingest_queue_type": args.ingest_queue_type,
        # CPU seconds per process group over each phase (until all stored), and
        # the wall time: shows what the benchmark got of the 2 cores.
        "batch_phase_cpu_s": batch_cpu,
        "batch_phase_wall_s": round(batch_wall, 1),
        "capacity_phase_cpu_s": capacity_cpu,
        "capacity_phase_wall_s": round(capacity_wall, 1),
        "single_phase_cpu_s": single_cpu,
        "single_phase_wall_s": round(single_wall, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
