"""The Liquid context of a chunk of profiles, built in bulk.

Per profile: `user` (profile fields, traits, first_name ...), `recommendations`
(the serving code's picks for that user with the variant's filters),
`trending`, `product` (a catalog product: the triggering event's product_id),
`event` (triggered campaigns), `unsubscribe_url` (email).

Cost per chunk, not per profile: ONE query reads the chunk's profiles (fields,
traits and the recent items recommendations start from); the project's active
model version and catalog token are read once; the related lists of every
recent item of the chunk are fetched in one call before the first profile
(recommendations.serving.related_lists keeps them per process), and so are the
catalog rows of their candidates (catalog.mirror). Each profile's picks then
come from memory through recommendations_for_state, the serving code's own
picker, so a campaign recommends exactly what the API would. Parts a variant's
templates never mention (no "recommendations" in any field, say) are not built.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from django.db.models import TextField
from django.db.models.functions import Cast

from campaigns.templating import PRODUCT_LOOKUP
from catalog.mirror import NO_CONDITIONS, products_passing
from crm.models import Profile
from delivery.unsubscribe import unsubscribe_url
from recommendations.serving import (
    ServeFilters,
    UserState,
    project_state,
    recommendations_for_state,
    related_lists,
    trending_products_served,
)
from recommendations.serving.picker import recent_sources

RECOMMENDATIONS_MAX = 20
_RECOMMENDATION_KEYS = {
    "limit",
    "category",
    "categories",
    "in_stock",
    "min_price",
    "max_price",
    "properties",
    "exclude",
}
DEFAULT_LIMIT = 3

# Columns of the chunk's one profile query, in this order.
_PROFILE_FIELDS = (
    "id",
    "user_id",
    "traits",
    "email",
    "phone",
    "name",
    "gender",
    "birth_date",
    "locale",
    "country",
    "city",
    "timezone",
    "recent_viewed",
    "recent_purchased",
    "first_seen",
    "last_seen",
)
_JSON_FIELDS = ("traits", "recent_viewed", "recent_purchased")
_JSON_INDEXES = tuple(_PROFILE_FIELDS.index(name) for name in _JSON_FIELDS)


@dataclass(frozen=True)
class RecommendationsConfig:
    """A variant's `recommendations`: how many, and the API's filters."""

    limit: int = DEFAULT_LIMIT
    filters: ServeFilters = ServeFilters()


# The serving code's Served list behind a context's `recommendations` (not a template
# variable): the in-app answer records it as the list shown (recommendation tracking).
# Profiles with the same history share one, so it names the first profile it was picked
# for; a caller recording it per profile (in-app: one profile) must use its own.
SERVED = "_served"


def recommendations_config(raw: Any) -> RecommendationsConfig:
    """Variant.recommendations parsed; ValueError names the bad key
    ({"limit": 3, "category": "", "in_stock": true, "min_price": null,
    "max_price": null, "properties": {}, "exclude": []})."""
    if raw in (None, ""):
        return RecommendationsConfig()
    if not isinstance(raw, dict):
        raise ValueError("recommendations: must be an object")
    unknown = set(raw) - {
        "limit",
        "category",
        "categories",
        "in_stock",
        "min_price",
        "max_price",
        "properties",
        "exclude",
    }
    if unknown:
        raise ValueError(f"recommendations.{sorted(unknown)[0]}: unknown key")
    limit = raw.get("limit", DEFAULT_LIMIT)
    if type(limit) is not int or not 1 <= limit <= RECOMMENDATIONS_MAX:
        raise ValueError(f"recommendations.limit: must be a whole number from 1 to {RECOMMENDATIONS_MAX}")
    categories: list[str] = []
    for key in ("category", "categories"):
        value = raw.get(key)
        if value in (None, "", []):
            continue
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise ValueError(f"recommendations.{key}: must be a category name or a list of them")
        categories.extend(values)
    in_stock = raw.get("in_stock")
    if in_stock is not None and not isinstance(in_stock, bool):
        raise ValueError("recommendations.in_stock: must be true, false or null")
    prices: dict[str, Decimal | None] = {}
    for key in ("min_price", "max_price"):
        value = raw.get(key)
        if value in (None, ""):
            prices[key] = None
            continue
        if isinstance(value, bool):
            raise ValueError(f"recommendations.{key}: must be a number")
        try:
            prices[key] = Decimal(str(value))
        except InvalidOperation:
            raise ValueError(f"recommendations.{key}: must be a number") from None
        if not prices[key].is_finite() or prices[key] < 0:
            raise ValueError(f"recommendations.{key}: must be a number of 0 or more")
    properties = raw.get("properties") or {}
    if not isinstance(properties, dict):
        raise ValueError("recommendations.properties: must be an object of property -> value(s)")
    parsed_properties = []
    for name, value in sorted(properties.items()):
        values = value if isinstance(value, list) else [value]
        if not values or any(isinstance(v, dict | list) for v in values):
            raise ValueError(f"recommendations.properties.{name}: must be a value or a list of values")
        parsed_properties.append((name, tuple(values)))
    exclude = raw.get("exclude") or []
    if not isinstance(exclude, list) or not all(isinstance(v, str) for v in exclude):
        raise ValueError("recommendations.exclude: must be a list of product ids")
    return RecommendationsConfig(
        limit=limit,
        filters=ServeFilters(
            categories=tuple(dict.fromkeys(categories)),
            in_stock=in_stock,
            price_min=prices["min_price"],
            price_max=prices["max_price"],
            properties=tuple(parsed_properties),
            exclude=frozenset(exclude),
        ),
    )


@dataclass(frozen=True)
class Needs:
    """What a variant's templates mention, so the chunk builds only that."""

    recommendations: bool = True
    trending: bool = True
    product: bool = True
    unsubscribe_url: bool = True

    @classmethod
    def of_sources(cls, sources: Iterable[str]) -> Needs:
        text = "\n".join(sources)
        return cls(
            recommendations="recommendations" in text,
            trending="trending" in text,
            product="product" in text,
            unsubscribe_url="unsubscribe_url" in text,
        )


