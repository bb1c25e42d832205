"""Fixtures of the ingestion tests."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from django.test.client import Client as DjangoClient

from config.celery import app
from crm.selectors import event_name_mappings_cache_clear
from tests.conftest import basic_header


@pytest.fixture(autouse=True)
def _fresh_mapping_cache() -> None:
    event_name_mappings_cache_clear()


@pytest.fixture
def eager() -> Iterator[None]:
    """Run the ingest task in-process even when a broker is configured, so a
    test can assert what the pipeline stored right after the collector's 200."""
    saved = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = saved


def post(
    client: DjangoClient,
    path: str,
    body: Any,
    *,
    write_key: str | None = None,
    compress: bool = False,
    raw: bytes | None = None,
    content_type: str = "application/json",
    **headers: str,
) -> Any:
    data = raw if raw is not None else json.dumps(body).encode()
    extra = dict(headers)
    if write_key is not None:
        extra["HTTP_AUTHORIZATION"] = basic_header(write_key)
    if compress:
        data = gzip.compress(data)
        extra["HTTP_CONTENT_ENCODING"] = "gzip"
    return client.generic("POST", path, data, content_type=content_type, **extra)


@pytest.fixture
def client() -> Client:
    return Client()
