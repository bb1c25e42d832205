"""Rule trees to SQL: one query over a project's profiles (Django Q objects with
EXISTS / aggregate subqueries on events and devices), an explanation of which
conditions a profile met, and the profiles whose result time can change.

INTERFACE STUB (to be completed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Q

from campaigns.segments.rules import Node
from crm.models import Event


@dataclass(frozen=True)
class ConditionResult:
    """One condition of a tree, for one profile: its path, a readable label, met or not."""

    path: str
    label: str
    met: bool


def rules_q(node: Node, *, now: datetime) -> Q:
    """The filter over crm.Profile of the profiles that satisfy `node` at `now`;
    the caller scopes it to the project (Profile.objects.filter(project_id=...))."""
    if node.kind == "all":
        q = Q()
        for child in node.children:
            q &= rules_q(child, now=now)
        return q
    if node.kind == "any":
        q = Q(pk__in=[])
        for child in node.children:
            q |= rules_q(child, now=now)
        return q
    if node.kind == "not":
        return ~rules_q(node.children[0], now=now)
    if node.kind == "profile":
        p = node.params
        return Q(**{p["field"] if p["op"] == "eq" else f"{p['field']}__in": p["value"]})
    if node.kind == "event":
        p = node.params
        events = Event.objects.filter(name=p["name"])
        if isinstance(p["window"], dict) and "last_days" in p["window"]:
            events = events.filter(timestamp__gte=now - timedelta(days=p["window"]["last_days"]))
        counts = events.order_by().values("profile_id").annotate(n=Count("*"))
        op, value = p["count"]["op"], p["count"]["value"]
        if op == "gte" and value >= 1:
            return Q(pk__in=counts.filter(n__gte=value).values("profile_id"))
        if op == "lte":  # includes the profiles with none
            return ~Q(pk__in=counts.filter(n__gt=value).values("profile_id"))
        raise ValueError(f"count op {op} is not in the stub")
    raise ValueError(f"unknown node kind {node.kind}")


def rules_explain(
    node: Node, *, project_id: int, profile_ids: list[int], now: datetime
) -> dict[int, list[ConditionResult]]:
    """For each of `profile_ids`, every condition (leaf) of `node` and whether the profile meets it."""
    raise NotImplementedError


def boundary_q(node: Node, *, since: datetime, now: datetime) -> Q | None:
    """The profiles whose result for `node` may differ between `since` and `now`
    only because time passed (an event leaving a "last 7 days" window, a birthday);
    None when time cannot change the result."""
    raise NotImplementedError
