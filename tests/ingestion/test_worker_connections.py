"""The workers' database connection rules (config.celery): kept between tasks,
health-checked (`SELECT 1`) only before a task that follows a pause."""

import time
from types import SimpleNamespace

import pytest
from django.db import DEFAULT_DB_ALIAS, connection, connections

from config import celery as celery_config

# Health checks are configured with DATABASE_URL, as the workers run.
pytestmark = [pytest.mark.django_db(transaction=True)]

TASK = SimpleNamespace(request=SimpleNamespace(is_eager=False))


def test_a_connection_used_a_moment_ago_is_not_checked_again(monkeypatch):
    connection.ensure_connection()
    monkeypatch.setattr(celery_config, "_last_task_ended", time.monotonic())
    celery_config._database_connections_check(task=TASK)
    assert connection.connection is not None and connection.health_check_done is True
    checks = []
    wrapper = connections[DEFAULT_DB_ALIAS]
    monkeypatch.setattr(type(wrapper), "is_usable", lambda self: checks.append(1) or True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert checks == []


def test_after_a_pause_the_next_query_checks_the_connection_first(monkeypatch):
    connection.ensure_connection()
    monkeypatch.setattr(
        celery_config, "_last_task_ended", time.monotonic() - celery_config.CONNECTION_CHECK_AFTER_IDLE_SECONDS - 1
    )
    celery_config._database_connections_check(task=TASK)
    assert connection.health_check_done is False
    checks = []
    wrapper = connections[DEFAULT_DB_ALIAS]  # the wrapper itself, not the proxy
    monkeypatch.setattr(type(wrapper), "is_usable", lambda self: checks.append(1) or True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert checks == [1]


def test_a_task_end_is_remembered_but_not_an_eager_one(monkeypatch):
    monkeypatch.setattr(celery_config, "_last_task_ended", 0.0)
    celery_config._task_ended(task=SimpleNamespace(request=SimpleNamespace(is_eager=True)))
    assert celery_config._last_task_ended == 0.0
    celery_config._task_ended(task=TASK)
    assert time.monotonic() - celery_config._last_task_ended < 1
