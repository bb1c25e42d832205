"""Rule trees to SQL: one query over a project's profiles (Django Q objects with
EXISTS / aggregate subqueries on events, devices and products), an explanation
of which conditions a profile met, and the profiles whose result time can change.

Every condition compiles to a two-valued expression (true or false, never
NULL): a missing trait, a profile without events or a NULL column makes a
condition false, and `not` of it true. Nullable operands are wrapped in
COALESCE(..., false); plain column lookups rely on Django's negation, which adds
the IS NOT NULL itself. So `{"not": X}` is always the exact complement of X.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.postgres.fields import ArrayField
from django.db import connection
from django.db.models import (
    BooleanField,
    Case,
    CharField,
    DecimalField,
    Exists,
    Expression,
    ExpressionWrapper,
    F,
    Func,
    IntegerField,
    JSONField,
    OuterRef,
    Q,
    Subquery,
    TextField,
    Value,
    When,
)
from django.db.models.fields.json import DataContains
from django.db.models.functions import Coalesce
from django.db.models.lookups import (
    Exact,
    GreaterThan,
    GreaterThanOrEqual,
    IContains,
    In,
    IStartsWith,
    LessThan,
    LessThanOrEqual,
)

from campaigns.segments.buckets import bucket_sql
from campaigns.segments.rules import Node, rules_label, walk
from catalog.models import Product
from crm.models import Device, Event, Profile

__all__ = [
    "SEGMENT_SESSION_SQL",
    "ConditionResult",
    "boundary_q",
    "rules_explain",
    "rules_label",
    "rules_q",
    "segment_session_prepare",
]


# Run before a segment's evaluation, in its transaction. The plans of segment
# queries cost millions (an index probe per profile), far above jit_above_cost,
# yet each row's work is one probe: PostgreSQL's JIT then spends 100-200 ms
# compiling for no gain (bench/segments.py's count: ~15% faster without it).
SEGMENT_SESSION_SQL = "SET LOCAL jit = off"


def segment_session_prepare() -> None:
    """Apply SEGMENT_SESSION_SQL to the current transaction (call inside one)."""
    with connection.cursor() as cursor:
        cursor.execute(SEGMENT_SESSION_SQL)


@dataclass(frozen=True)
class ConditionResult:
    """One condition of a tree, for one profile: its path, a readable label, met or not."""

    path: str
    label: str
    met: bool


def rules_q(node: Node, *, now: datetime) -> Q:
    """The filter over crm.Profile of the profiles that satisfy `node` at `now`;
    the caller scopes it to the project (Profile.objects.filter(project_id=...)).
    Pure: builds the expression, runs no query."""
    if node.kind == "all":
        q = Q()
        for child in node.children:
            q &= rules_q(child, now=now)
        return q
    if node.kind == "any":
        q = rules_q(node.children[0], now=now)
        for child in node.children[1:]:
            q |= rules_q(child, now=now)
        return q
    if node.kind == "not":
        return ~rules_q(node.children[0], now=now)
    if node.kind == "segment":
        # The referenced segment's rules inline: always current, and still one query.
        inner = rules_q(node.children[0], now=now)
        return inner if node.params["member"] else ~inner
    return _LEAVES[node.kind](node.params, now)


def rules_explain(
    node: Node, *, project_id: int, profile_ids: list[int], now: datetime
) -> dict[int, list[ConditionResult]]:
    """For each of `profile_ids` in the project, every condition of `node` (groups
    and leaves, depth first; a referenced segment as one condition) and whether
    the profile meets it, in one query. Profiles of another project, or gone, are absent."""
    nodes = list(_explained(node))
    annotations = {
        f"c{i}": ExpressionWrapper(rules_q(n, now=now), output_field=BooleanField()) for i, n in enumerate(nodes)
    }
    labels = [rules_label(n) for n in nodes]
    rows = Profile.objects.filter(project_id=project_id, pk__in=list(profile_ids)).annotate(**annotations)
    result: dict[int, list[ConditionResult]] = {}
    for row in rows.values("pk", *annotations):
        result[row["pk"]] = [
            ConditionResult(path=n.path, label=labels[i], met=bool(row[f"c{i}"])) for i, n in enumerate(nodes)
        ]
    return result


def _explained(node: Node) -> Iterator[Node]:
    yield node
    if node.is_group:
        for child in node.children:
            yield from _explained(child)


def boundary_q(node: Node, *, since: datetime, now: datetime) -> Q | None:
    """The profiles whose result for `node` may differ between `since` and `now`
    only because time passed (an event leaving a "last 7 days" window, a birthday);
    None when time cannot change the result. A superset: property filters are
    ignored, and every edge crossed between the two instants counts."""
    qs: list[Q] = []
    for n in walk(node):
        p = n.params
        if n.kind == "profile":
            qs.extend(_profile_boundaries(p, since, now))
        elif n.kind == "event":
            spans = []
            if "last_days" in p["window"]:
                spans.append(timedelta(days=p["window"]["last_days"]))
            for which in ("first", "last"):
                if p[which] is not None and p[which]["op"] in ("within_last", "more_than_ago"):
                    spans.append(p[which]["value"])
            for span in spans:
                # An event at timestamp t is inside "t >= now - span" at `since`
                # and outside at `now` exactly when since - span <= t < now - span.
                events = Event.objects.filter(
                    profile_id=OuterRef("pk"),
                    project_id=p["project_id"],
                    name__in=p["names"],
                    timestamp__gte=since - span,
                    timestamp__lte=now - span,
                )
                qs.append(Q(Exists(events)))
    if not qs:
        return None
    q = qs[0]
    for more in qs[1:]:
        q |= more
    return q


def _profile_boundaries(p: dict[str, Any], since: datetime, now: datetime) -> list[Q]:
    column, op, value = p["field"], p["op"], p["value"]
    if column == "age":
        out = []
        for years in _age_cutoff_years(op, value):
            # The condition reads birth_date against cutoff(today, years): it can
            # change only for the birth dates the cutoff moved over.
            low, high = _age_cutoff(_day(since), years), _age_cutoff(_day(now), years)
            out.append(Q(birth_date__gt=low, birth_date__lte=high))
        return out
    if op not in ("within_last", "more_than_ago"):
        return []
    if column == "birth_date":
        return [Q(birth_date__gte=_day(since - value), birth_date__lte=_day(now - value))]
    return [Q(**{f"{column}__gte": since - value, f"{column}__lte": now - value})]


def _age_cutoff_years(op: str, value: Any) -> list[int]:
    if op in ("exists", "missing"):
        return []
    values = value if isinstance(value, tuple) else (value,)
    return sorted({v for v in values} | {v + 1 for v in values})


# Leaves ------------------------------------------------------------------------


def _two_valued(q: Q) -> Q:
    """`q` as an expression that is false where SQL would say NULL."""
    return Q(Coalesce(ExpressionWrapper(q, output_field=BooleanField()), Value(False)))


def _cmp(expr: Expression, op: str, value: Any) -> Q:
    """`expr <op> value` for the ordered operators (numbers, times, versions)."""
    if op == "eq":
        return Q(Exact(expr, value))
    if op == "ne":
        return ~Q(Exact(expr, value))
    if op == "in":
        return Q(In(expr, list(value)))
    if op == "not_in":
        return ~Q(In(expr, list(value)))
    if op in ("lt", "before"):
        return Q(LessThan(expr, value))
    if op == "lte":
        return Q(LessThanOrEqual(expr, value))
    if op in ("gt", "after"):
        return Q(GreaterThan(expr, value))
    if op == "gte":
        return Q(GreaterThanOrEqual(expr, value))
    if op == "between":
        return Q(GreaterThanOrEqual(expr, value[0])) & Q(LessThanOrEqual(expr, value[1]))
    raise ValueError(f"operator {op} is not an ordered comparison")


def _column_q(column: str, kind: str, op: str, value: Any, now: datetime) -> Q:
    """A condition on a plain column of the queried model (Profile or Device).
    Django's negation of a field lookup adds `IS NOT NULL` for nullable columns,
    so ne / not_in include the missing values (the complement of eq / in)."""
    empty = Q(**{column: ""}) | Q(**{f"{column}__isnull": True})
    if op == "exists":
        return Q(**{f"{column}__isnull": False}) if kind in ("time", "bool") else ~empty
    if op == "missing":
        return Q(**{f"{column}__isnull": True}) if kind in ("time", "bool") else empty
    if op == "eq":
        return Q(**{column: value})
    if op == "ne":
        return ~Q(**{column: value})
    if op == "in":
        return Q(**{f"{column}__in": list(value)})
    if op == "not_in":
        return ~Q(**{f"{column}__in": list(value)})
    if op == "contains":
        return Q(**{f"{column}__icontains": value})
    if op == "starts_with":
        return Q(**{f"{column}__istartswith": value})
    if kind == "time":
        return _time_q(column, op, value, now)
    raise ValueError(f"operator {op} on {column}")


def _time_q(column: str, op: str, value: Any, now: datetime) -> Q:
    dated = column == "birth_date"
    if op == "within_last":
        return Q(**{f"{column}__gte": _day(now - value) if dated else now - value})
    if op == "more_than_ago":
        return Q(**{f"{column}__lt": _day(now - value) if dated else now - value})
    if op == "before":
        return Q(**{f"{column}__lt": value})
    if op == "after":
        return Q(**{f"{column}__gt": value})
    if op == "between":
        return Q(**{f"{column}__gte": value[0], f"{column}__lte": value[1]})
    raise ValueError(f"operator {op} on {column}")


class _Numeric(Func):
    template = "(%(expressions)s)::numeric"
    output_field = DecimalField()


class _JsonAt(Func):
    # column #> '{a,b}': one operator for one key or many, so a key of digits is an
    # object key or an array position alike (Django's KeyTransform turns a single
    # digit key into `-> 0`, which reads arrays only).
    arg_joiner = " #> "
    template = "(%(expressions)s::text[])"
    output_field = JSONField()


class _JsonTextAt(_JsonAt):
    arg_joiner = " #>> "
    output_field = TextField()


def _json_path(column: str, keys: tuple[str, ...]) -> tuple[Expression, Expression, Expression, Expression]:
    """The JSON value at `keys` of `column`, the same as text, its jsonb_typeof,
    and its number (NULL unless it is a JSON number: CASE evaluates the type check
    first, so a text never reaches the cast and a rule never raises on odd data)."""
    path = Value(list(keys), output_field=ArrayField(TextField()))
    value = _JsonAt(F(column), path)
    text = _JsonTextAt(F(column), path)
    typeof = Func(value, function="jsonb_typeof", output_field=CharField())
    number = Case(When(Exact(typeof, "number"), then=_Numeric(text)), default=None, output_field=DecimalField())
    return value, text, typeof, number


def _json_q(column: str, keys: tuple[str, ...], op: str, value: Any) -> Q:
    """A condition on a JSON value of unknown type (a trait, an event property).
    eq / in compare JSON values (the text "5" is not the number 5); ordered
    operators compare numbers only; contains / starts_with texts only."""
    node, text, typeof, number = _json_path(column, keys)
    if op in ("exists", "missing"):
        # A JSON null counts as missing.
        present = _two_valued(Q(In(typeof, ["string", "number", "boolean", "object", "array"])))
        return present if op == "exists" else ~present
    if op in ("eq", "ne", "in", "not_in"):
        values = value if op in ("in", "not_in") else (value,)
        matched = _two_valued(Q(In(node, [Value(_json_scalar(v), output_field=JSONField()) for v in values])))
        return matched if op in ("eq", "in") else ~matched
    if op in ("contains", "starts_with"):
        lookup = IContains if op == "contains" else IStartsWith
        return _two_valued(Q(Exact(typeof, "string")) & Q(lookup(text, value)))
    return _two_valued(_cmp(number, op, value))


def _json_scalar(value: Any) -> Any:
    # A Decimal is not JSON-serialisable; its float is exact enough for equality
    # of the numbers people type (jsonb compares 5 and 5.0 as equal).
    return float(value) if isinstance(value, Decimal) else value


def _profile_q(p: dict[str, Any], now: datetime) -> Q:
    if p["type"] == "json":
        return _json_q("traits", p["keys"], p["op"], p["value"])
    if p["field"] == "age":
        return _age_q(p["op"], p["value"], _day(now))
    return _column_q(p["field"], p["type"], p["op"], p["value"], now)


def _day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def age_on(birth_date: date, today: date) -> int:
    """Whole years from `birth_date` to `today` (a 29 February birthday comes on
    1 March in other years); the SQL of age conditions agrees with it."""
    return today.year - birth_date.year - ((today.month, today.day) < (birth_date.month, birth_date.day))


def _age_cutoff(today: date, years: int) -> date:
    """The latest birth date of a person who is at least `years` old `today`."""
    try:
        return today.replace(year=today.year - years)
    except ValueError:  # 29 February today, and that year has none
        return date(today.year - years, 2, 28)


def _age_q(op: str, value: Any, today: date) -> Q:
    """Age as a range of birth dates (no per-row date arithmetic in SQL):
    age >= N exactly when birth_date <= cutoff(N)."""
    if op == "exists":
        return Q(birth_date__isnull=False)
    if op == "missing":
        return Q(birth_date__isnull=True)

    def at_least(n: int) -> Q:
        return Q(birth_date__lte=_age_cutoff(today, n))

    def below(n: int) -> Q:
        return Q(birth_date__gt=_age_cutoff(today, n))

    def equal(n: int) -> Q:
        return Q(birth_date__gt=_age_cutoff(today, n + 1), birth_date__lte=_age_cutoff(today, n))

    if op == "eq":
        return equal(value)
    if op == "ne":
        return ~equal(value)
    if op in ("in", "not_in"):
        q = equal(value[0])
        for v in value[1:]:
            q |= equal(v)
        return q if op == "in" else ~q
    if op == "lt":
        return below(value)
    if op == "lte":
        return below(value + 1)
    if op == "gt":
        return at_least(value + 1)
    if op == "gte":
        return at_least(value)
    if op == "between":
        return Q(birth_date__gt=_age_cutoff(today, value[1] + 1), birth_date__lte=_age_cutoff(today, value[0]))
    raise ValueError(f"operator {op} on age")


class _Version(Func):
    # The numeric prefix of a stored version ("2.10.0-beta" -> "2.10.0"), without
    # trailing zero parts (as rules.version_key), as int[]: arrays compare part by
    # part, so 2.10 > 2.9.1. A version without a numeric start is NULL and matches
    # no comparison; parts are at most 9 digits, so the cast cannot overflow.
    template = (
        "string_to_array(regexp_replace(substring(%(expressions)s from '^[0-9]{1,9}(?:[.][0-9]{1,9})*'),"
        " '([.]0+)+$', ''), '.')::int[]"
    )
    output_field = ArrayField(IntegerField())


def _device_q(p: dict[str, Any], now: datetime) -> Q:
    devices = Device.objects.filter(profile_id=OuterRef("pk"))
    for c in p["conditions"]:
        if c["type"] == "version" and c["op"] not in ("exists", "missing"):
            version = _Version(F(c["field"]))
            array = ArrayField(IntegerField())
            if c["op"] == "between":
                value: Any = tuple(Value(list(v), output_field=array) for v in c["value"])
            else:
                value = Value(list(c["value"]), output_field=array)
            devices = devices.filter(_cmp(version, c["op"], value))
        else:
            kind = "text" if c["type"] in ("version", "presence") else c["type"]
            devices = devices.filter(_column_q(c["field"], kind, c["op"], c["value"], now))
    return Q(Exists(devices))


def _event_q(p: dict[str, Any], now: datetime) -> Q:
    # Correlated on the profile, plus the project and the names: PostgreSQL probes
    # event_profile_time_names (profile_id, timestamp INCLUDE project_id, name) per
    # profile, from the index alone, or turns EXISTS into a
    # (anti-)semi-join fed by an index-only range scan of event_project_name_time_pid
    # (project_id, name, timestamp INCLUDE profile_id). The project is redundant for
    # correctness (a profile's events are its project's) but without it that index is
    # only usable by skip scan.
    events = Event.objects.filter(profile_id=OuterRef("pk"), project_id=p["project_id"], name__in=p["names"])
    window = p["window"]
    if "last_days" in window:
        events = events.filter(timestamp__gte=now - timedelta(days=window["last_days"]))
    elif "between" in window:
        events = events.filter(timestamp__gte=window["between"][0], timestamp__lte=window["between"][1])
    for w in p["where"]:
        events = events.filter(_json_q("properties", w["keys"], w["op"], w["value"]))
    events = events.order_by()
    q = Q()
    count = p["count"]
    if count is not None:
        q &= _count_q(events, count["op"], count["value"])
    aggregate = p["aggregate"]
    if aggregate is not None:
        number = _json_path("properties", aggregate["keys"])[3]
        fn = aggregate["fn"].upper()
        total: Expression = Subquery(
            events.annotate(v=Func(number, function=fn, output_field=DecimalField())).values("v"),
            output_field=DecimalField(),
        )
        if fn == "SUM":
            # The sum over no events is 0; avg / min / max over none have no value (not met).
            total = Coalesce(total, Value(Decimal(0)), output_field=DecimalField())
        q &= _two_valued(_cmp(total, aggregate["op"], aggregate["value"]))
    for which in ("first", "last"):
        spec = p[which]
        if spec is not None:
            q &= _first_last_q(events, which, spec["op"], spec["value"], now)
    return q


def _at_least(events: Any, n: int) -> Q:
    """The profiles with at least `n` of `events`. EXISTS, with OFFSET n-1 beyond one
    event: a probe reads at most n index entries, where COUNT would read them all;
    plain EXISTS (n = 1) can become a semi-join."""
    if n <= 0:
        return Q(pk__isnull=False)  # always true, and still an expression `not` can negate
    return Q(Exists(events if n == 1 else events[n - 1 : n]))


def _count_q(events: Any, op: str, n: int) -> Q:
    """count(events) <op> n, by "at least" probes only. NOT EXISTS includes the
    profiles with no such event at all: no NULL from a missing aggregate row."""
    if op == "gte":
        return _at_least(events, n)
    if op == "gt":
        return _at_least(events, n + 1)
    if op == "lt":
        return ~_at_least(events, n)
    if op == "lte":
        return ~_at_least(events, n + 1)
    exactly = ~_at_least(events, 1) if n == 0 else _at_least(events, n) & ~_at_least(events, n + 1)
    if op == "eq":
        return exactly
    if op == "ne":
        return ~exactly
    raise ValueError(f"count operator {op}")


def _first_last_q(events: Any, which: str, op: str, value: Any, now: datetime) -> Q:
    """min(timestamp) (first) or max(timestamp) (last) of `events` compared with a time
    operator, as EXISTS / NOT EXISTS on timestamp ranges rather than an aggregate
    per profile: "last done more than 30 days ago" = did it, and not since now-30d.
    A profile that never did it has no first or last time: not met."""
    if op == "within_last":
        op, value = "gte", now - value
    elif op == "more_than_ago":
        op, value = "before", now - value
    elif op == "after":
        op = "gt"
    some = Q(Exists(events))

    def any_with(**bounds: datetime) -> Q:
        return Q(Exists(events.filter(**bounds)))

    if which == "last":
        if op == "gt":
            return any_with(timestamp__gt=value)
        if op == "gte":
            return any_with(timestamp__gte=value)
        if op == "before":
            return some & ~any_with(timestamp__gte=value)
        if op == "between":
            return any_with(timestamp__gte=value[0], timestamp__lte=value[1]) & ~any_with(timestamp__gt=value[1])
    else:
        if op == "before":
            return any_with(timestamp__lt=value)
        if op == "gt":
            return some & ~any_with(timestamp__lte=value)
        if op == "gte":
            return some & ~any_with(timestamp__lt=value)
        if op == "between":
            return any_with(timestamp__gte=value[0], timestamp__lte=value[1]) & ~any_with(timestamp__lt=value[0])
    raise ValueError(f"{which} operator {op}")


def _recent_item_q(p: dict[str, Any], now: datetime) -> Q:
    column = f"recent_{p['list']}"
    if "product" in p:
        # JSON containment of a one-item array: recent_viewed @> '["SKU1"]'.
        return Q(**{f"{column}__contains": [p["product"]]})
    # A product of the project's catalog in that category (any level of its path,
    # GIN index product_categories_gin) whose id is among the profile's recent items.
    products = Product.objects.filter(project_id=OuterRef("project_id"), categories__contains=[p["category"]]).filter(
        DataContains(OuterRef(column), Func(F("product_id"), function="jsonb_build_array", output_field=JSONField()))
    )
    return Q(Exists(products.order_by()))


def _bucket_q(p: dict[str, Any], now: datetime) -> Q:
    return _cmp(bucket_sql(), p["op"], p["value"])


_LEAVES = {
    "profile": _profile_q,
    "device": _device_q,
    "event": _event_q,
    "recent_item": _recent_item_q,
    "bucket": _bucket_q,
}