@dataclass(frozen=True)
class ContextSpec:
    """How to build one variant's contexts."""

    recommendations: RecommendationsConfig
    needs: Needs


def template_sources(content: Mapping[str, Any]) -> list[str]:
    """Every template string of a variant's content (nested data included)."""
    out: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(content)
    return out


def context_spec(*, content: Mapping[str, Any], recommendations: Any) -> ContextSpec:
    return ContextSpec(
        recommendations=recommendations_config(recommendations), needs=Needs.of_sources(template_sources(content))
    )


def product_dict(row: tuple) -> dict[str, Any]:
    """A catalog row (catalog.selectors.ROW_FIELDS) as the templates see a product."""
    pid, name, image_url, deeplink, price, rating, categories, in_stock, _active = row
    return {
        "id": pid,
        "product_id": pid,
        "name": name,
        "price": None if price is None else float(price),
        "image_url": image_url,
        "url": deeplink,
        "deeplink": deeplink,
        "category": categories[0] if categories else "",
        "categories": list(categories),
        "rating": rating,
        "in_stock": in_stock,
    }


def user_dict(row: Sequence[Any]) -> dict[str, Any]:
    """A profile row (_PROFILE_FIELDS) as the templates see `user`: the profile's
    fields, its traits under `traits`, and each trait at the top level too
    where no field has its name ({{ user.plan }})."""
    (
        pid,
        user_id,
        traits,
        email,
        phone,
        name,
        gender,
        birth_date,
        locale,
        country,
        city,
        tz,
        _viewed,
        _purchased,
        first_seen,
        last_seen,
    ) = row
    traits = traits if isinstance(traits, dict) else {}
    name = name or str(traits.get("name") or "")
    first = traits.get("firstName") or traits.get("first_name") or (name.split(" ")[0] if name else "")
    last = traits.get("lastName") or traits.get("last_name") or (name.split(" ", 1)[1] if " " in name else "")
    user = dict(traits)
    user.update(
        {
            "id": pid,
            "profile_id": pid,
            "user_id": user_id or "",
            "email": email,
            "phone": phone,
            "name": name,
            "first_name": str(first),
            "last_name": str(last),
            "gender": gender,
            "birth_date": birth_date.isoformat() if birth_date else "",
            "locale": locale,
            "country": country,
            "city": city,
            "timezone": tz,
            "first_seen": first_seen.isoformat() if first_seen else "",
            "last_seen": last_seen.isoformat() if last_seen else "",
            "traits": traits,
        }
    )
    return user


