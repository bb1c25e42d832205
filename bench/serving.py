"""Recommendation serving under load, over HTTP and in process.

Prepares (once; `--prepare` forces it) a PostgreSQL database with a demo store of
100,000 products and 1,000,000 profiles from `generate_demo_data`, trains a
model with `train_recommendations` so a real active version serves, then starts
the production web process for the recommendation API (uWSGI processes with
HTTP/1.1 keep-alive, DEBUG off; `--server gunicorn` for the sync-worker setup)
and drives it with wrk, a standard HTTP load generator, requesting random
users' recommendations.
Before that, it times the serving function itself in this process.

Prints one JSON object on its last line:
{"requests_per_s", "p50_ms", "p99_ms", "errors", "in_process_p99_ms", ...}.

    python bench/serving.py                     # prepare if needed, then measure
    python bench/serving.py --workers 3 --connections 6 --duration 30

Closed loop: each of wrk's connections sends its next request when the answer
comes. Three single-threaded processes answer three requests at a time; more connections
than that only wait in the listen queue, which adds to the latency, not the
rate (16 connections are reported beside the default 6 in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / "var" / "bench_serving.json"
PG = "postgres://postgres@127.0.0.1:5432"


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
        "WEB_SWITCH_INTERVAL_MS": "1",  # as the README runs the recommendation API
    }
    env.pop("CELERY_BROKER_URL", None)  # training runs in the foreground here
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/5")
    return env


def _sql(database: str, statement: str) -> None:
    connection = psycopg2.connect(f"{PG}/{database}")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(statement)
    connection.close()


def prepare(args: argparse.Namespace) -> dict:
    env = _env(args.database)
    manage = [sys.executable, str(ROOT / "manage.py")]
    _sql("postgres", f'DROP DATABASE IF EXISTS "{args.database}"')
    _sql("postgres", f'CREATE DATABASE "{args.database}"')
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True)
    created = subprocess.run(
        [*manage, "create_project", "Serving bench"], env=env, check=True, capture_output=True, text=True
    )
    keys = json.loads(created.stdout)
    started = time.perf_counter()
    subprocess.run(
        [*manage, "generate_demo_data", "--project", str(keys["id"]), "--users", str(args.users),
         "--products", str(args.products), "--events", str(args.events), "--seed", "3", "--no-progress"],
        env=env, check=True,
    )  # fmt: skip
    generated = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run(
        [*manage, "train_recommendations", "--project", str(keys["id"]), "--no-progress"], env=env, check=True
    )
    # Fresh statistics, as autovacuum would have them a minute after a bulk load:
    # with none, the planner scans the whole catalog for a handful of ids.
    _sql(args.database, "ANALYZE")
    state = {
        **keys,
        "database": args.database,
        "users": args.users,
        "products": args.products,
        "events": args.events,
        "generate_s": round(generated, 1),
        "train_s": round(time.perf_counter() - started, 1),
    }
    STATE.parent.mkdir(parents=True, exist_ok=True)
    STATE.write_text(json.dumps(state))
    return state


LUA = """
local users = %(users)d
local auth = "Bearer %(secret)s"
request = function()
  local path = string.format("/api/v1/users/user-%%07d/recommendations?limit=10", math.random(0, users - 1))
  return wrk.format("GET", path, {["Authorization"] = auth})
