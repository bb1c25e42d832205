"""Celery tasks of the `ml` queue. They take a project id, start a version and run
the pipeline; TensorFlow is imported inside the task body, so a web process that
imports this module (Celery autodiscovery) does not load it."""

from __future__ import annotations

from celery import shared_task

from recommendations import services
from recommendations.models import VersionKind


@shared_task(name=services.FULL_TASK, queue="ml", ignore_result=True)
def recs_train_full_task(project_id: int) -> int | None:
    """Nightly full training. Does nothing while another run of the project is in progress."""
    version = services.modelversion_start(project_id=project_id, kind=VersionKind.FULL)
    if version is None:
        return None
    from recommendations.training.pipeline import run_full

    return run_full(version_id=version.pk).pk


@shared_task(name=services.ONLINE_TASK, queue="ml", ignore_result=True)
def recs_train_online_task(project_id: int) -> int | None:
    """Online update from the active version; nothing to do without one, while a
    run is in progress, or when nothing happened since the active version."""
    if not services.online_update_due(project_id=project_id):
        return None
    version = services.modelversion_start(project_id=project_id, kind=VersionKind.ONLINE)
    if version is None:
        return None
    from recommendations.training.pipeline import run_online

    return run_online(version_id=version.pk).pk
