"""The segment rule grammar: parsing and validation of the JSON a marketer saves,
into typed nodes that the compiler turns into SQL.

INTERFACE STUB (to be completed): the signatures and the JSON shapes below are
the contract the membership service, the API and the console build on.

A rule tree is a node:
    {"all": [node, ...]} | {"any": [node, ...]} | {"not": node}
    {"profile": "country", "op": "in", "value": ["DE", "FR"]}
    {"event": "Product Viewed", "count": {"op": "gte", "value": 3}, "window": {"last_days": 7}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class RulesInvalid(Exception):
    """A rule tree that cannot be compiled; each error names its path
    ("rules.all[2].count: must be >= 0")."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{path}: {message}" for path, message in errors))


@dataclass(frozen=True)
class Node:
    """A parsed node: `kind` is all / any / not / profile / event (more to come);
    `children` for groups, `params` for conditions; `path` as in error messages."""

    kind: str
    path: str
    children: tuple[Node, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Dependencies:
    """What a rule tree reads: which arriving events or changed fields can change
    a profile's membership, and whether time passing can."""

    event_names: frozenset[str] = frozenset()
    profile_fields: frozenset[str] = frozenset()
    devices: bool = False
    recent_items: bool = False
    time_sensitive: bool = False
    segments: frozenset[int] = frozenset()

    def as_json(self) -> dict[str, Any]:
        return {
            "event_names": sorted(self.event_names),
            "profile_fields": sorted(self.profile_fields),
            "devices": self.devices,
            "recent_items": self.recent_items,
            "time_sensitive": self.time_sensitive,
            "segments": sorted(self.segments),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Dependencies:
        return cls(
            event_names=frozenset(data.get("event_names", ())),
            profile_fields=frozenset(data.get("profile_fields", ())),
            devices=bool(data.get("devices")),
            recent_items=bool(data.get("recent_items")),
            time_sensitive=bool(data.get("time_sensitive")),
            segments=frozenset(data.get("segments", ())),
        )


def rules_parse(data: Any, *, project_id: int, segment_id: int | None = None) -> Node:
    """The parsed tree of `data`, or RulesInvalid naming every bad path. Segment
    references must be the project's own and must not lead back to `segment_id`."""
    errors: list[tuple[str, str]] = []
    node = _parse(data, "rules", errors)
    if errors or node is None:
        raise RulesInvalid(errors or [("rules", "is empty")])
    return node


def _parse(data: Any, path: str, errors: list[tuple[str, str]]) -> Node | None:
    if not isinstance(data, dict) or len(data) == 0:
        errors.append((path, "must be an object"))
        return None
    for group in ("all", "any"):
        if group in data:
            items = data[group]
            if not isinstance(items, list) or not items:
                errors.append((f"{path}.{group}", "must be a non-empty list"))
                return None
            children = [_parse(item, f"{path}.{group}[{i}]", errors) for i, item in enumerate(items)]
            return Node(group, path, tuple(c for c in children if c is not None))
    if "not" in data:
        child = _parse(data["not"], f"{path}.not", errors)
        return Node("not", path, (child,) if child else ())
    if "profile" in data:
        op = data.get("op")
        if op not in ("eq", "in"):
            errors.append((f"{path}.op", "must be eq or in"))
            return None
        return Node("profile", path, params={"field": data["profile"], "op": op, "value": data.get("value")})
    if "event" in data:
        count = data.get("count", {"op": "gte", "value": 1})
        if not isinstance(count.get("value"), int) or count["value"] < 0:
            errors.append((f"{path}.count", "must be >= 0"))
            return None
        return Node("event", path, params={"name": data["event"], "count": count, "window": data.get("window", "ever")})
    errors.append((path, "is not a known condition"))
    return None


def rules_dependencies(node: Node) -> Dependencies:
    """What `node` reads (see Dependencies)."""
    events: set[str] = set()
    fields: set[str] = set()
    timed = False
    for n in _walk(node):
        if n.kind == "event":
            events.add(n.params["name"])
            timed = timed or n.params["window"] != "ever"
        elif n.kind == "profile":
            fields.add(n.params["field"])
    return Dependencies(event_names=frozenset(events), profile_fields=frozenset(fields), time_sensitive=timed)


def _walk(node: Node):  # noqa: ANN202
    yield node
    for child in node.children:
        yield from _walk(child)
