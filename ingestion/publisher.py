"""Putting accepted messages on the `ingest` queue, confirmed by the broker.

The collector answers 200 only once the broker has the messages, so every
publish waits for the broker's confirmation: a publisher confirm on RabbitMQ
(a persistent message on a durable queue is confirmed after it is written to
disk, about 1.5 ms on the benchmark machine), a successful LPUSH on Redis.

Waiting 1.5 ms per request on one connection would cap a web process at a few
hundred requests per second, so each process publishes through one background
thread that does group commit: requests hand their messages over and wait; the
thread takes everything waiting, publishes it as ONE task message, waits for one
confirmation and wakes the requests. Under load the batches grow by themselves
(fewer broker messages, fewer and bigger worker batches); INGEST_PUBLISH_LINGER_MS
lets a publish wait a few milliseconds for more requests when few are waiting,
which matters for single-event requests: the worker's cost is mostly per batch.

Each request's messages are encoded as JSON in the request's own thread
(batch_enqueue), and the thread only joins the encoded items: a request whose
content cannot be encoded fails alone, never the requests sharing its publish.

Any failure (broker down, refused, confirm not received in time) is reported to
every waiting request, which answers 503 with Retry-After. The SDK then retries
the same messages with the same message ids; the workers store each message id
once, so a publish whose confirmation was lost is not stored twice either.

In eager mode (no broker configured: the quickstart, and tests without one) the
task runs in the calling thread instead.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from typing import Any

import orjson
from django.conf import settings

logger = logging.getLogger(__name__)

# Most messages per broker message: the worker stores them in a few
# transactions of ingestion.store.BULK_CHUNK, and the broker message stays ~2 MB.
MAX_MESSAGES_PER_PUBLISH = 5000
# A publish lingers (INGEST_PUBLISH_LINGER_MS) only while fewer messages wait.
LINGER_ENOUGH_MESSAGES = 500


class BrokerUnavailable(Exception):
    """The broker did not confirm the messages; nothing can be promised."""


class _Pending:
    __slots__ = ("count", "done", "error", "payload")

    def __init__(self, payload: bytes, count: int) -> None:
        self.payload = payload
        self.count = count
        self.done = threading.Event()
        self.error: BaseException | None = None


class GroupCommitPublisher:
    """One per process and broker URL; see the module docstring."""

    def __init__(self, *, broker_url: str, timeout: float, max_messages: int, linger: float = 0.0) -> None:
        self.broker_url = broker_url
        self.timeout = timeout
        self.max_messages = max_messages
        self.linger = linger
        self._cond = threading.Condition()
        self._waiting: deque[_Pending] = deque()
        self._waiting_messages = 0
        self._thread: threading.Thread | None = None
        self._connection: Any = None
        self._producer: Any = None

    # --- request side ------------------------------------------------------

    def publish(self, payload: bytes, count: int) -> None:
        """Block until `payload` (one request's item, `{"project_id", "messages"}`
        encoded as JSON, with `count` messages) is confirmed by the broker.
        Raises BrokerUnavailable on failure or after `timeout` seconds."""
        pending = _Pending(payload, count)
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="ingest-publisher", daemon=True)
                self._thread.start()
            self._waiting.append(pending)
            self._waiting_messages += count
            self._cond.notify()
        if not pending.done.wait(self.timeout):
            raise BrokerUnavailable(f"no confirmation from the broker within {self.timeout:g} s")
        if pending.error is not None:
            raise BrokerUnavailable(str(pending.error) or type(pending.error).__name__) from pending.error

    # --- publishing thread ---------------------------------------------------

    def _take(self) -> list[_Pending]:
        with self._cond:
            while not self._waiting:
                self._cond.wait()
            if self.linger > 0 and self._waiting_messages < LINGER_ENOUGH_MESSAGES:
                # Give requests arriving in the next few milliseconds a seat
                # on this publish: fewer, bigger broker messages and worker
                # batches for a bounded wait (INGEST_PUBLISH_LINGER_MS).
                deadline = time.monotonic() + self.linger
                while self._waiting_messages < LINGER_ENOUGH_MESSAGES:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            taken: list[_Pending] = []
            count = 0
            # At least one request per publish; then as many as fit the cap.
            while self._waiting:
                size = self._waiting[0].count
                if taken and count + size > self.max_messages:
                    break
                taken.append(self._waiting.popleft())
                count += size
            self._waiting_messages -= count
            return taken

    def _run(self) -> None:
        while True:
            batch = self._take()
            error: BaseException | None = None
            try:
                self._send([p.payload for p in batch])
            except Exception as exc:  # noqa: BLE001 - any failure means "not confirmed"
                logger.warning("ingest publish failed (%d requests answered 503): %r", len(batch), exc)
                error = exc
                self._disconnect()
            for pending in batch:
                pending.error = error
                pending.done.set()

    def _send(self, payloads: list[bytes]) -> None:
        from ingestion.tasks import ingest_batch_task

        if self._producer is None:
            from config.celery import app

            connection = app.connection_for_write(
                url=self.broker_url,
                connect_timeout=self.timeout,
                transport_options={"confirm_publish": True},
            )
            # One attempt, no retry loop: a refused connection answers 503 at once.
            connection.ensure_connection(max_retries=0)
            self._connection = connection
            self._producer = connection.Producer()
        # The messages travel as ONE string of JSON (see ingest_batch_task):
        # the requests' items, joined (nothing here can fail on their content).
        ingest_batch_task.apply_async(
            args=[_items_json(payloads)], producer=self._producer, retry=False, confirm_timeout=self.timeout
        )

    def _disconnect(self) -> None:
        connection, self._connection, self._producer = self._connection, None, None
        if connection is not None:
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - already broken
                logger.debug("closing a broken broker connection failed", exc_info=True)


def _items_json(payloads: list[bytes]) -> str:
    """Encoded items as the JSON array ingest_batch_task takes."""
    return (b"[" + b",".join(payloads) + b"]").decode()


_publishers: dict[tuple[int, str], GroupCommitPublisher] = {}
_publishers_lock = threading.Lock()


def publisher_for(broker_url: str) -> GroupCommitPublisher:
    """This process's publisher (a forked web worker gets its own thread)."""
    key = (os.getpid(), broker_url)
    publisher = _publishers.get(key)
    if publisher is None:
        with _publishers_lock:
            publisher = _publishers.get(key)
            if publisher is None:
                publisher = GroupCommitPublisher(
                    broker_url=broker_url,
                    timeout=settings.INGEST_PUBLISH_TIMEOUT,
                    max_messages=MAX_MESSAGES_PER_PUBLISH,
                    linger=settings.INGEST_PUBLISH_LINGER_MS / 1000,
                )
                _publishers[key] = publisher
    return publisher


def batch_enqueue(*, project_id: int, messages: list[dict[str, Any]]) -> None:
    """Put one request's validated messages on the `ingest` queue and return
    once the broker has them (runs the task in-process in eager mode).
    Raises BrokerUnavailable when the broker cannot confirm them."""
    from config.celery import app
    from ingestion.tasks import ingest_batch_task

    # Encoded here, in the request's thread: an encoding error is this
    # request's own (ingestion.spec bounds what it accepts so there is none),
    # never the group's.
    payload = orjson.dumps({"project_id": project_id, "messages": messages})
    if app.conf.task_always_eager:
        # The same string as a worker gets.
        ingest_batch_task.apply(args=[_items_json([payload])], throw=True)
        return
    publisher_for(settings.CELERY_BROKER_URL).publish(payload, len(messages))
