"""The Celery app. Queues: ingest (collectors' batches), ml (training), sends (campaign
delivery), default (everything else). See CELERY_TASK_ROUTES in settings."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("engage")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