end
"""


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(state: dict, args: argparse.Namespace, port: int, duration: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA % {"users": state["users"], "secret": state["secret_key"]})
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", str(args.connections), "-d", f"{duration}s", "--latency", "-s", script.name,
         f"http://127.0.0.1:{port}"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.MULTILINE))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
        "errors": (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, socket.groups())) if socket else 0),
        "wrk_output": out,
    }


WARM_REQUESTS = 5000


def in_process(state: dict, samples: int) -> float:
    os.environ.update(_env(state["database"]))
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection

    from recommendations import serving

    # A quiet database: the tracking writes of an earlier run leave autovacuum
    # work behind, which would share the cores with this single-request timing.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")
            if cursor.fetchone()[0] == 0:
                break
        time.sleep(1)
    rnd = random.Random(7)
    warmup = [f"user-{rnd.randrange(state['users']):07d}" for _ in range(WARM_REQUESTS)]
    users = [f"user-{rnd.randrange(state['users']):07d}" for _ in range(samples)]
    # A serving process loads the active version's related lists in the background
    # on its first request; here that is waited for, as the HTTP warm-up does.
    project_state = serving.project_state(project_id=state["id"])
    serving.related_preload(version_id=project_state.model_version_id)
    # Likewise the catalog, loaded in the background on the first request of a token.
    serving.recommendations_for_user(project_id=state["id"], user_id=warmup[0], limit=10)
    serving.catalog_preload(project_id=state["id"], token=project_state.catalog_token)
    # Other users than those timed: the process's catalog rows fill as a serving
    # process's do (each HTTP worker has served ~10,000 requests by the measured run).
    for user in warmup:
        serving.recommendations_for_user(project_id=state["id"], user_id=user, limit=10)
    timings = []
    for user in users:
        started = time.perf_counter()
        serving.recommendations_for_user(project_id=state["id"], user_id=user, limit=10)
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    return timings[int(len(timings) * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prepare", action="store_true", help="rebuild the data set even if it exists")
    parser.add_argument("--prepare-only", action="store_true", help="build the data set if needed, measure nothing")
    parser.add_argument("--database", default="engage_bench_serving")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--server", choices=["uwsgi", "gunicorn"], default="uwsgi")
    parser.add_argument("--worker-class", default="sync", help="gunicorn's worker class")
    parser.add_argument("--connections", type=int, default=6)
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=30, help="seconds of load before the measured run")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--samples", type=int, default=5000)
    args = parser.parse_args()
    # Before the long preparation: the load generator is not a Python package.
    if shutil.which("wrk") is None:
        sys.exit("bench/serving.py drives the server with wrk, which is not installed: apt-get install wrk")

    state = json.loads(STATE.read_text()) if STATE.exists() and not args.prepare else None
    if state is None or state.get("database") != args.database:
        state = prepare(args)
    else:
        # A data set prepared by older code: its schema brought up to this code's.
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=_env(state["database"]), check=True
        )
    print(json.dumps({k: v for k, v in state.items() if "key" not in k}), flush=True)
    if args.prepare_only:
        return

    # In process first, on a quiet database (after the HTTP run, autovacuum of the
    # tracking tables and the server's shutdown would share the cores).
    in_process_p99 = round(in_process(state, args.samples), 3)
    env = _env(state["database"])
    if args.server == "uwsgi":
        command = [
            str(Path(sys.executable).with_name("uwsgi")), "--http11-socket", f"127.0.0.1:{args.port}",
            "--processes", str(args.workers), "--module", "config.wsgi:application", "--master", "--lazy-apps",
            "--enable-threads", "--disable-logging", "--listen", "1024", "--die-on-term", "--need-app",
            "--worker-reload-mercy", "20",
        ]  # fmt: skip
    else:
        command = [
            sys.executable, "-m", "gunicorn", "config.wsgi:application", "-w", str(args.workers), "-k",
            args.worker_class, "-b", f"127.0.0.1:{args.port}", "--log-level", "warning", "--backlog", "2048",
        ]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{args.port}/healthz", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        # Warm-up: connections, per-process caches, the related lists each worker
        # preloads in the background (several seconds of one core per worker).
        run_wrk(state, args, args.port, args.warmup)
        result = run_wrk(state, args, args.port, args.duration)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    print(result.pop("wrk_output"), file=sys.stderr)
    result["in_process_p99_ms"] = in_process_p99
    result.update(server=args.server, workers=args.workers, worker_class=args.worker_class,
                  connections=args.connections, duration_s=args.duration, users=state["users"],
                  products=state["products"])  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
