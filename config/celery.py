"""The Celery app. Queues: ingest (collectors' batches), ml (training), sends (campaign
delivery), default (everything else). See CELERY_TASK_ROUTES in settings."""

import os

from celery import Celery
from celery.signals import task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("engage")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Celery's Django fixup closes the database connection before and after every
# task unless this is set: a new PostgreSQL backend (fork, authentication, cold
# caches) for each ingest batch, measured at several milliseconds a batch.
# Connections are kept instead, and Django's own rules decide when one goes
# (below): DB_CONN_MAX_AGE, or an error on it.
app.conf.CELERY_DB_REUSE_MAX = 2**62


@task_prerun.connect
def _database_connections_check(**kwargs: object) -> None:
    """What Django does at the start of a request: drop connections that are
    past CONN_MAX_AGE or saw an error, so a task never starts on a broken one."""
    from django.db import close_old_connections

    close_old_connections()
