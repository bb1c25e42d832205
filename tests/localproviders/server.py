"""The local provider server in this test process, on a live HTTP server thread,
for tests that drive the real client libraries against it.

Django's live server thread with a listen backlog of 1,024 instead of 10:
firebase-admin's send_each opens up to 500 connections at once, and a backlog of
10 leaves most of them waiting for SYN retransmits (1 s, 3 s, …) past the timeout."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.servers.basehttp import ThreadedWSGIServer
from django.test.testcases import LiveServerThread, _StaticFilesHandler

from localproviders.channel_settings import local_channel_settings, local_service_account
from localproviders.models import OutboxMessage

# The slow- hook's wait, and the channel timeout that gives up before it.
SLOW_MS = 1500
TIMEOUT_S = 0.5


class _WideBacklogServer(ThreadedWSGIServer):
    request_queue_size = 1024


class _ServerThread(LiveServerThread):
    server_class = _WideBacklogServer


def outbox_wait(provider: str, count: int, seconds: float = 10.0) -> list[OutboxMessage]:
    """The provider's outbox rows once there are `count` of them: a request the
    client gave up on (slow-) is still answered, and recorded, after SLOW_MS. A
    test waits for it, so that no row lands in the next test's database."""
    deadline = time.monotonic() + seconds
    while True:
        rows = list(OutboxMessage.objects.filter(provider=provider).order_by("id"))
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


@pytest.fixture(scope="session")
def local_server_url() -> Iterator[str]:
    thread = _ServerThread("127.0.0.1", _StaticFilesHandler)
    thread.daemon = True
    thread.start()
    thread.is_ready.wait()
    if thread.error:
        raise thread.error
    yield f"http://127.0.0.1:{thread.port}"
    thread.terminate()


@pytest.fixture(scope="session")
def local_service_account_key(local_server_url: str) -> dict[str, Any]:
    # One RSA key for the run: the push channel caches a firebase App per settings.
    return local_service_account(base_url=local_server_url)


@pytest.fixture
def local_server(settings: Any, transactional_db: None, local_server_url: str) -> str:
    """The base URL of the local provider server, switched on for this test. The
    server's threads write the outbox on their own connection: the test's data
    must be committed (transactional_db)."""
    settings.LOCAL_PROVIDERS = True
    settings.LOCAL_PROVIDERS_SLOW_MS = SLOW_MS
    return local_server_url


@pytest.fixture
def channel_settings(local_server: str, local_service_account_key: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each channel's validated settings for the local server."""
    from delivery.channels import channel_get

    raw = local_channel_settings(base_url=local_server, service_account=local_service_account_key)
    return {name: channel_get(name).settings_validate(value) for name, value in raw.items()}
