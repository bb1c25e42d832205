"""Assignment to the system control group, the campaign's control group and
the variants: a stable hash, the same in Python and in SQL."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from campaigns.sending.assignment import (
    SQL_CONTROL,
    SQL_SYSTEM_CONTROL,
    Assignment,
    assign,
    assignment_rules,
    assignment_sql,
)
from crm.models import Profile
from tests.campaigns.sending_fixtures import EMAIL, campaign_make, profiles_make

pytestmark = pytest.mark.django_db


def bucket(pid: int, salt: str) -> int:
    return int(hashlib.md5(f"{salt}{pid}".encode()).hexdigest()[:8], 16) % 1000


def test_groups_follow_the_bucket_bounds(project_a):
    project = project_a[0]
    campaign = campaign_make(project.pk, control_percent=20, variants=[("A", 30, EMAIL), ("B", 70, EMAIL)])
    a, b = campaign.variants.order_by("pk")
    rules = assignment_rules(campaign, system_control_percent=5)
    assert (rules.system_control_end, rules.control_end) == (50, 200)
    # B ends at 200 + 800 * 100 // 100; A at 200 + 800 * 30 // 100.
    assert rules.variant_ends == ((440, a.pk), (1000, b.pk))
    for pid in range(1, 3001):
        system, own = bucket(pid, f"system-control:{project.pk}"), bucket(pid, f"campaign:{campaign.pk}")
        if system < 50:
            expected = Assignment(group="system_control")
        elif own < 200:
            expected = Assignment(group="control")
        else:
            expected = Assignment(group="variant", variant_id=a.pk if own < 440 else b.pk)
        assert assign(rules, pid) == expected


def test_shares_are_close_to_the_configured_percentages(project_a):
    project = project_a[0]
    campaign = campaign_make(project.pk, control_percent=10, variants=[("A", 50, EMAIL), ("B", 50, EMAIL)])
    a, b = campaign.variants.order_by("pk")
    rules = assignment_rules(campaign, system_control_percent=10)
    groups = Counter(assign(rules, pid).variant_id or assign(rules, pid).group for pid in range(1, 20_001))
    # 20,000 profiles: 10 % system control; of the rest 10 % control, then 45 % / 45 %.
    assert abs(groups["system_control"] - 2000) < 200
    assert abs(groups["control"] - 1800) < 200
    assert abs(groups[a.pk] - 8100) < 400
    assert abs(groups[b.pk] - 8100) < 400
    assert sum(groups.values()) == 20_000


def test_the_system_control_group_is_the_same_for_every_campaign_of_the_project(project_a, project_b):
    project = project_a[0]
    first = assignment_rules(campaign_make(project.pk), system_control_percent=10)
    second = assignment_rules(campaign_make(project.pk, control_percent=30), system_control_percent=10)
    other = assignment_rules(campaign_make(project_b[0].pk), system_control_percent=10)
    held = {pid for pid in range(1, 5001) if assign(first, pid).group == "system_control"}
    assert held == {pid for pid in range(1, 5001) if assign(second, pid).group == "system_control"}
    assert len(held) > 400
    # Another project holds out other profiles (its salt names it).
    assert held != {pid for pid in range(1, 5001) if assign(other, pid).group == "system_control"}


def test_campaign_control_groups_differ_between_campaigns_and_are_stable(project_a):
    project = project_a[0]
    one = campaign_make(project.pk, control_percent=20)
    two = campaign_make(project.pk, control_percent=20)
    r1, r2 = assignment_rules(one, system_control_percent=0), assignment_rules(two, system_control_percent=0)
    c1 = {pid for pid in range(1, 3001) if assign(r1, pid).group == "control"}
    c2 = {pid for pid in range(1, 3001) if assign(r2, pid).group == "control"}
    assert c1 != c2
    # Rules rebuilt from the database assign the same way (a re-run).
    again = assignment_rules(type(one).objects.get(pk=one.pk), system_control_percent=0)
    assert c1 == {pid for pid in range(1, 3001) if assign(again, pid).group == "control"}


def test_the_sql_expression_agrees_with_python(project_a):
    project = project_a[0]
    ids = profiles_make(project.pk, 400)
    campaign = campaign_make(project.pk, control_percent=25, variants=[("A", 40, EMAIL), ("B", 60, EMAIL)])
    rules = assignment_rules(campaign, system_control_percent=8)
    rows = dict(Profile.objects.filter(pk__in=ids).annotate(g=assignment_sql(rules)).values_list("pk", "g"))
    for pid in ids:
        a = assign(rules, pid)
        expected = {"system_control": SQL_SYSTEM_CONTROL, "control": SQL_CONTROL}.get(a.group, a.variant_id)
        assert rows[pid] == expected
    assert {SQL_SYSTEM_CONTROL, SQL_CONTROL} <= set(rows.values())


def test_bad_percentages_name_the_field(project_a):
    campaign = campaign_make(project_a[0].pk)
    with pytest.raises(ValueError, match="system_control_percent: must be 0 to 10"):
        assignment_rules(campaign, system_control_percent=11)
