"""What a recommendation request reads from the database: one query, for the
profile's recent items, the project's active model version and its catalog
token (catalog.models.CatalogState)."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
from django.conf import settings
from django.db import connection


@dataclass
class UserState:
    profile_id: int | None
    recent_viewed: list[str] = field(default_factory=list)
    recent_purchased: list[str] = field(default_factory=list)
    model_version_id: int | None = None
    # None: the project never had a product written (or the row is missing);
    # catalog rows are then read from the database.
    catalog_token: int | None = None


# Raw SQL over other apps' tables, kept here rather than behind their selectors
# on purpose: crm_profile (crm's: id and recent items by the unique (project_id,
# user_id) index) and catalog_catalogstate (catalog's: the token by project_id)
# are read with this app's recommendations_modelversion in ONE statement. One
# round trip per warm request is what serving was tuned to (docs/benchmarks.md,
# "Recommendation serving": a second round trip is as long as the query itself),
# and the ORM cannot fetch a row and unrelated scalars together.
_USER_STATE_SQL = (
    "SELECT (SELECT mv.id FROM recommendations_modelversion mv"
    "        WHERE mv.project_id = {project} AND mv.status = 'active'),"
    "       (SELECT cs.token FROM catalog_catalogstate cs WHERE cs.project_id = {project}),"
    "       p.id, p.recent_viewed, p.recent_purchased "
    "FROM (SELECT 1 AS one) AS x "
    "LEFT JOIN crm_profile p ON p.project_id = {project} AND p.user_id = {user}"
)
_USER_STATE_PREPARE = "PREPARE recs_user_state (bigint, text) AS " + _USER_STATE_SQL.format(project="$1", user="$2")
_USER_STATE_PLAIN = _USER_STATE_SQL.format(project="%(project)s", user="%(user)s")


def user_state(*, project_id: int, user_id: str | None) -> UserState:
    """The profile's recent items, the project's active version and its catalog
    token, in one round trip. An unknown user has no profile.

    The statement is prepared once per connection: planning it cost PostgreSQL
    more than running it. DB_PREPARED_STATEMENTS=0 (behind PgBouncer in
    transaction mode, where the next transaction may run on another server
    connection) sends it plain."""
    with connection.cursor() as cursor:
        if settings.DB_PREPARED_STATEMENTS:
            raw = connection.connection
            # Compared by identity with a reference kept here, so a new connection
            # (after a close or a reconnect) is always prepared again.
            if getattr(connection, "_recs_user_state_prepared_on", None) is not raw:
                cursor.execute(_USER_STATE_PREPARE)
                connection._recs_user_state_prepared_on = raw
            cursor.execute("EXECUTE recs_user_state (%s, %s)", [project_id, user_id or ""])
        else:
            cursor.execute(_USER_STATE_PLAIN, {"project": project_id, "user": user_id or ""})
        version_id, token, profile_id, viewed, purchased = cursor.fetchone()
    return UserState(
        profile_id=profile_id,
        recent_viewed=_json_list(viewed),
        recent_purchased=_json_list(purchased),
        model_version_id=version_id,
        catalog_token=token,
    )


def project_state(*, project_id: int) -> UserState:
    """The project's active version and catalog token (no user)."""
    return user_state(project_id=project_id, user_id=None)


def _json_list(value: str | None) -> list[str]:
    # Raw cursors hand JSON back as text (Django turns psycopg2's jsonb parsing
    # off); None when the user has no profile.
    if value is None:
        return []
    return [str(v) for v in orjson.loads(value)]
