"""Bulk import benchmark: `manage.py import_events` on a generated history,
beside the database's floor for the same events (bench/ingest_floor.py).

    .venv/bin/python bench/ingest_import.py [--events 500000] [--users 50000] [--gzip]
        [--file /tmp/...] [--floor-events 1000000]

Writes newline-delimited JSON of track events in the shape the SDKs send
(`Product Viewed` / `Product Added` / `Order Completed` with context, every
line with its messageId and timestamp, ~500 bytes a line), then runs the
command, as a customer back-filling history would, against a fresh PostgreSQL
database. Then runs bench/ingest_floor.py (the deduplicating COPY load of the
same kind of events, PostgreSQL alone, `--floor-events` rows) and prints, on its
last line, one JSON object: events/s of the import itself (the command's own
timer: reading, validation, identities, events, profiles and devices in
PostgreSQL) and of the whole process (Django start included), the floor's
events/s over one connection (the import writes over one) and over two, their
`ratio` (import / one-connection floor), and the load average before and after.
The file is written once and reused (delete it to regenerate).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from ingest_load import _message  # noqa: E402 - the same message shape as the load generator


def _write(path: Path, *, events: int, users: int, compress: bool) -> None:
    rnd = random.Random(7)
    opener = gzip.open if compress else open
    start = 1_700_000_000
    with opener(path, "wt") as out:
        for i in range(events):
            message = _message(rnd, users, 0)
            message["messageId"] = f"imp-{i:010d}"
            ts = start + i * 30 // 7
            message["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
            out.write(json.dumps(message, separators=(",", ":")))
            out.write("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--chunk", type=int, default=50_000)
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument(
        "--without-stored-hooks",
        action="store_true",
        help="import without INGEST_STORED_EVENT_HOOKS (bench/ingest_settings_without_hooks.py)",
    )
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/engage_bench_import")
    parser.add_argument("--file", default="/tmp/bench-ingest-import.ndjson")
    parser.add_argument("--floor-events", type=int, default=1_000_000, help="rows of the floor's loads (0: skip)")
    args = parser.parse_args()
    load_before = os.getloadavg()

    path = Path(args.file + (".gz" if args.gzip else ""))
    if not path.exists():
        print(f"[bench] writing {args.events} lines to {path}", file=sys.stderr)
        _write(path, events=args.events, users=args.users, compress=args.gzip)
    db_name = args.database.rsplit("/", 1)[1]
    admin = psycopg2.connect(args.database.rsplit("/", 1)[0].replace("postgres://", "postgresql://") + "/postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{db_name}"')
        cur.execute(f'CREATE DATABASE "{db_name}"')
    admin.close()
    env = {**os.environ, "DATABASE_URL": args.database, "SECRET_KEY": "bench-" + "k" * 60, "LOG_LEVEL": "WARNING"}
    if args.without_stored_hooks:
        env["DJANGO_SETTINGS_MODULE"] = "bench.ingest_settings_without_hooks"

    def manage(*argv: str) -> str:
        return subprocess.run(
            [sys.executable, "manage.py", *argv], cwd=ROOT, env=env, check=True, capture_output=True, text=True
        ).stdout

    manage("migrate", "--noinput")
    project = json.loads(manage("create_project", "Import shop").strip().splitlines()[-1])
    started = time.perf_counter()
    out = manage(
        "import_events", str(path), "--project", str(project["id"]), "--chunk", str(args.chunk), "--no-progress"
    )
    wall = time.perf_counter() - started
    result = json.loads(out.strip().splitlines()[-1])
    load_after = os.getloadavg()
    floor: dict[str, dict[str, float]] = {}
    if args.floor_events:
        print(f"[bench] floor: {args.floor_events} rows", file=sys.stderr)
        floor = json.loads(
            subprocess.run(
                [sys.executable, "bench/ingest_floor.py", "--events", str(args.floor_events), "--users",
                 str(args.users), "--deduplicated-only"],
                cwd=ROOT, check=True, capture_output=True, text=True,
            ).stdout.strip().splitlines()[-1]
        )  # fmt: skip
    floor_one = floor.get("copy_deduplicated_one_stream", {}).get("events_per_s")
    floor_two = floor.get("copy_deduplicated_2_streams", {}).get("events_per_s")
    print(
        json.dumps(
            {
                "events": args.events,
                "users": args.users,
                "gzip": args.gzip,
                "stored_event_hooks": not args.without_stored_hooks,
                "chunk": args.chunk,
                "file_mb": round(path.stat().st_size / 1e6, 1),
                "stored": result["stored"],
                "rejected": result["rejected"],
                "import_seconds": result["seconds"],
                "events_per_s": result["events_per_s"],
                "process_seconds": round(wall, 2),
                "events_per_s_process": round(result["stored"] / wall, 1),
                "floor_events": args.floor_events,
                "floor_events_per_s": floor_one,
                "floor_events_per_s_2_streams": floor_two,
                "ratio": round(result["events_per_s"] / floor_one, 3) if floor_one else None,
                "load_average_before": [round(x, 2) for x in load_before],
                "load_average_after_import": [round(x, 2) for x in load_after],
            }
        )
    )


if __name__ == "__main__":
    main()
