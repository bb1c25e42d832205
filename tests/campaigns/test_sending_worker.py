"""A campaign run fanned out by a real `sends` worker (Celery, RabbitMQ) that is
killed with SIGKILL in the middle of it and started again: every member of the
segment gets exactly one message row, and the run's counts are exact (a chunk
killed mid-transaction is rolled back and redelivered; one that committed
before the kill is redelivered and adds nothing)."""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.db import transaction

from campaigns.models import CampaignRun, CampaignStatus, RunStatus
from campaigns.sending import fanout
from campaigns.sending.assignment import assign, assignment_rules
from delivery.models import Message
from tests.campaigns.sending_fixtures import NOW, campaign_make, profiles_make, segment_make

pytestmark = [pytest.mark.broker, pytest.mark.amqp]

MEMBERS = 3000


def _wait(condition, seconds: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_worker_killed_mid_fanout_enqueues_every_member_once(
    transactional_db, project_a, celery_worker_process, tmp_path
):
    project = project_a[0]
    ids = profiles_make(project.pk, MEMBERS + 50)
    members = ids[25 : 25 + MEMBERS]
    segment = segment_make(project.pk, members)
    campaign = campaign_make(project.pk, segment=segment, control_percent=10, status=CampaignStatus.SCHEDULED)
    env = {"CAMPAIGNS_CHUNK_SIZE": "100", "CAMPAIGNS_PLAN_AHEAD": "2"}
    worker = celery_worker_process(
        queues=["sends"], pool="solo", extra_env=env, log_path=str(tmp_path / "worker-1.log")
    )
    with transaction.atomic():
        run = fanout.run_start(campaign_id=campaign.pk, occurrence="now", planned_at=NOW)
    rows = Message.objects.filter(project_id=project.pk, source=campaign.source)
    _wait(lambda: rows.count() >= 600, 120, "the first worker enqueued nothing")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    assert rows.count() < MEMBERS, "the kill came too late to test anything"

    celery_worker_process(queues=["sends"], pool="solo", extra_env=env, log_path=str(tmp_path / "worker-2.log"))
    _wait(
        lambda: CampaignRun.objects.get(pk=run.pk).status == RunStatus.DONE,
        180,
        f"the run did not finish: {rows.count()} rows",
    )
    assert sorted(rows.values_list("profile_id", flat=True)) == members
    run.refresh_from_db()
    rules = assignment_rules(campaign, system_control_percent=0)
    control = sum(1 for pid in members if assign(rules, pid).group == "control")
    assert run.counts["planned"] == MEMBERS
    assert run.counts["processed"] == MEMBERS
    assert run.counts["targeted"] == MEMBERS
    assert run.counts["control"] == control
    assert run.counts["enqueued"] == MEMBERS - control
    assert run.planned_through == members[-1]
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.COMPLETED
