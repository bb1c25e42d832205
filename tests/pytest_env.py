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
# The local providers' receipts wait for a test to flush them (localproviders.receipts).
os.environ.setdefault("LOCAL_PROVIDERS_RECEIPTS", "manual")
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
    import subprocess

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
    if _wait_for_port(port, proc, 10):
        return f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    return None


def _wait_for_port(port: int, proc, seconds: float) -> bool:  # noqa: ANN001
    import socket
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def _throwaway_rabbitmq() -> str | None:
    """A RabbitMQ node of this run (its own name, ports and data folder, no
    plugins), stopped and deleted at exit; None when the machine has none."""
    import atexit
    import shutil
    import signal
    import subprocess
    import tempfile

    # Debian's /usr/sbin wrapper switches to the rabbitmq user and drops the environment.
    binary = next(
        (
            b
            for b in ("/usr/lib/rabbitmq/bin/rabbitmq-server", shutil.which("rabbitmq-server"))
            if b and os.path.exists(b)
        ),
        None,
    )
    if binary is None:
        return None
    base = tempfile.mkdtemp(prefix="engage-test-mq-")
    with open(os.path.join(base, "enabled_plugins"), "w") as f:
        f.write("[].\n")
    port, dist_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "RABBITMQ_NODENAME": f"engage-test-{os.getpid()}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": os.path.join(base, "mnesia"),
        "RABBITMQ_LOG_BASE": os.path.join(base, "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(base, "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": os.path.join(base, "none"),
    }
    proc = subprocess.Popen(
        [binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )

    def stop() -> None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)

    atexit.register(stop)
    if _wait_for_port(port, proc, 60):
        return f"amqp://guest:guest@127.0.0.1:{port}//"
    stop()
    return None


# Nothing configured: the tests run on a throw-away embedded PostgreSQL (deleted
# at exit) and a throw-away broker: RabbitMQ where the machine has it (as
# production runs, with publisher confirms and redelivery after kill -9), else
# redis-server (development only: it may lose a batch to kill -9); so a bare
# `make test` runs the same tests as CI (config/embedded_db.py).
if not os.environ.get("DATABASE_URL"):
    import tempfile
    from pathlib import Path

    from config.embedded_db import embedded_database_url

    os.environ["DATABASE_URL"] = embedded_database_url(
        data_dir=Path(tempfile.mkdtemp(prefix="engage-test-pg-")), throwaway=True
    )
if not os.environ.get("CELERY_BROKER_URL"):
    _broker = _throwaway_rabbitmq()
    if _broker is None:
        _broker = _throwaway_redis()
        # Redis can lose a batch when a worker is killed (config/settings.py):
        # good enough for the broker tests that do not kill one; those that do
        # are marked `amqp` and skip, saying why.
        if _broker:
            os.environ.setdefault("CELERY_BROKER_ACCEPT_LOSS", "1")
    if _broker:
        os.environ["CELERY_BROKER_URL"] = _broker
