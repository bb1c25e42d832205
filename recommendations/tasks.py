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


@shared_task(name="recommendations.schedules_ensure_all", queue="ml", ignore_result=True)
def recs_schedules_ensure_all_task() -> int:
    """Give every project without them its nightly and online schedules (hourly, from
    CELERY_BEAT_SCHEDULE), so a new project is trained the first night after it
    is created. Returns how many projects were given schedules."""
    from django_celery_beat.models import PeriodicTask

    from crm.models import Project

    scheduled = set(PeriodicTask.objects.filter(task=services.FULL_TASK).values_list("kwargs", flat=True))
    created = 0
    for project_id in Project.objects.values_list("pk", flat=True).iterator():
        if services.schedule_kwargs(project_id) not in scheduled:
            services.recs_schedules_ensure(project_id=project_id)
            created += 1
    return created
