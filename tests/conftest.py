"""Shared fixtures, and the rule for tests that need a real service.

Every test runs on PostgreSQL (the configured server, or the embedded one that
tests.pytest_env starts). A test marked `broker` or `browser` is skipped when
that service cannot be had (no broker configured and no redis-server to start;
no Chromium), saying why; with REQUIRE_SERVICES=1 (as in CI) it fails instead.
"""

from __future__ import annotations

import base64
import importlib.util
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from crm.models import Project
from crm.rate_limits import rate_limits_clear
from crm.selectors import project_key_cache_clear
from crm.services import ProjectKeys, membership_add, project_create, write_caches_clear

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def _missing_services(item: pytest.Item) -> list[str]:
    missing = []
    if item.get_closest_marker("broker") and not settings.CELERY_BROKER_URL:
        missing.append("a Celery broker (set CELERY_BROKER_URL, or install rabbitmq-server or redis-server)")
    if item.get_closest_marker("amqp") and not settings.CELERY_BROKER_URL.startswith("amqp"):
        # Redis can lose a batch to kill -9 and redelivers only after its visibility timeout.
        missing.append("RabbitMQ for redelivery after kill -9 (CELERY_BROKER_URL=amqp://…)")
    if item.get_closest_marker("browser") and not (
        os.path.exists("/usr/bin/chromium") and importlib.util.find_spec("playwright")
    ):
        missing.append("headless Chromium and Playwright (apt-get install chromium; pip install playwright)")
    return missing


