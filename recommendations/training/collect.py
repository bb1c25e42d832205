"""Stage 1: interactions from the data store to compressed files in storage.

Interactions are `Product Viewed`, `Product Added` and each product of an
`Order Completed` (crm.vocabulary), and the project's own event names mapped
onto them (crm.selectors.event_name_mappings). The collector walks the events table
in primary-key ranges of RECS_COLLECT_BATCH ids, each range one short query, so it
holds no long transaction or cursor and never has more than one batch in memory;
ingest workers keep writing meanwhile. Each range is one `COPY (SELECT ...) TO
STDOUT` whose CSV goes, gzip'd, straight to storage: the JSON properties are
unpacked by the server, not in Python.

A chunk file holds rows `event_id,profile_id,epoch_seconds,kind,product_id`
(kind 1 view, 2 add-to-cart, 3 purchase), under recs/<project>/<version>/data/.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.db.models import Count, Max, Min
from django.db.models.functions import TruncDay

from crm.models import Event
from crm.selectors import event_name_mappings
from crm.vocabulary import INTERACTION_KINDS, PURCHASE, stored_names


def interaction_kinds(*, project_id: int) -> dict[str, int]:
    """Each stored event name that is an interaction in this project, with its
    kind (1 view, 2 add to cart, 3 purchase): the canonical names and the
    project's own names mapped onto them."""
    names = stored_names(INTERACTION_KINDS, event_name_mappings(project_id=project_id))
    return {name: INTERACTION_KINDS[meaning] for name, meaning in names.items()}


@dataclass
class Collected:
    paths: list[str] = field(default_factory=list)
    rows: int = 0
    data_from: datetime | None = None
    data_to: datetime | None = None
    last_event_id: int = 0


def training_window(*, project_id: int, min_events: int, now: datetime) -> datetime | None:
    """The start of the shortest window ending `now` (in whole days back) that holds
    at least `min_events` interaction events, or None for all history.

    One grouped count over the (project, name, timestamp) index gives events per
    day; the window then widens back day by day in Python.
    """
    per_day = (
        Event.objects.filter(
            project_id=project_id, name__in=list(interaction_kinds(project_id=project_id)), timestamp__lte=now
        )
        .annotate(day=TruncDay("timestamp"))
        .values("day")
        .annotate(n=Count("id"))
        .order_by("-day")
    )
    total = 0
    for row in per_day:
        total += row["n"]
        if total >= min_events:
            return row["day"]
    return None


def _chunk_path(folder: str, number: int) -> str:
    return f"{folder}/data/part-{number:05d}.csv.gz"


def _save(path: str, payload: bytes) -> str:
    # A retried run rewrites its own chunk instead of getting a renamed copy.
    if default_storage.exists(path):
        default_storage.delete(path)
    return default_storage.save(path, ContentFile(gzip.compress(payload, compresslevel=3)))


_PG_SQL = """
COPY (
  SELECT id, profile_id, ts, kind, pid FROM (
    SELECT e.id, e.profile_id, extract(epoch FROM e.timestamp)::float8 AS ts,
      CASE e.name {kind_cases} END AS kind,
      CASE WHEN e.name IN ({purchases}) THEN p.value->>'product_id'
           ELSE e.properties->>'product_id' END AS pid
    FROM crm_event e
    LEFT JOIN LATERAL jsonb_array_elements(
      CASE WHEN e.name IN ({purchases}) AND jsonb_typeof(e.properties->'products') = 'array'
           THEN e.properties->'products' ELSE '[]'::jsonb END) p ON true
    WHERE e.project_id + 0 = {project} AND e.id > {lo} AND e.id <= {hi}
      AND e.name IN ({names})
      AND e.timestamp >= '{since}' AND e.timestamp <= '{until}' {profiles}
  ) x WHERE pid IS NOT NULL AND pid <> ''
) TO STDOUT WITH (FORMAT csv)
"""


def _range_copy(
    *,
    project_id: int,
    lo: int,
    hi: int,
    since: datetime,
    until: datetime,
    profiles: Sequence[int] | None,
    kinds: dict[str, int],
) -> bytes:
    # Every value is an int or a datetime we made, formatted; the event names
    # (a project's own, from its mappings) go in as quoted literals (COPY takes
    # no parameters).
    # `project_id + 0` keeps the planner on the primary key's range scan: with the
    # (project, name, timestamp) index it would read the project's every event for
    # each batch (seen with stale statistics after a bulk load: 5 minutes a batch).
    profile_sql = ""
    if profiles is not None:
        profile_sql = "AND e.profile_id = ANY(ARRAY[" + ",".join(str(int(p)) for p in profiles) + "]::bigint[])"
    with connection.cursor() as cursor:

        def quoted(name: str) -> str:
            return cursor.mogrify("%s", [name]).decode()

        names = sorted(kinds)
        sql = _PG_SQL.format(
            project=int(project_id), lo=int(lo), hi=int(hi), since=since.isoformat(), until=until.isoformat(),
            profiles=profile_sql, names=", ".join(quoted(n) for n in names),
            kind_cases=" ".join(f"WHEN {quoted(n)} THEN {int(kinds[n])}" for n in names),
            purchases=", ".join(quoted(n) for n in names if kinds[n] == PURCHASE),
        )  # fmt: skip
        buffer = io.BytesIO()
        cursor.cursor.copy_expert(sql, buffer)
    return buffer.getvalue()


def collect_interactions(
    *,
    project_id: int,
    folder: str,
    since: datetime | None,
    until: datetime,
    after_event_id: int = 0,
    profiles: Sequence[int] | None = None,
    batch_ids: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Collected:
    """Write the interactions of events with id in (after_event_id, max id now] and
    time in [since, until] to gzip'd CSV chunks under `folder`. `profiles` narrows
    to those profiles (online updates read the histories of active users only)."""
    batch_ids = batch_ids or settings.RECS_COLLECT_BATCH
    since = since or datetime(1970, 1, 1, tzinfo=until.tzinfo)
    bounds = Event.objects.filter(project_id=project_id, pk__gt=after_event_id).aggregate(lo=Min("id"), hi=Max("id"))
    result = Collected(data_from=since, data_to=until, last_event_id=after_event_id)
    if bounds["lo"] is None:
        return result
    result.last_event_id = bounds["hi"]
    kinds = interaction_kinds(project_id=project_id)
    lo = bounds["lo"] - 1
    number = 0
    while lo < bounds["hi"]:
        hi = min(lo + batch_ids, bounds["hi"])
        payload = _range_copy(
            project_id=project_id, lo=lo, hi=hi, since=since, until=until, profiles=profiles, kinds=kinds
        )
        if payload:
            result.paths.append(_save(_chunk_path(folder, number), payload))
            result.rows += payload.count(b"\n")
            number += 1
        if on_progress is not None:
            on_progress(hi - bounds["lo"] + 1, bounds["hi"] - bounds["lo"] + 1)
        lo = hi
    return result
