"""Celery tasks of the `sends` queue: send a batch of messages, sweep."""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from delivery.services import messages_send, messages_sweep


@shared_task(
    name="delivery.send_batch",
    queue="sends",
    ignore_result=True,
    # Acknowledged after the batch is recorded: a worker killed before it
    # claimed gets the task redelivered at once (RabbitMQ), and the conditional
    # claim makes a replay claim nothing twice; rows it had claimed wait for the
    # sweeper (delivery.services.send: at least once at the provider).
    acks_late=True,
    reject_on_worker_lost=True,
    # Database down or a deadlock victim: run again; the rows it had not claimed
    # are still queued, those it claimed wait for the sweeper.
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=10,
)
def messages_send_task(message_ids: list[int]) -> None:
    """Claim, send and record the queued, due messages of `message_ids` (delivery.services.messages_send)."""
    messages_send(message_ids=message_ids)


@shared_task(name="delivery.sweep", queue="sends", ignore_result=True)
def messages_sweep_task() -> None:
    """Release stale claims and dispatch due rows (delivery.services.messages_sweep); periodic (beat)."""
    messages_sweep()
