"""A/B test first through the real broker and worker: the test run is sent by
the `sends` worker to the local SendGrid, its recipients click their tracked
links, the beat task (sent to the broker twice) decides once by the rule on the
counters the sends and clicks made, and the winner run sends the winner to
exactly the held-back profiles: every address gets one email, the control
group none."""

from __future__ import annotations

import re
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.test import Client

from campaigns.models import (
    ABDecision,
    CampaignRun,
    CampaignStat,
    CampaignStatus,
    Segment,
    SegmentMembership,
    SegmentStatus,
)
from campaigns.sending.assignment import assign, assignment_rules
from campaigns.sending.lifecycle import campaign_start
from campaigns.sending.tasks import ab_decide_due_task
from crm.models import Profile
from delivery.models import ChannelSettings, Message
from localproviders.models import OutboxMessage
from tests.campaigns.sending_fixtures import campaign_make
from tests.localproviders.server import (  # noqa: F401 - fixtures
    channel_settings,  # noqa: F811 - the fixture imported above
    local_server,
    local_server_url,
    local_service_account_key,
)

pytestmark = pytest.mark.broker

MEMBERS = 60


def _content(name: str) -> dict[str, str]:
    return {
        "subject": f"Variant {name}",
        "html": f'<p>Hi</p><a href="https://shop.example/?v={name}">Shop</a>',
        "text": "Hi",
    }


def _wait(condition, seconds: float, what) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what()
        time.sleep(0.5)


def test_the_winner_reaches_exactly_the_held_back_profiles_through_the_worker(
    transactional_db,
    celery_worker_process,
    project_a,
    channel_settings,  # noqa: F811 - the fixture imported above
    tmp_path,
):
    project = project_a[0]
    ChannelSettings.objects.create(project=project, channel="email", settings=channel_settings["email"])
    profiles = Profile.objects.bulk_create(
        [Profile(project=project, user_id=f"u{i}", email=f"u{i}@example.com") for i in range(MEMBERS)]
    )
    segment = Segment.objects.create(project=project, name="All", rules={}, status=SegmentStatus.READY)
    SegmentMembership.objects.bulk_create(
        [SegmentMembership(segment=segment, profile=p, entered_at=p.first_seen) for p in profiles]
    )
    campaign = campaign_make(
        project.pk,
        segment=segment,
        variants=[("A", 50, _content("A")), ("B", 50, _content("B"))],
        control_percent=10,
        ab_test_percent=30,
        ab_decision_hours=1,
        ab_min_sample=3,
        status=CampaignStatus.DRAFT,
    )
    va, vb = campaign.variants.order_by("pk")
    rules = assignment_rules(campaign, system_control_percent=0, phase="test")
    groups = {p.pk: assign(rules, p.pk) for p in profiles}
    email_of = {p.pk: p.email for p in profiles}
    tested_a = sorted(pid for pid, g in groups.items() if g.variant_id == va.pk)
    tested_b = sorted(pid for pid, g in groups.items() if g.variant_id == vb.pk)
    held = sorted(pid for pid, g in groups.items() if g.group == "held")
    control = sorted(pid for pid, g in groups.items() if g.group == "control")
    assert len(tested_a) >= 3 and len(tested_b) >= 3 and held and control
    log = tmp_path / "worker.log"
    celery_worker_process(queues=["sends"], log_path=str(log))

    campaign_start(campaign_id=campaign.pk)
    tested = len(tested_a) + len(tested_b)

    def stat(group: str, metric: str) -> int:
        rows = CampaignStat.objects.filter(campaign=campaign, group=group, metric=metric)
        return sum(rows.values_list("count", flat=True))

    _wait(
        lambda: stat(f"variant:{va.pk}", "sent") + stat(f"variant:{vb.pk}", "sent") == tested,
        90,
        lambda: f"{Counter(Message.objects.values_list('state', 'skip_reason'))}; {log.read_text()[-3000:]}",
    )
    run = CampaignRun.objects.get(campaign=campaign, occurrence="now")
    assert run.counts["held_for_winner"] == len(held)
    assert sorted(OutboxMessage.objects.values_list("recipient", flat=True)) == sorted(
        email_of[pid] for pid in tested_a + tested_b
    )
    # Every recipient of A clicks, nobody of B: A wins (one-sided p well below 0.05).
    client = Client()
    for pid in tested_a:
        html = Message.objects.get(source=campaign.source, profile_id=pid).content["html"]
        [link] = re.findall(r'href="[^"]*(/t/c/[^"]+)"', html)
        assert client.get(link.replace("&amp;", "&")).status_code == 302
    assert stat(f"variant:{va.pk}", "clicked") == len(tested_a)

    # The decision time has come (the test run started an hour and more ago); the beat fires twice.
    CampaignRun.objects.filter(pk=run.pk).update(started_at=run.started_at - timedelta(hours=2))
    ab_decide_due_task.delay()
    ab_decide_due_task.delay()
    _wait(
        lambda: OutboxMessage.objects.count() == tested + len(held),
        90,
        lambda: (
            f"{OutboxMessage.objects.count()} emails; {list(ABDecision.objects.values())}; {log.read_text()[-3000:]}"
        ),
    )
    time.sleep(2)  # the second firing had its chance to decide (and send) again
    decision = ABDecision.objects.get(campaign=campaign)
    assert (decision.outcome, decision.winner_id, decision.decided_by) == ("winner", va.pk, "rule")
    assert decision.figures["variants"][str(va.pk)]["successes"] == len(tested_a)
    winner_run = CampaignRun.objects.get(campaign=campaign, occurrence="now:winner")
    _wait(lambda: CampaignRun.objects.get(pk=winner_run.pk).status == "done", 30, lambda: "winner run not done")
    winner_run.refresh_from_db()
    assert winner_run.counts["enqueued"] == len(held)
    assert winner_run.counts["tested"] == tested
    rows = list(OutboxMessage.objects.values_list("recipient", "subject"))
    assert len(rows) == len({r for r, _ in rows}) == tested + len(held)  # one email each
    assert sorted(r for r, s in rows if r in {email_of[pid] for pid in held}) == sorted(email_of[pid] for pid in held)
    assert {s for r, s in rows if r in {email_of[pid] for pid in held}} == {"Variant A"}
    assert not {email_of[pid] for pid in control} & {r for r, _ in rows}
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.COMPLETED
