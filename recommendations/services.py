"""Writes: model versions (start, finish with guarded activation, activate, roll
back, purge) and the per-project training schedules.

No TensorFlow here: the admin and the web process import this module. The
training itself is recommendations.training.pipeline, run by the tasks.
"""

from __future__ import annotations

import json
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from crm.models import Project
from recommendations.models import (
    RUNNING_STATUSES,
    ModelVersion,
    RelatedProduct,
    TrendingProduct,
    VersionKind,
    VersionStatus,
)

RUNNING = tuple(RUNNING_STATUSES)
FULL_TASK = "recommendations.train_full"
ONLINE_TASK = "recommendations.train_online"


class ActivationError(ValueError):
    """The version cannot serve (not finished, failed, or its rows were purged)."""


def modelversion_start(*, project_id: int, kind: str = VersionKind.FULL) -> ModelVersion | None:
    """Create the version a training run will fill, or None when the project
    already has a run in progress (or, for an online update, no active version to
    start from). A run that has not finished after RECS_STALE_RUN_HOURS is taken
    for dead (its worker was killed) and marked failed, so it blocks no longer."""
    stale = timezone.now() - timedelta(hours=settings.RECS_STALE_RUN_HOURS)
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=project_id)  # one starter at a time per project
        ModelVersion.objects.filter(project_id=project_id, status__in=RUNNING, created_at__lt=stale).update(
            status=VersionStatus.FAILED, error="abandoned: not finished in time", finished_at=timezone.now()
        )
        if ModelVersion.objects.filter(project_id=project_id, status__in=RUNNING).exists():
            return None
        parent = None
        if kind == VersionKind.ONLINE:
            parent = ModelVersion.objects.filter(project_id=project_id, status=VersionStatus.ACTIVE).first()
            if parent is None:
                return None
        first = not ModelVersion.objects.filter(project_id=project_id).exists()
        version = ModelVersion.objects.create(project_id=project_id, kind=kind, parent=parent)
    if first:
        recs_schedules_ensure(project_id=project_id)
    return version


def modelversion_finish(*, version_id: int) -> ModelVersion:
    """Mark a finished run ready, then activate it if it is good enough: a full run
    whose HR@10 is not below the active version's by more than
    RECS_ACTIVATION_MARGIN, an online update whose parent still serves. Otherwise
    it stays ready with the reason, for a marketer to decide."""
    version = ModelVersion.objects.get(pk=version_id)
    version.status = VersionStatus.READY
    version.finished_at = timezone.now()
    version.save(update_fields=["status", "finished_at"])
    active = ModelVersion.objects.filter(project_id=version.project_id, status=VersionStatus.ACTIVE).first()
    reason = ""
    if active is not None:
        if version.kind == VersionKind.ONLINE:
            if active.pk != version.parent_id:
                reason = f"the active version changed to v{active.pk} while this update ran"
        else:
            new_hr, old_hr = version.hr10, active.hr10
            margin = settings.RECS_ACTIVATION_MARGIN
            if old_hr is not None and (new_hr is None or new_hr < old_hr - margin):
                reason = f"HR@10 {new_hr} is below the active v{active.pk}'s {old_hr} by more than {margin}"
    if reason:
        version.held_reason = reason[:500]
        version.save(update_fields=["held_reason"])
        return version
    return modelversion_activate(version_id=version.pk, by="auto")


def modelversion_activate(*, version_id: int, by: str = "") -> ModelVersion:
    """Make the version the one served; the previously active one retires (and
    can be rolled back to). Raises ActivationError for versions that cannot serve."""
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().get(pk=version_id)
        if version.status == VersionStatus.ACTIVE:
            return version
        if version.status not in (VersionStatus.READY, VersionStatus.RETIRED) or version.rows_purged:
            raise ActivationError(f"v{version.pk} is {version.status}{' and purged' if version.rows_purged else ''}")
        # Lock the current active row too, so two activations serialise.
        list(
            ModelVersion.objects.select_for_update().filter(project_id=version.project_id, status=VersionStatus.ACTIVE)
        )
        ModelVersion.objects.filter(project_id=version.project_id, status=VersionStatus.ACTIVE).update(
            status=VersionStatus.RETIRED
        )
        version.status = VersionStatus.ACTIVE
        version.held_reason = ""
        version.activated_at = timezone.now()
        version.activated_by = by[:150]
        version.save(update_fields=["status", "held_reason", "activated_at", "activated_by"])
    modelversions_purge(project_id=version.project_id)
    return version