def pytest_runtest_setup(item: pytest.Item) -> None:
    missing = _missing_services(item)
    if missing:
        message = "needs " + " and ".join(missing)
        if REQUIRE_SERVICES:
            pytest.fail(message + "; REQUIRE_SERVICES=1 forbids skipping", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session", autouse=True)
def _test_database_released_at_the_end(django_db_setup: None, django_db_blocker) -> Iterator[None]:  # noqa: ANN001
    """Before pytest-django drops the test database: end the sessions that
    processes of the tests (workers, uWSGI, threads) may still hold, so the drop
    does not fail with "being accessed by other users" and leave it behind."""
    yield
    from django.db import connection

    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis for tests of what is shared through it: REDIS_URL when set, else a
    throw-away redis-server of this run (tests.pytest_env); skipped without either
    (failed under REQUIRE_SERVICES=1)."""
    from tests.pytest_env import _throwaway_redis

    url = os.environ.get("REDIS_URL") or _throwaway_redis()
    if not url:
        message = "needs Redis (set REDIS_URL, or install redis-server)"
        if REQUIRE_SERVICES:
            pytest.fail(message + "; REQUIRE_SERVICES=1 forbids skipping", pytrace=False)
        pytest.skip(message)
    return url


@pytest.fixture(autouse=True)
def _fresh_key_cache() -> None:
    project_key_cache_clear()
    # The ingest writers' per-process memory (crm.services): ids repeat across tests.
    write_caches_clear()
    # The rate limits' per-process counts: every test's client has the same address.
    rate_limits_clear()


@pytest.fixture
def make_project(db: None) -> Callable[..., tuple[Project, ProjectKeys]]:
    def make(name: str = "Shop", timezone_name: str = "UTC") -> tuple[Project, ProjectKeys]:
        return project_create(name=name, timezone_name=timezone_name)

    return make


@pytest.fixture
def project_a(make_project: Callable[..., tuple[Project, ProjectKeys]]) -> tuple[Project, ProjectKeys]:
    return make_project("Shop A")


@pytest.fixture
def project_b(make_project: Callable[..., tuple[Project, ProjectKeys]]) -> tuple[Project, ProjectKeys]:
    return make_project("Shop B")


@pytest.fixture
def marketer_a(project_a: tuple[Project, ProjectKeys]):  # noqa: ANN201
    user = get_user_model().objects.create_user("alice", "alice@a.example", "pw-alice-123", is_staff=True)
    membership_add(project_id=project_a[0].pk, user_id=user.pk)
    return user


def bearer_client(secret_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret_key}")
    return client


def basic_header(write_key: str) -> str:
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


def worker_database_url() -> str:
    """DATABASE_URL of the test database (pytest-django's `test_` copy), for
    processes a test starts (workers, uWSGI)."""
    from urllib.parse import urlsplit, urlunsplit

    from django.db import connection

    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))


@pytest.fixture
def celery_worker_process(transactional_db: None):  # noqa: ANN201
    """Start real Celery worker processes (`celery -A config worker`) against the
    test database and the configured broker. Use with tests marked `postgres`
    and `broker`: the worker is another process, so it needs committed data
    (transactional_db).

    Usage: `proc = celery_worker_process(queues=["ingest"])` (`pool="solo"` as
    the README runs the ingest workers); every process
    started is terminated after the test. Queues are purged before the first start.
    """
    import subprocess
    import sys
    import time

    from config.celery import app

    database_url = worker_database_url()
    started: list[subprocess.Popen] = []

    def purge(queues: list[str]) -> None:
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            for queue in queues:
                try:
                    channel.queue_declare(queue=queue, durable=True, auto_delete=False)
                    channel.queue_purge(queue)
                except Exception:  # noqa: BLE001 - a queue that cannot be declared has nothing to purge
                    channel = conn.channel()

    def start(
        queues: list[str],
        concurrency: int = 1,
        extra_env: dict[str, str] | None = None,
        log_path: str | None = None,
        pool: str = "prefork",
    ) -> subprocess.Popen:
        if not started:
            purge(queues)
        env = {**os.environ, "DATABASE_URL": database_url, "DB_CONN_MAX_AGE": "0", **(extra_env or {})}
        log = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                ",".join(queues),
                *(["--pool", "solo"] if pool == "solo" else ["-c", str(concurrency)]),
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"test-{len(started)}-{os.getpid()}@%h",
                "-l",
                "INFO",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(proc)
        # Ready when it answers a ping by name.
        name = f"test-{len(started) - 1}-{os.getpid()}@"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"celery worker exited with {proc.returncode}")
            replies = app.control.ping(timeout=0.5) or []
            if any(next(iter(r)).startswith(name) for r in replies):
                return proc
        raise RuntimeError("celery worker did not become ready in 60 s")

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class WebServers:
    """Web server processes of one test, each on a free port, their whole process
    groups stopped after it: workers must not outlive it with their database
    connections (the test database is dropped at the end)."""

    def __init__(self) -> None:
        import subprocess

        self.started: list[subprocess.Popen] = []

    def start(self, argv: Callable[[int], list[str]], *, env: dict[str, str] | None = None, what: str) -> int:
        """Start `argv(port)` against the test database; return the port once it accepts connections."""
        import socket
        import subprocess
        import time
        from pathlib import Path

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen(
            argv(port),
            env={**os.environ, "DATABASE_URL": worker_database_url(), **(env or {})},
            cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        self.started.append(proc)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return port
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(f"{what} did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        import contextlib
        import signal
        import subprocess

        for proc in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def web_servers() -> Iterator[WebServers]:
    servers = WebServers()
    yield servers
    servers.stop()


@pytest.fixture
def uwsgi_process(transactional_db: None, web_servers: WebServers):  # noqa: ANN201
    """Start config.wsgi on real uWSGI processes (as the README runs them),
    against the test database and the configured broker; returns the port.

    Usage: `port = uwsgi_process("--processes", "2", "--threads", "4", env={...})`."""
    import sys
    from pathlib import Path

    def start(*args: str, env: dict[str, str] | None = None) -> int:
        return web_servers.start(
            lambda port: [
                str(Path(sys.executable).with_name("uwsgi")), "--http11-socket", f"127.0.0.1:{port}",
                "--module", "config.wsgi:application", "--master", "--lazy-apps", "--enable-threads",
                "--die-on-term", "--need-app", "--disable-logging", *args,
            ],
            env=env,
            what="uWSGI",
        )  # fmt: skip

    return start


def wsgi_call(
    path: str,
    *,
    method: str = "GET",
    query: str = "",
    body: bytes = b"",
    host: str = "testserver",
    scheme: str = "http",
    app: Any = None,
    **headers: str,
) -> tuple[int, dict[str, str], bytes]:
    """config.wsgi.application (or `app`) called as a WSGI server calls it (fast
    paths included, which Django's test client does not reach); returns status,
    headers and body. `headers` are environ keys (HTTP_AUTHORIZATION=...)."""
    from io import BytesIO

    from django.core import signals
    from django.db import close_old_connections

    from config.wsgi import application

    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "testserver",
        "SERVER_PORT": "80", "HTTP_HOST": host, "wsgi.url_scheme": scheme, "wsgi.input": BytesIO(body),
        "wsgi.errors": BytesIO(), "SERVER_PROTOCOL": "HTTP/1.1", "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json", **headers,
    }  # fmt: skip
    seen: dict[str, object] = {}

    def start_response(status: str, response_headers: list, exc_info: object = None) -> None:
        seen["status"], seen["headers"] = status, dict(response_headers)

    # As Django's test client does: the request signals must not close the test's
    # connection (it is inside the test's transaction).
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        answer = b"".join((app or application)(environ, start_response))
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)
    return int(str(seen["status"]).split()[0]), seen["headers"], answer  # type: ignore[return-value]
