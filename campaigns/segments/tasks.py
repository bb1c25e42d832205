"""Celery tasks of the `segments` queue: stored membership kept current. Each
takes ids and calls one service of campaigns.segments.membership.

The refresh and the full computation are acknowledged late: both are
idempotent re-evaluations, so a worker killed mid-task (kill -9, OOM) gets them
redelivered and the replay records nothing twice, while a lost refresh would
leave members stale until the profile's next event, and a lost computation a
segment `computing` for good."""

from __future__ import annotations

from celery import shared_task
from django.db import IntegrityError, InterfaceError, OperationalError

from campaigns.segments import membership

# Database down or a deadlock victim: worth retrying. So is a foreign-key
# violation of the refresh: a profile merged away (deleted) between the
# statement's snapshot and its insert; evaluated again, it is simply gone.
_TRANSIENT = (OperationalError, InterfaceError)
_REFRESH_RETRIED = (*_TRANSIENT, IntegrityError)


@shared_task(
    name="campaigns.segments.refresh",
    queue="segments",
    ignore_result=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=_REFRESH_RETRIED,
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=10,
)
def segments_refresh_task(
    project_id: int, segment_ids: list[int], profile_ids: list[int], new_profile_ids: list[int] | None = None
) -> None:
    """Re-evaluate the profiles an ingest batch touched against the segments it
    touched, and possibly new profiles against all segments (enqueued by the
    stored-events hook, after the batch committed)."""
    membership.segments_refresh_profiles(
        project_id=project_id, segment_ids=segment_ids, profile_ids=profile_ids, new_profile_ids=new_profile_ids or ()
    )


@shared_task(
    name="campaigns.segments.compute_full",
    queue="segments",
    ignore_result=True,
    acks_late=True,
    reject_on_worker_lost=True,
)
def segment_compute_full_task(segment_id: int, rules_version: int) -> None:
    """A segment's membership from scratch (after a save); stops by itself when
    the rules changed since, and records a failure on the segment."""
    membership.segment_compute_full(segment_id=segment_id, rules_version=rules_version)


@shared_task(name="campaigns.segments.time_refresh", queue="segments", ignore_result=True)
def segments_time_refresh_task() -> int:
    """Periodic (SEGMENTS_TIME_REFRESH_SECONDS): profiles near a time boundary."""
    return membership.segments_time_refresh()


@shared_task(name="campaigns.segments.sizes_sample", queue="segments", ignore_result=True)
def segment_sizes_sample_task() -> int:
    """Periodic (SEGMENTS_SIZE_SAMPLE_SECONDS): every ready segment's size, for its chart."""
    return membership.segment_sizes_sample()
