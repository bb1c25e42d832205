"""Loaded with `-p` (see pyproject) before pytest-django reads the settings.

Tests run with DEBUG off, like production; they only need a key and plain HTTP.
Anything already in the environment (DATABASE_URL, CELERY_BROKER_URL) is kept;
what is missing is started for the run (below).
"""

import os

from config.process import process_tune

# As every entry point does (config/process.py): the CSV field limit.
process_tune(kind="command")

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-0123456789abcdef")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("SESSION_COOKIE_SECURE", "0")
os.environ.setdefault("CSRF_COOKIE_SECURE", "0")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
os.environ.setdefault("STATIC_MANIFEST", "0")
# Served recommendations are written at once, so tests can read them back.
os.environ.setdefault("RECS_TRACKING_FLUSH_SECONDS", "0")
# No background preload threads in tests (their connections would not see the
# test's transaction); tests call recommendations.serving.related_preload directly.
os.environ.setdefault("RECS_SERVE_PRELOAD_MAX_ROWS", "0")
os.environ.setdefault("WHITENOISE_USE_FINDERS", "1")
# Tests must not write into a developer's var/ folder.
os.environ.setdefault("VAR_DIR", os.path.join(os.environ.get("TMPDIR", "/tmp"), "engage-test-var"))
os.makedirs(os.path.join(os.environ["VAR_DIR"], "static"), exist_ok=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _throwaway_redis() -> str | None:
    """A redis-server of this run on a free port (no disk), stopped at exit;
    None when the machine has no redis-server."""
    import atexit
    import shutil
    import socket
    import subprocess
    import time

    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    atexit.register(proc.terminate)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    return None


# Nothing configured: the tests run on a throw-away embedded PostgreSQL (deleted
# at exit) and, where the machine has redis-server, a throw-away broker, so a
# bare `make test` runs the same tests as CI (config/embedded_db.py).
if not os.environ.get("DATABASE_URL"):
    import tempfile
    from pathlib import Path

    from config.embedded_db import embedded_database_url

    os.environ["DATABASE_URL"] = embedded_database_url(
        data_dir=Path(tempfile.mkdtemp(prefix="engage-test-pg-")), throwaway=True
    )
if not os.environ.get("CELERY_BROKER_URL"):
    _broker = _throwaway_redis()
    if _broker:
        os.environ["CELERY_BROKER_URL"] = _broker
