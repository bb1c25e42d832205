"""The `ingest` queue's task: the collectors' messages into the data store."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson
from celery import shared_task

from ingestion.store import TRANSIENT_ERRORS, messages_store


@shared_task(
    name="ingestion.ingest_batch",
    queue="ingest",
    ignore_result=True,
    # Acknowledged only once stored; a worker killed mid-batch (kill -9, OOM)
    # gets its message redelivered, and message ids make the replay harmless.
    acks_late=True,
    reject_on_worker_lost=True,
    # Database down or a deadlock victim: retry with backoff, for as long as
    # it takes (accepted events are never dropped). Bad data never gets here:
    # the store sets it aside in the dead-letter table.
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=True,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=None,
)
def ingest_batch_task(payload: str | list[dict[str, Any]]) -> None:
    """Store the messages of one or more collector requests.

    `payload` is a list of `{"project_id": int, "messages": [normalised
    message, ...]}`, one per request (the publisher groups concurrent requests
    into one broker message), as one string of JSON. Unlike other tasks this
    one carries the data rather than ids: nothing is in the database before the
    worker writes it (the collector does no domain writes).

    A string rather than the list itself: Celery's JSON decodes a message body
    with the standard library and an object hook per dict, in the worker's
    main process, then pickles the arguments to the pool process. For ~500
    dicts per message that was a third of the worker's CPU; a string passes
    through both as one value, and orjson parses it here. (A list is still
    taken: messages queued by an older collector.)
    Messages are grouped by project, one store call each (transactions of
    ingestion.store.BULK_CHUNK messages).
    """
    items = orjson.loads(payload) if isinstance(payload, str) else payload
    by_project: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        by_project[item["project_id"]].extend(item["messages"])
    for project_id, messages in by_project.items():
        messages_store(project_id=project_id, messages=messages)