def modelversion_rollback(*, project_id: int, by: str = "") -> ModelVersion:
    """Serve again the most recently activated retired version."""
    previous = (
        ModelVersion.objects.filter(project_id=project_id, status=VersionStatus.RETIRED, rows_purged=False)
        .exclude(activated_at=None)
        .order_by("-activated_at")
        .first()
    )
    if previous is None:
        raise ActivationError("there is no earlier version to roll back to")
    return modelversion_activate(version_id=previous.pk, by=by)


def modelversions_purge(*, project_id: int) -> int:
    """Delete the rows of retired and failed versions beyond the newest
    RECS_KEEP_VERSIONS retired ones (kept for rollback). Returns versions purged."""
    keep = settings.RECS_KEEP_VERSIONS
    retired = ModelVersion.objects.filter(project_id=project_id, status=VersionStatus.RETIRED, rows_purged=False)
    kept = list(retired.order_by("-activated_at", "-id").values_list("pk", flat=True)[:keep])
    doomed = list(
        ModelVersion.objects.filter(
            project_id=project_id, status__in=[VersionStatus.RETIRED, VersionStatus.FAILED], rows_purged=False
        )
        .exclude(pk__in=kept)
        .values_list("pk", flat=True)
    )
    for pk in doomed:
        RelatedProduct.objects.filter(model_version_id=pk).delete()
        TrendingProduct.objects.filter(model_version_id=pk).delete()
    ModelVersion.objects.filter(pk__in=doomed).update(rows_purged=True)
    return len(doomed)


def schedule_kwargs(project_id: int) -> str:
    return json.dumps({"project_id": project_id})


def recs_schedules_ensure(*, project_id: int) -> tuple[PeriodicTask, PeriodicTask]:
    """The project's nightly full training (03:00 in its time zone) and online
    update (every RECS_ONLINE_INTERVAL_MINUTES) as django-celery-beat tasks.
    Existing ones are left as a marketer may have changed them in the admin."""
    project = Project.objects.get(pk=project_id)
    crontab, _ = CrontabSchedule.objects.get_or_create(
        minute="0", hour="3", day_of_week="*", day_of_month="*", month_of_year="*", timezone=project.timezone
    )
    interval, _ = IntervalSchedule.objects.get_or_create(
        every=settings.RECS_ONLINE_INTERVAL_MINUTES, period=IntervalSchedule.MINUTES
    )
    kwargs = schedule_kwargs(project_id)
    nightly, _ = PeriodicTask.objects.get_or_create(
        name=f"recommendations: nightly training of project {project_id}",
        defaults={"task": FULL_TASK, "crontab": crontab, "kwargs": kwargs, "queue": "ml"},
    )
    online, _ = PeriodicTask.objects.get_or_create(
        name=f"recommendations: online update of project {project_id}",
        defaults={"task": ONLINE_TASK, "interval": interval, "kwargs": kwargs, "queue": "ml"},
    )
    return nightly, online


def online_update_due(*, project_id: int) -> bool:
    """True when the active version exists and events or products arrived since it
    was trained (two index probes: event pk, catalog updated time)."""
    from catalog.models import Product
    from crm.models import Event

    active = ModelVersion.objects.filter(project_id=project_id, status=VersionStatus.ACTIVE).first()
    if active is None:
        return False
    if Event.objects.filter(project_id=project_id, pk__gt=active.last_event_id).exists():
        return True
    return Product.objects.filter(project_id=project_id, updated_at__gte=active.created_at).exists()
