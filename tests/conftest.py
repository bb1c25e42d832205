"""Shared fixtures, and the rule for tests that need a real service.

A test marked `postgres` or `broker` is skipped when that service is not
configured, so `make test` passes on a bare machine with SQLite; with
REQUIRE_SERVICES=1 (as in CI) the same test fails instead of skipping.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from crm.models import Project
from crm.selectors import project_key_cache_clear
from crm.services import ProjectKeys, membership_add, project_create

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def _missing_services(item: pytest.Item) -> list[str]:
    missing = []
    if item.get_closest_marker("postgres") and settings.DATABASES["default"]["ENGINE"] != (
        "django.db.backends.postgresql"
    ):
        missing.append("PostgreSQL (set DATABASE_URL)")
    if item.get_closest_marker("broker") and not settings.CELERY_BROKER_URL:
        missing.append("a Celery broker (set CELERY_BROKER_URL)")
    return missing


def pytest_runtest_setup(item: pytest.Item) -> None:
    missing = _missing_services(item)
    if missing:
        message = "needs " + " and ".join(missing)
        if REQUIRE_SERVICES:
            pytest.fail(message + "; REQUIRE_SERVICES=1 forbids skipping", pytrace=False)
        pytest.skip(message)


@pytest.fixture(autouse=True)
def _fresh_key_cache() -> None:
    project_key_cache_clear()


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
