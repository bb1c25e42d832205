"""The nightly task on a real Celery worker of the `ml` queue, against PostgreSQL."""

from __future__ import annotations

import time

import pytest

from recommendations.models import ModelVersion, RelatedProduct
from recommendations.tasks import recs_train_full_task
from tests.recommendations.conftest import store_write


@pytest.mark.broker
def test_nightly_task_trains_and_activates_on_an_ml_worker(celery_worker_process, project_a, tmp_path):
    project = project_a[0]
    store_write(project.pk)
    celery_worker_process(
        queues=["ml"],
        extra_env={"RECS_EPOCHS": "1", "RECS_DIM": "8", "RECS_MIN_STEPS": "20", "MEDIA_ROOT": str(tmp_path)},
    )
    recs_train_full_task.delay(project.pk)
    deadline = time.monotonic() + 180
    version = None
    while time.monotonic() < deadline:
        version = ModelVersion.objects.filter(project=project).first()
        if version is not None and version.status in ("active", "failed", "ready"):
            break
        time.sleep(1)
    assert version is not None and version.status == "active", version and version.error
    assert RelatedProduct.objects.filter(model_version=version).count() == 40 * 20
    assert (tmp_path / f"recs/{project.pk}/{version.pk}/model.weights.npz").exists()
