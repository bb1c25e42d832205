"""A body slower than the server's read timeout ends its request (408) instead of
holding a request thread: uWSGI's --socket-timeout, gunicorn's WEB_BODY_TIMEOUT
(config/gunicorn.py; gunicorn itself has no such limit for gthread workers)."""

from __future__ import annotations

import json
import socket
import sys
import time

import pytest


def slow_post(port: int) -> tuple[float, int, dict]:
    """Announce 1,000 bytes of body, send 6, wait: (seconds until the answer, status, JSON)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        conn.sendall(
            b"POST /v1/track HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"a":'
        )
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return time.monotonic() - started, int(head.split()[1]), json.loads(body)


def test_uwsgi_ends_a_slow_body_after_its_socket_timeout(uwsgi_process):
    port = uwsgi_process("--processes", "1", "--threads", "2", "--socket-timeout", "2")
    seconds, status, body = slow_post(port)
    assert (status, body["code"]) == (408, "request_timeout")
    assert 1.5 < seconds < 6


@pytest.fixture
def gunicorn(db, web_servers):  # noqa: ANN001, ANN201 - the test database's settings
    def start(**env: str) -> int:
        return web_servers.start(
            lambda port: [
                sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi:application",
                "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "2",
            ],
            env=env,
            what="gunicorn",
        )  # fmt: skip

    return start


def test_gunicorn_ends_a_slow_body_after_web_body_timeout(gunicorn):
    port = gunicorn(WEB_BODY_TIMEOUT="2")
    seconds, status, body = slow_post(port)
    assert (status, body["code"]) == (408, "request_timeout")
    assert 1.5 < seconds < 6
