"""The Celery app. Queues: ingest (collectors' batches), ml (training), sends (campaign
delivery), segments (segment membership), default (everything else). See CELERY_TASK_ROUTES in settings."""

import os
import time

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_process_init, worker_ready

from config.process import process_tune

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("engage")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Each app's `tasks` module above; the segments' tasks live in their package
# (campaigns.segments.tasks), beside the services they call.
app.autodiscover_tasks(["campaigns.segments"])
# The campaigns' runs, chunks and schedules (campaigns.sending.tasks).
app.autodiscover_tasks(["campaigns.sending"])

# Celery's Django fixup closes the database connection before and after every
# task unless this is set: a new PostgreSQL backend (fork, authentication, cold
# caches) for each ingest batch, measured at several milliseconds a batch.
# Connections are kept instead, and Django's own rules decide when one goes
# (below): DB_CONN_MAX_AGE, or an error on it.
app.conf.CELERY_DB_REUSE_MAX = 2**62


# A connection used less than this long ago is taken as working: the health
# check (`SELECT 1`, a round trip) runs only before a task that follows a pause.
# Under load that saves a round trip per task; a connection that broke in the
# last second fails the task on its first query, which then retries (the ingest
# task's autoretry) on a new connection.
CONNECTION_CHECK_AFTER_IDLE_SECONDS = 1.0
_last_task_ended = 0.0


@task_prerun.connect
def _database_connections_check(task: object = None, **kwargs: object) -> None:
    """What Django does at the start of a request: drop connections that are
    past CONN_MAX_AGE or saw an error, so a task never starts on a broken one.
    Not for eager tasks (run inside the caller, on its connection and in its
    transaction), as Celery's fixup does not touch them either."""
    if getattr(getattr(task, "request", None), "is_eager", False):
        return
    from django.db import connections

    recently_used = time.monotonic() - _last_task_ended < CONNECTION_CHECK_AFTER_IDLE_SECONDS
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()
            if recently_used and conn.connection is not None:
                conn.health_check_done = True


@task_postrun.connect
def _task_ended(task: object = None, **kwargs: object) -> None:
    global _last_task_ended
    if not getattr(getattr(task, "request", None), "is_eager", False):
        _last_task_ended = time.monotonic()


@worker_ready.connect
@worker_process_init.connect
def _process_tune(**kwargs: object) -> None:
    """The app is loaded: tune the process that runs the tasks (heap frozen while
    the ingest tasks allocate thousands of short-lived dicts per batch; see
    config/process.py). That is this process with --pool solo, the pool
    processes otherwise."""
    process_tune(kind="worker")
