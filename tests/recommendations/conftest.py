"""A tiny demo store (catalog + sessions of views, carts and orders) and settings
that keep a training run to a few seconds: 1 epoch, 8-dimensional embeddings."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from catalog.csvfile import ProductIn
from catalog.services import products_upsert
from crm.demo import demo_catalog_build, demo_data_write

END = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _small_training(settings, tmp_path):  # noqa: ANN001, ANN202 - pytest-django fixtures
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"}}
    settings.RECS_MODEL_PARAMS = {"epochs": 1, "dim": 8, "min_steps": 20, "batch_size": 128}
    settings.RECS_MIN_TRAINING_EVENTS = 100_000
    settings.RECS_EVAL_USERS = 1000
    settings.RECS_COLLECT_BATCH = 500


@pytest.fixture(autouse=True)
def _fresh_process_caches():  # noqa: ANN202
    """Serving's and tracking's per-process memory starts empty in each test:
    what one test's rows left in it must not answer for another's."""
    from recommendations import serving, tracking

    serving.serving_cache_clear()
    tracking.tracking_cache_clear()


@pytest.fixture
def shop(project_a):  # noqa: ANN001, ANN201
    """The hand-made store of serving_data with its model, and u1 who viewed p3 then p1
    (test modules with another shape of shop define their own)."""
    from tests.recommendations.serving_data import catalog_write, user_write, version_write

    project = project_a[0]
    catalog_write(project.pk)
    version_write(project.pk)
    user_write(project.pk, "u1", viewed=["p3", "p1"])
    return project


def store_write(project_id: int, *, products: int = 40, users: int = 60, events: int = 1500, seed: int = 1) -> list:
    catalog = demo_catalog_build(products=products, seed=seed)
    products_upsert(
        project_id=project_id,
        products=[
            ProductIn(
                product_id=p.product_id,
                name=p.name,
                categories=p.categories,
                price=Decimal(str(p.price)),
                description=p.description,
            )  # fmt: skip
            for p in catalog.products
        ],
    )
    demo_data_write(project_id=project_id, catalog=catalog, users=users, events=events, seed=seed, end=END, days=30)
    return catalog.products


@pytest.fixture
def store_a(project_a):  # noqa: ANN001, ANN201
    return store_write(project_a[0].pk)
