"""The database's floor for bulk import: how fast PostgreSQL alone can take
events into the events table on this machine, with no Python work at all.

    .venv/bin/python bench/ingest_floor.py [--events 300000] [--streams 2] [--deduplicated-only]

Creates a fresh database with the project's schema (`manage.py migrate`), then
loads pre-built rows of the same events bench/ingest_import.py writes (SDK
context, ~500 bytes of JSON each) straight into `crm_event` with COPY, the
fastest way into a PostgreSQL table: no validation, no identities, no
deduplication, no profile or device updates, and the rows are built before the
clock starts. Once over one connection, then split over --streams parallel
connections (one per core). Prints one JSON object: events/s and PostgreSQL
CPU microseconds per event for each run.

This is the ceiling for `import_events`: the real import does all of the
above on top (docs/benchmarks.md, "Bulk import").
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from ingest_load import _message  # noqa: E402 - the same message shape as the load generator

COLUMNS = "project_id, profile_id, type, name, properties, context, timestamp, received_at, message_id"


def _copy_text(rows: list[str]) -> str:
    return "".join(rows)


def _rows(*, events: int, users: int, project_id: int, first_profile: int, offset: int) -> list[str]:
    import random

    rnd = random.Random(offset)
    out = []
    for i in range(events):
        m = _message(rnd, users, 0)
        user = int(m["userId"].split("-")[1])
        escape = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n"})
        out.append(
            "\t".join(
                [
                    str(project_id),
                    str(first_profile + user),
                    "track",
                    m["event"],
                    json.dumps(m["properties"], separators=(",", ":")).translate(escape),
                    json.dumps(m["context"], separators=(",", ":")).translate(escape),
                    "2026-01-01T00:00:00+00:00",
                    "2026-01-01T00:00:01+00:00",
                    f"floor-{offset}-{i:010d}",
                ]
            )  # fmt: skip
            + "\n"
        )
    return out


def _backend_cpu(conn: psycopg2.extensions.connection) -> float:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load(url: str, parts: list[list[str]], *, deduplicated: bool = False) -> dict[str, float]:
    """COPY each part over its own connection, all at once; events/s and CPU.
    `deduplicated`: COPY into a temporary table, then INSERT ... ON CONFLICT DO
    NOTHING into crm_event, the cheapest load that stores a repeated message id
    once (COPY itself stops at the first duplicate)."""
    conns = [psycopg2.connect(url) for _ in parts]
    cpu_before = [_backend_cpu(c) for c in conns]
    texts = [_copy_text(p) for p in parts]
    errors: list[BaseException] = []

    def run(conn: psycopg2.extensions.connection, text: str) -> None:
        try:
            with conn.cursor() as cur:
                if not deduplicated:
                    cur.copy_expert(f"COPY crm_event ({COLUMNS}) FROM STDIN", io.StringIO(text))
                else:
                    cur.execute(
                        f"CREATE TEMPORARY TABLE staging ON COMMIT DROP AS SELECT {COLUMNS} FROM crm_event WITH NO DATA"
                    )
                    cur.copy_expert(f"COPY staging ({COLUMNS}) FROM STDIN", io.StringIO(text))
                    cur.execute(
                        f"INSERT INTO crm_event ({COLUMNS}) SELECT {COLUMNS} FROM staging "
                        "ON CONFLICT (project_id, message_id) DO NOTHING"
                    )
            conn.commit()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c, t)) for c, t in zip(conns, texts, strict=True)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    cpu = sum(_backend_cpu(c) - before for c, before in zip(conns, cpu_before, strict=True))
    events = sum(len(p) for p in parts)
    for c in conns:
        c.close()
    return {
        "events": events,
        "seconds": round(wall, 2),
        "events_per_s": round(events / wall, 1),
        "postgres_cpu_us_per_event": round(cpu / events * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300_000, help="events per run")
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--streams", type=int, default=2, help="parallel connections in the second run")
    parser.add_argument(
        "--deduplicated-only", action="store_true", help="only the deduplicating loads (what import_events does)"
    )
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/engage_bench_floor")
    args = parser.parse_args()

    db_name = args.database.rsplit("/", 1)[1]
    url = args.database.replace("postgres://", "postgresql://")
    admin = psycopg2.connect(url.rsplit("/", 1)[0] + "/postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{db_name}"')
        cur.execute(f'CREATE DATABASE "{db_name}"')
    admin.close()
    env = {**os.environ, "DATABASE_URL": args.database, "SECRET_KEY": "bench-" + "k" * 60, "LOG_LEVEL": "WARNING"}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    project = json.loads(
        subprocess.run(
            [sys.executable, "manage.py", "create_project", "Floor shop"],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        ).stdout.strip().splitlines()[-1]
    )  # fmt: skip
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO crm_profile (project_id, user_id, traits, email, phone, name, gender, locale, country, "
            "city, timezone, first_seen, last_seen, recent_viewed, recent_purchased, created_at, updated_at) "
            "SELECT %s, 'user-' || g, '{}', '', '', '', '', '', '', '', '', now(), now(), '[]', '[]', now(), now() "
            "FROM generate_series(0, %s - 1) AS g RETURNING id",
            [project["id"], args.users],
        )
        first_profile = min(row[0] for row in cur.fetchall())
    conn.commit()
    conn.close()

    def parts(n: int, offset: int) -> list[list[str]]:
        return [
            _rows(events=args.events // n, users=args.users, project_id=project["id"], first_profile=first_profile,
                  offset=offset + k)
            for k in range(n)
        ]  # fmt: skip

    out: dict[str, object] = {}
    for dedup in (True,) if args.deduplicated_only else (False, True):
        kind = "copy_deduplicated" if dedup else "copy"
        print(f"[bench] {kind}: {args.events} rows over 1 connection", file=sys.stderr)
        out[f"{kind}_one_stream"] = _load(url, parts(1, 1000 * dedup), deduplicated=dedup)
        print(f"[bench] {kind}: {args.events} rows over {args.streams} connections", file=sys.stderr)
        out[f"{kind}_{args.streams}_streams"] = _load(url, parts(args.streams, 1000 * dedup + 100), deduplicated=dedup)
    out["users"] = args.users
    print(json.dumps(out))


if __name__ == "__main__":
    main()