def profiles_rows(*, project_id: int, profile_ids: Sequence[int]) -> dict[int, tuple]:
    """The chunk's one profile query: the project's profiles among `profile_ids`
    (another project's ids are simply absent)."""
    # The JSON columns come as text and are parsed with orjson: Django's JSONField
    # decoding (the standard json module, per value) was a sixth of the context's cost.
    as_text = {f"_{name}": Cast(name, TextField()) for name in _JSON_FIELDS}
    rows = (
        Profile.objects.filter(project_id=project_id, pk__in=list(profile_ids))
        .annotate(**as_text)
        .values_list(*[f"_{name}" if name in _JSON_FIELDS else name for name in _PROFILE_FIELDS])
    )
    out = {}
    for row in rows:
        values = list(row)
        for i in _JSON_INDEXES:
            values[i] = orjson.loads(values[i]) if values[i] is not None else None
        out[values[0]] = tuple(values)
    return out


def _as_list(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def contexts_build(
    *,
    project_id: int,
    channel: str,
    profile_ids: Sequence[int],
    spec_of: Mapping[int, ContextSpec],
    event: Mapping[str, Any] | None = None,
    product_id: str | None = None,
) -> dict[int, dict[str, Any]]:
    """The context of each of `profile_ids` that is a profile of the project
    (missing ones are left out: merged away, or another project's), built with
    `spec_of[profile id]` (its variant's). `product_id` (else the event's
    properties.product_id) names the `product`."""
    rows = profiles_rows(project_id=project_id, profile_ids=profile_ids)
    if not rows:
        return {}
    specs = [spec_of[pid] for pid in rows if pid in spec_of]
    wants_recs = any(s.needs.recommendations for s in specs)
    wants_trending = any(s.needs.trending for s in specs)
    wants_product = any(s.needs.product for s in specs)
    state = project_state(project_id=project_id) if (wants_recs or wants_product) else None
    states: dict[int, UserState] = {}
    if wants_recs and state is not None:
        for pid, row in rows.items():
            states[pid] = UserState(
                profile_id=pid,
                recent_viewed=_as_list(row[12]),
                recent_purchased=_as_list(row[13]),
                model_version_id=state.model_version_id,
                catalog_token=state.catalog_token,
            )
        _warm(project_id=project_id, state=state, states=states.values())

    trending: dict[RecommendationsConfig, list[dict[str, Any]]] = {}
    if wants_trending:
        for s in specs:
            if s.needs.trending and s.recommendations not in trending:
                served = trending_products_served(
                    project_id=project_id, limit=s.recommendations.limit, filters=s.recommendations.filters
                )
                trending[s.recommendations] = [p for p in _products(project_id, state, served.products)]

    product: dict[str, Any] | None = None
    if wants_product:
        wanted = product_id or ((event or {}).get("properties") or {}).get("product_id")
        if wanted:
            found = products_passing(
                project_id=project_id,
                conditions=NO_CONDITIONS,
                product_ids=[str(wanted)],
                token=state.catalog_token if state else None,
            )
            if str(wanted) in found:
                product = product_dict(found[str(wanted)])

    cache: dict[str, dict[str, Any]] = {}
    picked: dict[tuple, list[dict[str, Any]]] = {}
    served_of: dict[tuple, Any] = {}
    lookup = _ProductLookup(project_id=project_id, token=state.catalog_token if state else None, cache=cache)
    out: dict[int, dict[str, Any]] = {}
    for pid, row in rows.items():
        spec = spec_of.get(pid)
        if spec is None:
            continue
        context: dict[str, Any] = {"user": user_dict(row)}
        if spec.needs.recommendations and pid in states:
            user_state = states[pid]
            # The picks depend only on the recent items and the filters: profiles
            # with the same (most often: none, all getting trending) share them.
            key = (tuple(user_state.recent_viewed), tuple(user_state.recent_purchased), spec.recommendations)
            picks = picked.get(key)
            if picks is None:
                served = recommendations_for_state(
                    project_id=project_id,
                    state=user_state,
                    limit=spec.recommendations.limit,
                    filters=spec.recommendations.filters,
                )
                picks = picked[key] = _products(project_id, state, served.products, cache)
                served_of[key] = served
            context["recommendations"] = picks
            context[SERVED] = served_of[key]
        if spec.needs.trending:
            context["trending"] = trending[spec.recommendations]
        if product is not None:
            context["product"] = product
        if spec.needs.product:
            context[PRODUCT_LOOKUP] = lookup
        if event is not None:
            context["event"] = dict(event)
        if channel == "email" and spec.needs.unsubscribe_url:
            context["unsubscribe_url"] = unsubscribe_url(project_id=project_id, profile_id=pid, channel="email")
        out[pid] = context
    return out


class _ProductLookup:
    """The `product` filter's lookup for one chunk: catalog rows from the
    process's mirror at the chunk's token, each product's dict built once."""

    def __init__(self, *, project_id: int, token: int | None, cache: dict[str, dict[str, Any]]) -> None:
        self.project_id, self.token, self.cache = project_id, token, cache
        self.missing: set[str] = set()

    def __call__(self, product_id: str) -> dict[str, Any] | None:
        hit = self.cache.get(product_id)
        if hit is not None or product_id in self.missing:
            return hit
        rows = products_passing(
            project_id=self.project_id, conditions=NO_CONDITIONS, product_ids=[product_id], token=self.token
        )
        if product_id not in rows:
            self.missing.add(product_id)
            return None
        hit = self.cache[product_id] = product_dict(rows[product_id])
        return hit


def _warm(*, project_id: int, state: UserState, states: Iterable[UserState]) -> None:
    """Fetch, for the whole chunk at once, what the per-profile picks will read:
    the related lists of every recent item (one query for those this process
    has not cached) and the catalog rows of their candidates (one query for
    the rows not kept yet). Without it each profile's picks cost a query or two."""
    if state.model_version_id is None:
        return
    sources = {pid for s in states for pid, _ in recent_sources(s)}
    if not sources:
        return
    lists = related_lists(version_id=state.model_version_id, product_ids=sorted(sources))
    candidates = {related for items in lists.values() for related, _ in items} | sources
    if state.catalog_token is not None and candidates:
        products_passing(
            project_id=project_id, conditions=NO_CONDITIONS, product_ids=sorted(candidates), token=state.catalog_token
        )


def _products(
    project_id: int, state: UserState | None, served: Sequence[Any], cache: dict[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Served products as template dicts, with their categories from the catalog
    rows (the serving answer does not carry them); one dict per product per
    chunk, shared by every profile it is recommended to."""
    cache = cache if cache is not None else {}
    missing = [p.product_id for p in served if p.product_id not in cache]
    if missing:
        rows = products_passing(
            project_id=project_id,
            conditions=NO_CONDITIONS,
            product_ids=missing,
            token=state.catalog_token if state else None,
        )
        for pid in missing:
            if pid in rows:
                cache[pid] = product_dict(rows[pid])
    out = []
    for p in served:
        item = cache.get(p.product_id)
        if item is None:  # gone from the catalog since it was picked (a race): as served
            item = {
                "id": p.product_id,
                "product_id": p.product_id,
                "name": p.name,
                "price": p.price,
                "image_url": p.image_url,
                "url": p.deeplink,
                "deeplink": p.deeplink,
                "category": "",
                "categories": [],
                "rating": p.rating,
                "in_stock": None,
            }
        out.append(item)
    return out
