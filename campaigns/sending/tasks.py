"""Celery tasks of campaign sending, all on the `sends` queue (CELERY_TASK_ROUTES
"campaigns.*"): thin wrappers of campaigns.sending's services, taking ids."""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from campaigns.sending import fanout, schedule

# Database down or a deadlock victim: run again. Every task here is idempotent
# (run_start on its occurrence, a chunk on its messages' keys, a plan step on
# planned_through), so a replay after a crash repeats no send.
_RETRY = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": True,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 10,
    "ignore_result": True,
    "queue": "sends",
}
# Acknowledged after the work committed: a worker killed mid-task gets it redelivered.
_LATE = {"acks_late": True, "reject_on_worker_lost": True}


@shared_task(name="campaigns.run_plan", **_RETRY, **_LATE)
def run_plan_task(run_id: int) -> None:
    """One step of a run's planner (fanout.run_plan_step), then the next step
    queued behind the chunks it published (their send batches go between).
    Acknowledged late: a killed planner's step is redelivered and resumes."""
    more = fanout.run_plan_step(run_id=run_id)
    if not more:
        return
    if run_plan_task.request.is_eager:
        # In-process (no broker): loop here rather than nesting a call per step.
        while fanout.run_plan_step(run_id=run_id):
            pass
    else:
        run_plan_task.delay(run_id)


@shared_task(name="campaigns.profiles_send", **_RETRY, **_LATE)
def profiles_send_task(run_id: int, profile_ids: list[int]) -> None:
    """One chunk of a run: assign, render, enqueue (fanout.profiles_send_chunk).
    Acknowledged late: a redelivered chunk finds its keys and adds nothing."""
    fanout.profiles_send_chunk(run_id=run_id, profile_ids=profile_ids)


@shared_task(name="campaigns.runs_start_due", queue="sends", ignore_result=True)
def runs_start_due_task() -> None:
    """Start the "at" campaigns' runs that are due (beat, every minute)."""
    schedule.runs_start_due()


@shared_task(name="campaigns.recurring_run", **_RETRY)
def recurring_run_task(campaign_id: int) -> None:
    """A recurring campaign's beat entry: start today's run (schedule.recurring_run_start)."""
    schedule.recurring_run_start(campaign_id=campaign_id)


@shared_task(name="campaigns.ab_decide_due", queue="sends", ignore_result=True)
def ab_decide_due_task() -> None:
    """Decide the A/B tests whose decision time has come and start their winner
    runs (beat, every minute; campaigns.results.decision.ab_decide_due, which
    decides each campaign once however often it fires)."""
    from campaigns.results.decision import ab_decide_due

    ab_decide_due()
