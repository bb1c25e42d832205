"""The segment rule grammar: parsing and validation of the JSON a marketer saves,
into typed nodes that the compiler (campaigns.segments.compiler) turns into SQL.

The grammar is documented for users in docs/segments.md. A rule tree is a node:
    {"all": [node, ...]} | {"any": [node, ...]} | {"not": node}
    {"profile": "country", "op": "in", "value": ["DE", "FR"]}
    {"device": [{"field": "platform", "op": "eq", "value": "ios"}, ...]}
    {"event": "Product Viewed", "count": {"op": "gte", "value": 3}, "window": {"last_days": 7}}
    {"recent_item": "viewed", "product": "SKU1"} | {"recent_item": "purchased", "category": "Shoes"}
    {"segment": 12, "member": true}
    {"bucket": {"op": "between", "value": [0, 99]}}

Parsing checks every value against its type and collects every error with its
path ("rules.all[1].value: must be a number"); it normalises values (times to
aware UTC datetimes, versions to lists of ints) so the compiler never re-checks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

MAX_DEPTH = 10  # levels of groups in one tree
MAX_CONDITIONS = 200  # conditions in one tree, referenced segments' included
MAX_SEGMENT_DEPTH = 5  # a segment referring to a segment referring to ...
MAX_LIST = 1000  # items of an `in` / `not_in` list
MAX_TEXT = 1000  # characters of a text value
MAX_NUMBER = 10**15  # beyond it a number is a typo, not a threshold
MAX_COUNT = 1_000_000
MAX_DAYS = 36_500
MAX_JSON_KEYS = 10  # keys of a traits.a.b.c path

TEXT_OPS = ("eq", "ne", "in", "not_in", "contains", "starts_with", "exists", "missing")
NUMBER_OPS = ("eq", "ne", "in", "not_in", "lt", "lte", "gt", "gte", "between", "exists", "missing")
TIME_OPS = ("before", "after", "between", "within_last", "more_than_ago", "exists", "missing")
BOOL_OPS = ("eq", "ne", "exists", "missing")
# Traits and event properties: JSON of unknown type.
JSON_OPS = (
    "eq", "ne", "in", "not_in", "contains", "starts_with", "lt", "lte", "gt", "gte", "between", "exists", "missing",
)  # fmt: skip
VERSION_OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "between", "exists", "missing")
PRESENCE_OPS = ("exists", "missing")
COUNT_OPS = ("eq", "ne", "lt", "lte", "gt", "gte")
AGGREGATE_OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "between")
AGGREGATE_FNS = ("sum", "avg", "min", "max")
EVENT_TIME_OPS = ("before", "after", "between", "within_last", "more_than_ago")
BUCKET_OPS = ("eq", "ne", "in", "not_in", "lt", "lte", "gt", "gte", "between")

# Profile columns by type ("traits.<key>" is the JSON type).
PROFILE_FIELDS: dict[str, str] = {
    **dict.fromkeys(("email", "phone", "name", "country", "city", "gender", "locale", "timezone", "user_id"), "text"),
    **dict.fromkeys(("first_seen", "last_seen", "birth_date"), "time"),
    **dict.fromkeys(("email_subscribed", "push_subscribed", "sms_subscribed"), "bool"),
    "age": "number",
}
DEVICE_FIELDS: dict[str, str] = {
    "platform": "text",
    "os_name": "text",
    "push_token": "presence",
    "app_version": "version",
    "os_version": "version",
}
OPS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "text": TEXT_OPS,
    "number": NUMBER_OPS,
    "time": TIME_OPS,
    "bool": BOOL_OPS,
    "json": JSON_OPS,
    "version": VERSION_OPS,
    "presence": PRESENCE_OPS,
}
# Value-free operators.
NO_VALUE_OPS = ("exists", "missing")

_VERSION = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,9}){0,9}$")

Errors = list[tuple[str, str]]


class RulesInvalid(Exception):
    """A rule tree that cannot be compiled; each error names its path
    ("rules.all[2].count: must be >= 0")."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{path}: {message}" for path, message in errors))


