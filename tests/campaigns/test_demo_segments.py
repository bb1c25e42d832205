"""create_demo_segments: the quickstart's example segments, computed like saved ones."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from campaigns.management.commands.create_demo_segments import DEMO_SEGMENTS
from campaigns.models import Segment, SegmentMembership, SegmentStatus
from campaigns.segments.compiler import rules_q
from campaigns.segments.rules import rules_parse
from crm.models import Profile


@pytest.fixture
def eager_tasks():
    from config.celery import app

    saved = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = saved


@pytest.mark.django_db(transaction=True)
def test_demo_segments_are_created_once_and_computed_on_the_demo_store(project_a, eager_tasks):
    project, _ = project_a
    call_command("generate_demo_data", project=project.pk, users=300, products=60, events=6000, no_progress=True,
                 stdout=StringIO())  # fmt: skip
    out = StringIO()
    call_command("create_demo_segments", project=project.pk, stdout=out)
    created = json.loads(out.getvalue())["segments_created"]
    segments = list(Segment.objects.filter(pk__in=created).order_by("pk"))
    assert [s.name for s in segments] == [name for name, _, _ in DEMO_SEGMENTS]
    now = timezone.now()
    for segment in segments:
        expected = set(
            Profile.objects.filter(project=project)
            .filter(rules_q(rules_parse(segment.rules, project_id=project.pk), now=now))
            .values_list("pk", flat=True)
        )
        stored = set(SegmentMembership.objects.filter(segment=segment).values_list("profile_id", flat=True))
        assert (segment.status, segment.member_count, stored) == (SegmentStatus.READY, len(expected), expected)
    # Every example selects someone in the demo store, and not everyone.
    assert all(0 < s.member_count < 300 for s in segments), [(s.name, s.member_count) for s in segments]
    again = StringIO()
    call_command("create_demo_segments", project=project.pk, stdout=again)
    assert json.loads(again.getvalue())["segments_created"] == []


@pytest.mark.django_db
def test_demo_segments_need_an_existing_project():
    with pytest.raises(CommandError, match="project 999999 does not exist"):
        call_command("create_demo_segments", project=999999, stdout=StringIO())
