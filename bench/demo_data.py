"""Times `generate_demo_data` at scale against PostgreSQL.

Creates a fresh database, migrates it, creates a project, then runs the command
as a user would. Prints one JSON object on its last line:
{"users", "events", "products", "seconds", "events_per_s", "peak_rss_mb"}.

    python bench/demo_data.py --users 1000000 --events 5000000 --products 100000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--database", default="engage_bench_demo")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    args = parser.parse_args()

    admin = psycopg2.connect(f"{args.pg}/postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{args.database}"')
        cur.execute(f'CREATE DATABASE "{args.database}"')
    admin.close()
    env = {
        **os.environ,
        "DATABASE_URL": f"{args.pg}/{args.database}",
        "SECRET_KEY": os.environ.get("SECRET_KEY", "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"),
    }
    env.pop("CELERY_BROKER_URL", None)
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True)
    created = subprocess.run([*manage, "create_project", "Bench"], env=env, check=True, capture_output=True, text=True)
    project_id = json.loads(created.stdout)["id"]

    started = time.perf_counter()
    subprocess.run(
        [
            *manage,
            "generate_demo_data",
            "--project",
            str(project_id),
            "--users",
            str(args.users),
            "--events",
            str(args.events),
            "--products",
            str(args.products),
            "--seed",
            "1",
        ],
        env=env,
        check=True,
    )
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        json.dumps(
            {
                "users": args.users,
                "events": args.events,
                "products": args.products,
                "seconds": round(seconds, 1),
                "events_per_s": round(args.events / seconds),
                "peak_rss_mb": round(peak_kb / 1024, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