@dataclass(frozen=True)
class Node:
    """A parsed node: `kind` is all / any / not / profile / device / event /
    recent_item / segment / bucket; `children` for groups (and, for `segment`, the
    referenced segment's parsed tree, inlined); `params` for conditions, with
    normalised values; `path` as in error messages."""

    kind: str
    path: str
    children: tuple[Node, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def is_group(self) -> bool:
        return self.kind in ("all", "any", "not")


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
    references must be the project's own and must not lead back to `segment_id`;
    event names are resolved through the project's EventNameMapping rows.
    Reads the database (mappings, referenced segments); writes nothing."""
    parser = _Parser(project_id=project_id, chain=(segment_id,) if segment_id is not None else ())
    node = parser.node(data, "rules", 1)
    if not parser.errors and node is not None:
        conditions = sum(1 for n in _walk(node) if not n.is_group and n.kind != "segment")
        if conditions > MAX_CONDITIONS:
            parser.errors.append(
                ("rules", f"has {conditions} conditions (referenced segments included); at most {MAX_CONDITIONS}")
            )
    if parser.errors or node is None:
        raise RulesInvalid(parser.errors or [("rules", "is empty")])
    return node


def rules_dependencies(node: Node) -> Dependencies:
    """What `node` reads (see Dependencies), referenced segments included."""
    events: set[str] = set()
    fields: set[str] = set()
    segments: set[int] = set()
    devices = recent = timed = False
    for n in _walk(node):
        p = n.params
        if n.kind == "profile":
            fields.add("traits" if p["type"] == "json" else ("birth_date" if p["field"] == "age" else p["field"]))
            timed = timed or p["field"] == "age" or p["op"] in ("within_last", "more_than_ago")
        elif n.kind == "event":
            events.update(p["names"])
            timed = (
                timed
                or "last_days" in p["window"]
                or any(t is not None and t["op"] in ("within_last", "more_than_ago") for t in (p["first"], p["last"]))
            )
        elif n.kind == "device":
            devices = True
        elif n.kind == "recent_item":
            recent = True
        elif n.kind == "segment":
            segments.add(p["segment_id"])
    return Dependencies(
        event_names=frozenset(events),
        profile_fields=frozenset(fields),
        devices=devices,
        recent_items=recent,
        time_sensitive=timed,
        segments=frozenset(segments),
    )


def walk(node: Node) -> Iterator[Node]:
    """Every node of the tree, depth first, referenced segments' trees included."""
    return _walk(node)


def _walk(node: Node) -> Iterator[Node]:
    yield node
    for child in node.children:
        yield from _walk(child)


def _allowed(options: tuple[str, ...] | list[str]) -> str:
    return ", ".join(options)


class _Parser:
    def __init__(self, *, project_id: int, chain: tuple[int, ...]) -> None:
        self.project_id = project_id
        # Segment ids from the one being saved down to the one being parsed: a cycle check.
        self.chain = chain
        self.errors: Errors = []
        self._mappings: dict[str, str] | None = None

    def error(self, path: str, message: str) -> None:
        self.errors.append((path, message))

    # Nodes ----------------------------------------------------------------

    def node(self, data: Any, path: str, depth: int) -> Node | None:
        if not isinstance(data, dict) or not data:
            self.error(path, "must be an object with one of: " + _allowed(_NODE_KEYS))
            return None
        if depth > MAX_DEPTH:
            self.error(path, f"is nested too deeply (at most {MAX_DEPTH} levels)")
            return None
        kind = next((k for k in _NODE_KEYS if k in data), None)
        if kind is None:
            self.error(path, f"unknown condition {_keys(data)}; expected one of: {_allowed(_NODE_KEYS)}")
            return None
        return getattr(self, f"_{kind}")(data, path, depth)

    def _group(self, kind: str, data: dict, path: str, depth: int) -> Node | None:
        self._only(data, (kind,), path)
        items = data[kind]
        if not isinstance(items, list) or not items:
            self.error(f"{path}.{kind}", "must be a non-empty list")
            return None
        if len(items) > MAX_CONDITIONS:
            self.error(f"{path}.{kind}", f"has {len(items)} items; at most {MAX_CONDITIONS}")
            return None
        children = [self.node(item, f"{path}.{kind}[{i}]", depth + 1) for i, item in enumerate(items)]
        if any(c is None for c in children):
            return None
        return Node(kind, path, tuple(c for c in children if c is not None))

    def _all(self, data: dict, path: str, depth: int) -> Node | None:
        return self._group("all", data, path, depth)

    def _any(self, data: dict, path: str, depth: int) -> Node | None:
        return self._group("any", data, path, depth)

    def _not(self, data: dict, path: str, depth: int) -> Node | None:
        self._only(data, ("not",), path)
        child = self.node(data["not"], f"{path}.not", depth + 1)
        return Node("not", path, (child,)) if child is not None else None

    def _profile(self, data: dict, path: str, depth: int) -> Node | None:
        self._only(data, ("profile", "op", "value"), path)
        name = data["profile"]
        if not isinstance(name, str):
            self.error(f"{path}.profile", "must be a text")
            return None
        keys: tuple[str, ...] = ()
        if name.startswith("traits."):
            keys = self._json_keys(name[len("traits.") :], f"{path}.profile")
            if not keys:
                return None
            kind = "json"
        elif name in PROFILE_FIELDS:
            kind = PROFILE_FIELDS[name]
        else:
            self.error(
                f"{path}.profile", f"unknown field {name!r}; allowed: {_allowed(list(PROFILE_FIELDS))}, traits.<key>"
            )
            return None
        age = name == "age"
        op, value, ok = self._op_value(
            data, path, kind, date_only=name == "birth_date", integer=age, bounds=(0, 200) if age else None
        )
        if not ok:
            return None
        return Node("profile", path, params={"field": name, "type": kind, "keys": keys, "op": op, "value": value})

    def _device(self, data: dict, path: str, depth: int) -> Node | None:
        self._only(data, ("device",), path)
        items = data["device"]
        if not isinstance(items, list) or not items:
            self.error(f"{path}.device", "must be a non-empty list of {field, op, value}")
            return None
        if len(items) > 20:
            self.error(f"{path}.device", "has more than 20 conditions")
            return None
        conditions = []
        ok = True
        for i, item in enumerate(items):
            ipath = f"{path}.device[{i}]"
            if not isinstance(item, dict):
                self.error(ipath, "must be an object {field, op, value}")
                ok = False
                continue
            self._only(item, ("field", "op", "value"), ipath)
            name = item.get("field")
            if name not in DEVICE_FIELDS:
                self.error(f"{ipath}.field", f"unknown field {name!r}; allowed: {_allowed(list(DEVICE_FIELDS))}")
                ok = False
                continue
            op, value, good = self._op_value(item, ipath, DEVICE_FIELDS[name])
            ok = ok and good
            conditions.append({"field": name, "type": DEVICE_FIELDS[name], "op": op, "value": value})
        if not ok:
            return None
        return Node("device", path, params={"conditions": tuple(conditions)})

    def _event(self, data: dict, path: str, depth: int) -> Node | None:
        self._only(data, ("event", "where", "count", "did", "window", "aggregate", "first", "last"), path)
        name = self._text(data["event"], f"{path}.event")
        if name is not None and not name:
            self.error(f"{path}.event", "must not be empty")
            name = None
        ok = name is not None
        where = []
        if "where" in data:
            items = data["where"]
            if not isinstance(items, list):
                self.error(f"{path}.where", "must be a list of {property, op, value}")
                items, ok = [], False
            elif len(items) > 20:
                self.error(f"{path}.where", "has more than 20 conditions")
                items, ok = [], False
            for i, item in enumerate(items):
                ipath = f"{path}.where[{i}]"
                if not isinstance(item, dict):
                    self.error(ipath, "must be an object {property, op, value}")
                    ok = False
                    continue
                self._only(item, ("property", "op", "value"), ipath)
                prop = item.get("property")
                keys = self._json_keys(prop, f"{ipath}.property") if isinstance(prop, str) else ()
                if not isinstance(prop, str):
                    self.error(f"{ipath}.property", "must be a text (a property name, or a.b for a nested one)")
                if not keys:
                    ok = False
                    continue
                op, value, good = self._op_value(item, ipath, "json")
                ok = ok and good
                where.append({"property": prop, "keys": keys, "op": op, "value": value})
        window = self._window(data.get("window", "ever"), f"{path}.window")
        ok = ok and window is not None
        did = data.get("did", True)
        if not isinstance(did, bool):
            self.error(f"{path}.did", "must be true or false")
            ok = False
        count = None
        if "count" in data:
            count = self._count(data["count"], f"{path}.count")
            ok = ok and count is not None
        aggregate = None
        if "aggregate" in data:
            aggregate = self._aggregate(data["aggregate"], f"{path}.aggregate")
            ok = ok and aggregate is not None
        first_last = {}
        for which in ("first", "last"):
            first_last[which] = None
            if which in data:
                spec = data[which]
                wpath = f"{path}.{which}"
                if not isinstance(spec, dict):
                    self.error(wpath, "must be an object {op, value}")
                    ok = False
                    continue
                self._only(spec, ("op", "value"), wpath)
                op, value, good = self._op_value(spec, wpath, "time", ops=EVENT_TIME_OPS)
                ok = ok and good
                first_last[which] = {"op": op, "value": value}
        if did is False and (count or aggregate or first_last["first"] or first_last["last"]):
            self.error(f"{path}.did", "false cannot be combined with count, aggregate, first or last")
            ok = False
        if not ok or name is None:
            return None
        if did is False:
            count = {"op": "eq", "value": 0}
        elif count is None and not (aggregate or first_last["first"] or first_last["last"]):
            count = {"op": "gte", "value": 1}
        return Node(
            "event",
            path,
            params={
                "name": name,
                "names": self._event_names(name),
                # The compiler keys the event subqueries on it too, so that both event
                # indexes apply in full (event_project_name_time_pid leads with the project).
                "project_id": self.project_id,
                "where": tuple(where),
                "count": count,
                "window": window,
                "aggregate": aggregate,
                "first": first_last["first"],
                "last": first_last["last"],
            },
        )

    def _recent_item(self, data: dict, path: str, depth: int) -> Node | None:
        self._only(data, ("recent_item", "product", "category"), path)
        which = data["recent_item"]
        ok = True
        if which not in ("viewed", "purchased"):
            self.error(f"{path}.recent_item", "must be one of: viewed, purchased")
            ok = False
        if ("product" in data) == ("category" in data):
            self.error(path, "needs exactly one of: product, category")
            return None
        key = "product" if "product" in data else "category"
        value = self._text(data[key], f"{path}.{key}")
        if value == "":
            self.error(f"{path}.{key}", "must not be empty")
            value = None
        if not ok or value is None:
            return None
        return Node("recent_item", path, params={"list": which, key: value})

    def _segment(self, data: dict, path: str, depth: int) -> Node | None:
        from campaigns.models import Segment  # campaigns.models does not import this module; no cycle at load

        self._only(data, ("segment", "member"), path)
        segment_id = data["segment"]
        member = data.get("member", True)
        if not isinstance(member, bool):
            self.error(f"{path}.member", "must be true or false")
            return None
        if not isinstance(segment_id, int) or isinstance(segment_id, bool) or not 0 < segment_id < 2**63:
            self.error(f"{path}.segment", "must be a segment id (a positive integer)")
            return None
        if segment_id in self.chain:
            trail = " -> ".join(str(s) for s in (*self.chain, segment_id))
            self.error(f"{path}.segment", f"refers back to itself (cycle: segment {trail})")
            return None
        if len(self.chain) >= MAX_SEGMENT_DEPTH:
            self.error(f"{path}.segment", f"segment references are nested too deeply (at most {MAX_SEGMENT_DEPTH})")
            return None
        row = Segment.objects.filter(project_id=self.project_id, pk=segment_id).values_list("rules", "name").first()
        if row is None:
            # Another project's segment reads the same as a missing one: nothing leaks.
            self.error(f"{path}.segment", f"no segment {segment_id} in this project")
            return None
        inner = _Parser(project_id=self.project_id, chain=(*self.chain, segment_id))
        inner._mappings = self._mappings
        child = inner.node(row[0], "rules", 1)
        if inner.errors or child is None:
            cycle = next((m for _, m in inner.errors if "cycle" in m), None)
            detail = cycle or "; ".join(f"{p}: {m}" for p, m in inner.errors[:3]) or "empty rules"
            self.error(f"{path}.segment", f"segment {segment_id} cannot be used: {detail}")
            return None
        return Node("segment", path, (child,), params={"segment_id": segment_id, "member": member, "name": row[1]})

    def _bucket(self, data: dict, path: str, depth: int) -> Node | None:
        self._only(data, ("bucket",), path)
        spec = data["bucket"]
        bpath = f"{path}.bucket"
        if not isinstance(spec, dict):
            self.error(bpath, "must be an object {op, value}")
            return None
        self._only(spec, ("op", "value"), bpath)
        op, value, ok = self._op_value(spec, bpath, "number", ops=BUCKET_OPS, integer=True, bounds=(0, 999))
        return Node("bucket", path, params={"op": op, "value": value}) if ok else None

    # Parts ----------------------------------------------------------------

    def _only(self, data: dict, allowed: tuple[str, ...], path: str) -> None:
        for key in data:
            if key not in allowed:
                self.error(
                    f"{path}.{key}" if isinstance(key, str) else path, f"unknown key; allowed: {_allowed(allowed)}"
                )

    def _json_keys(self, dotted: str, path: str) -> tuple[str, ...]:
        keys = tuple(dotted.split("."))
        if not dotted or any(not k for k in keys):
            self.error(path, "needs a key after each dot (traits.plan, traits.address.city)")
            return ()
        if len(keys) > MAX_JSON_KEYS:
            self.error(path, f"has more than {MAX_JSON_KEYS} keys")
            return ()
        if any("\x00" in k for k in keys) or len(dotted) > 255:
            self.error(path, "must be at most 255 characters, without NUL characters")
            return ()
        return keys

    def _op_value(
        self,
        data: dict,
        path: str,
        kind: str,
        *,
        ops: tuple[str, ...] | None = None,
        date_only: bool = False,
        integer: bool = False,
        bounds: tuple[int, int] | None = None,
    ) -> tuple[str, Any, bool]:
        ops = ops or OPS_BY_TYPE[kind]
        op = data.get("op")
        if op not in ops:
            self.error(f"{path}.op", f"must be one of: {_allowed(ops)}")
            return "", None, False
        vpath = f"{path}.value"
        if op in NO_VALUE_OPS:
            if data.get("value") is not None:
                self.error(vpath, f"must be absent for {op}")
                return op, None, False
            return op, None, True
        if "value" not in data:
            self.error(vpath, "is required")
            return op, None, False
        raw = data["value"]
        one = {
            "text": lambda v, p: self._text(v, p),
            "number": lambda v, p: self._number(v, p, integer=integer, bounds=bounds),
            "bool": lambda v, p: self._bool(v, p),
            "json": lambda v, p: self._scalar(v, p),
            "version": lambda v, p: self._version(v, p),
        }
        if kind == "time":
            return op, self._time_value(op, raw, vpath, date_only=date_only), self._clean(vpath)
        if op in ("in", "not_in"):
            if not isinstance(raw, list) or not raw:
                self.error(vpath, "must be a non-empty list")
                return op, None, False
            if len(raw) > MAX_LIST:
                self.error(vpath, f"has {len(raw)} items; at most {MAX_LIST}")
                return op, None, False
            values = [one[kind](v, f"{vpath}[{i}]") for i, v in enumerate(raw)]
            return op, tuple(values), self._clean(vpath)
        if op == "between":
            check = one["number"] if kind == "json" else one[kind]
            if not isinstance(raw, list) or len(raw) != 2:
                self.error(vpath, "must be a list of two values [low, high]")
                return op, None, False
            low, high = check(raw[0], f"{vpath}[0]"), check(raw[1], f"{vpath}[1]")
            if low is not None and high is not None and low > high:
                self.error(vpath, "low must not be greater than high")
            return op, (low, high), self._clean(vpath)
        if kind == "json" and op in ("lt", "lte", "gt", "gte"):
            return op, self._number(raw, vpath), self._clean(vpath)
        if kind == "json" and op in ("contains", "starts_with"):
            return op, self._text(raw, vpath), self._clean(vpath)
        return op, one[kind](raw, vpath), self._clean(vpath)

    def _clean(self, prefix: str) -> bool:
        return not any(p == prefix or p.startswith(prefix + "[") for p, _ in self.errors)

    def _text(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str):
            self.error(path, "must be a text")
            return None
        if "\x00" in value:
            self.error(path, "must not contain NUL characters")
            return None
        if len(value) > MAX_TEXT:
            self.error(path, f"must be at most {MAX_TEXT} characters")
            return None
        return value

    def _number(
        self, value: Any, path: str, *, integer: bool = False, bounds: tuple[int, int] | None = None
    ) -> int | Decimal | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(path, "must be a number")
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.error(path, "must be a finite number")
            return None
        if integer and value != int(value):
            self.error(path, "must be a whole number")
            return None
        low, high = bounds or (-MAX_NUMBER, MAX_NUMBER)
        if value < low:
            self.error(path, f"must be >= {low}")
            return None
        if value > high:
            self.error(path, f"must be <= {high}")
            return None
        return int(value) if integer or isinstance(value, int) else Decimal(repr(value))

    def _bool(self, value: Any, path: str) -> bool | None:
        if not isinstance(value, bool):
            self.error(path, "must be true or false")
            return None
        return value

    def _scalar(self, value: Any, path: str) -> str | int | Decimal | bool | None:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return self._text(value, path)
        if isinstance(value, int | float):
            return self._number(value, path)
        self.error(path, "must be a text, a number, true or false")
        return None

    def _version(self, value: Any, path: str) -> tuple[int, ...] | None:
        if not isinstance(value, str) or not _VERSION.match(value):
            self.error(path, "must be a version of numbers and dots (2.10.0)")
            return None
        return version_key(value)

    def _time_value(self, op: str, raw: Any, path: str, *, date_only: bool) -> Any:
        if op in ("within_last", "more_than_ago"):
            return self._duration(raw, path)
        if op == "between":
            if not isinstance(raw, list) or len(raw) != 2:
                self.error(path, "must be a list of two dates or times [from, to]")
                return None
            low = self._instant(raw[0], f"{path}[0]", date_only=date_only, end_of_day=False)
            high = self._instant(raw[1], f"{path}[1]", date_only=date_only, end_of_day=True)
            if low is not None and high is not None and low > high:
                self.error(path, "from must not be later than to")
                return None
            return (low, high)
        # before: strictly earlier than the start of the given time or day;
        # after: strictly later than it (a day: later than its end).
        return self._instant(raw, path, date_only=date_only, end_of_day=op == "after")

    def _duration(self, raw: Any, path: str) -> timedelta | None:
        if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in ("days", "hours"):
            self.error(path, 'must be {"days": N} or {"hours": N}')
            return None
        unit, amount = next(iter(raw.items()))
        limit = MAX_DAYS if unit == "days" else MAX_DAYS * 24
        n = self._number(amount, f"{path}.{unit}", integer=True, bounds=(0, limit))
        if n is None:
            return None
        return timedelta(days=n) if unit == "days" else timedelta(hours=n)

    def _instant(self, raw: Any, path: str, *, date_only: bool, end_of_day: bool) -> Any:
        """A date (date_only) or an aware UTC datetime. A date alone given for a
        time means its midnight (UTC), or, as an upper end, the last instant of that day."""
        if not isinstance(raw, str) or "\x00" in raw or len(raw) > 40:
            self.error(path, "must be an ISO date (2026-01-31) or time (2026-01-31T12:00:00+02:00)")
            return None
        try:
            if len(raw) == 10:
                day = date.fromisoformat(raw)
                if date_only:
                    return day
                moment = datetime.combine(day, time.max if end_of_day else time.min, tzinfo=UTC)
                return moment
            moment = datetime.fromisoformat(raw)
            moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        except (ValueError, OverflowError):  # overflow: 9999-12-31T23:00-02:00 is past year 9999 in UTC
            self.error(path, "must be an ISO date (2026-01-31) or time (2026-01-31T12:00:00+02:00)")
            return None
        return moment.date() if date_only else moment

    def _window(self, raw: Any, path: str) -> dict[str, Any] | None:
        if raw == "ever":
            return {"ever": True}
        if isinstance(raw, dict) and set(raw) == {"last_days"}:
            n = self._number(raw["last_days"], f"{path}.last_days", integer=True, bounds=(1, MAX_DAYS))
            return {"last_days": n} if n is not None else None
        if isinstance(raw, dict) and set(raw) == {"between"}:
            value = self._time_value("between", raw["between"], f"{path}.between", date_only=False)
            return {"between": value} if value is not None else None
        self.error(path, 'must be "ever", {"last_days": D} or {"between": [from, to]}')
        return None

    def _count(self, raw: Any, path: str) -> dict[str, Any] | None:
        if not isinstance(raw, dict):
            self.error(path, "must be an object {op, value}")
            return None
        self._only(raw, ("op", "value"), path)
        op, value, ok = self._op_value(raw, path, "number", ops=COUNT_OPS, integer=True, bounds=(0, MAX_COUNT))
        return {"op": op, "value": value} if ok else None

    def _aggregate(self, raw: Any, path: str) -> dict[str, Any] | None:
        if not isinstance(raw, dict):
            self.error(path, "must be an object {fn, property, op, value}")
            return None
        self._only(raw, ("fn", "property", "op", "value"), path)
        ok = True
        fn = raw.get("fn")
        if fn not in AGGREGATE_FNS:
            self.error(f"{path}.fn", f"must be one of: {_allowed(AGGREGATE_FNS)}")
            ok = False
        prop = raw.get("property")
        keys = self._json_keys(prop, f"{path}.property") if isinstance(prop, str) else ()
        if not isinstance(prop, str):
            self.error(f"{path}.property", "must be a text (a property name)")
        op, value, good = self._op_value(raw, path, "number", ops=AGGREGATE_OPS)
        if not (ok and keys and good):
            return None
        return {"fn": fn, "property": prop, "keys": keys, "op": op, "value": value}

    def _event_names(self, name: str) -> tuple[str, ...]:
        """`name` and every source name the project maps onto it."""
        if self._mappings is None:
            from crm.selectors import event_name_mappings

            self._mappings = event_name_mappings(project_id=self.project_id)
        return tuple(sorted({name, *(s for s, c in self._mappings.items() if c == name)}))


_NODE_KEYS = ("all", "any", "not", "profile", "device", "event", "recent_item", "segment", "bucket")


def _keys(data: dict) -> str:
    return ", ".join(repr(k) for k in list(data)[:5])


def version_key(version: str) -> tuple[int, ...]:
    """A version as comparable ints without trailing zero parts ("2.10.0" -> (2, 10));
    the SQL side (compiler) normalises stored versions the same way."""
    parts = [int(p) for p in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


# Labels ------------------------------------------------------------------------

_OP_WORDS = {
    "eq": "is",
    "ne": "is not",
    "in": "is one of",
    "not_in": "is none of",
    "contains": "contains",
    "starts_with": "starts with",
    "exists": "is set",
    "missing": "is not set",
    "lt": "<",
    "lte": "<=",
    "gt": ">",
    "gte": ">=",
    "between": "is between",
    "before": "is before",
    "after": "is after",
    "within_last": "is within the last",
    "more_than_ago": "is more than",
}
_COUNT_WORDS = {
    "eq": "exactly",
    "ne": "other than",
    "lt": "fewer than",
    "lte": "at most",
    "gt": "more than",
    "gte": "at least",
}


def rules_label(node: Node) -> str:
    """A readable description of a whole tree, for the console and the API
    ("all of (country is one of DE, FR; did Product Viewed at least 3 times in the last 7 days)")."""
    if node.kind in ("all", "any"):
        return f"{node.kind} of (" + "; ".join(rules_label(c) for c in node.children) + ")"
    if node.kind == "not":
        return f"not ({rules_label(node.children[0])})"
    p = node.params
    if node.kind == "profile":
        return f"{p['field']} {_op_label(p['op'], p['value'])}"
    if node.kind == "device":
        parts = [
            f"{c['field']} {_op_label(c['op'], c['value'], version=c['type'] == 'version')}" for c in p["conditions"]
        ]
        return "has a device with " + " and ".join(parts)
    if node.kind == "event":
        return _event_label(p)
    if node.kind == "recent_item":
        if "product" in p:
            return f"recently {p['list']} product {p['product']}"
        return f"recently {p['list']} a product in category {p['category']}"
    if node.kind == "segment":
        name = f" ({p['name']})" if p.get("name") else ""
        return f"{'in' if p['member'] else 'not in'} segment {p['segment_id']}{name}"
    if node.kind == "bucket":
        return f"bucket {_op_label(p['op'], p['value'])}"
    return node.kind


def _event_label(p: dict[str, Any]) -> str:
    count = p["count"]
    name = p["name"]
    if count == {"op": "eq", "value": 0}:
        text = f"did not do {name}"
    elif count is None or count == {"op": "gte", "value": 1}:
        text = f"did {name}"
    else:
        n = count["value"]
        text = f"did {name} {_COUNT_WORDS[count['op']]} {n} time{'' if n == 1 else 's'}"
    if p["where"]:
        text += " with " + " and ".join(f"{w['property']} {_op_label(w['op'], w['value'])}" for w in p["where"])
    window = p["window"]
    if "last_days" in window:
        d = window["last_days"]
        text += " in the last day" if d == 1 else f" in the last {d} days"
    elif "between" in window:
        text += f" between {_value_label(window['between'][0])} and {_value_label(window['between'][1])}"
    aggregate = p["aggregate"]
    if aggregate:
        text += f", {aggregate['fn']} of {aggregate['property']} {_op_label(aggregate['op'], aggregate['value'])}"
    for which in ("first", "last"):
        spec = p[which]
        if spec:
            text += f", {which} done {_op_label(spec['op'], spec['value']).removeprefix('is ')}"
    return text


def _op_label(op: str, value: Any, *, version: bool = False) -> str:
    words = _OP_WORDS[op]
    if op in NO_VALUE_OPS:
        return words
    if op == "between":
        return f"{words} {_value_label(value[0], version)} and {_value_label(value[1], version)}"
    if op in ("in", "not_in"):
        return f"{words} " + ", ".join(_value_label(v, version) for v in value)
    if op == "more_than_ago":
        return f"{words} {_value_label(value)} ago"
    return f"{words} {_value_label(value, version)}"


def _value_label(value: Any, version: bool = False) -> str:
    if version and isinstance(value, tuple):
        return ".".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, timedelta):
        if value % timedelta(days=1):
            hours = int(value.total_seconds() // 3600)
            return f"{hours} hour{'' if hours == 1 else 's'}"
        return f"{value.days} day{'' if value.days == 1 else 's'}"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
