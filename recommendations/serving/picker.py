"""How an answer is built: a user's next recommendations, similar products, trending.

Order of what is served, each tier sorted by (score desc, product id) so the
answer is deterministic, never a product twice, never an excluded one:
1. related products of the user's recent items (newest weighted most);
2. trending in the requested categories (or, with none requested, in the
   categories of the products picked so far);
3. overall trending;
4. the rest of the catalog passing the filters (best rated first), so a request
   returns `limit` products whenever the catalog has that many.

Candidates are checked against the catalog as it is now (catalog.mirror), with
the request's filters.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from django.conf import settings

from catalog.mirror import NO_CONDITIONS, products_best_rated, products_passing
from catalog.selectors import ProductFilter
from recommendations.serving.lists import related_lists, trending_list
from recommendations.serving.user_state import UserState, project_state, user_state


@dataclass(frozen=True)
class ServeFilters(ProductFilter):
    """The request's catalog filters (ProductFilter: categories, stock, price,
    properties; see catalog.selectors.property_filter_values for the values a
    property may equal), and products not to name."""

    exclude: frozenset[str] = frozenset()


class ServedProduct(NamedTuple):
    """One product of an answer. A NamedTuple: ten are built per request, and a
    frozen dataclass costs several times more to build."""

    product_id: str
    name: str
    image_url: str
    deeplink: str
    price: float | None
    rating: float | None
    score: float
    because_of: str | None
    reason: str  # related | trending_category | trending | catalog

    def as_dict(self) -> dict[str, Any]:
        return {
            "product_id": self.product_id,
            "name": self.name,
            "image_url": self.image_url,
            "deeplink": self.deeplink,
            "price": self.price,
            "rating": self.rating,
            "score": self.score,
            "because_of": self.because_of,
            "reason": self.reason,
        }


@dataclass
class Served:
    recommendation_id: str
    products: list[ServedProduct]
    profile_id: int | None = None
    model_version_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"recommendation_id": self.recommendation_id, "products": [p.as_dict() for p in self.products]}


def _served(row: tuple, score: float, because_of: str | None, reason: str) -> ServedProduct:
    """A catalog row (catalog.selectors.ROW_FIELDS) as a product of the answer."""
    price = row[4]
    return ServedProduct(
        product_id=row[0],
        name=row[1],
        image_url=row[2],
        deeplink=row[3],
        price=None if price is None else float(price),
        rating=row[5],
        score=round(float(score), 6),
        because_of=because_of,
        reason=reason,
    )


def new_recommendation_id() -> str:
    return secrets.token_hex(10)


def _rank(scores: dict[str, float]) -> list[str]:
    return sorted(scores, key=lambda pid: (-scores[pid], pid))


class _Picker:
    """Collects products tier by tier until `limit`, never twice, never excluded."""

    def __init__(
        self, *, project_id: int, filters: ServeFilters, limit: int, skip: set[str], catalog_token: int | None
    ) -> None:
        self.project_id, self.filters, self.limit = project_id, filters, limit
        self.catalog_token = catalog_token
        self.skip = skip
        self.picked: list[ServedProduct] = []
        self.categories_seen: list[str] = []

    @property
    def full(self) -> bool:
        return len(self.picked) >= self.limit

    def offer(self, ranked: Sequence[tuple[str, float, str | None]], reason: str) -> None:
        """`ranked`: (product_id, score, because_of), best first."""
        if self.full:
            return
        skip, picked, limit, seen = self.skip, self.picked, self.limit, self.categories_seen
        fresh = [item for item in ranked if item[0] not in skip]
        # Ask the catalog for a few more than needed: some will fail the filters.
        # From the process's rows a candidate costs nothing unless it is a miss
        # (a query), so fewer are asked for at a time there.
        need = self.limit - len(self.picked)
        window = need * 2 + 4 if self.catalog_token is not None else need * 3 + 20
        for start in range(0, len(fresh), window):
            chunk = fresh[start : start + window]
            rows = products_passing(
                project_id=self.project_id,
                conditions=self.filters,
                product_ids=[c[0] for c in chunk],
                token=self.catalog_token,
            )
            for pid, score, because in chunk:
                row = rows.get(pid)
                if row is None or pid in skip:
                    continue
                skip.add(pid)
                picked.append(_served(row, score, because, reason))
                for category in row[6] or ():
                    if category not in seen:
                        seen.append(category)
                if len(picked) >= limit:
                    return

    def fill_from_catalog(self) -> None:
        while not self.full:
            need = self.limit - len(self.picked)
            rows = products_best_rated(project_id=self.project_id, conditions=self.filters, limit=need + len(self.skip))
            added = 0
            for pid, row in rows.items():
                if pid in self.skip:
                    continue
                self.skip.add(pid)
                self.picked.append(_served(row, 0.0, None, "catalog"))
                added += 1
                if self.full:
                    return
            if added == 0:
                return  # the catalog has no more products passing the filters


def _trending_tiers(picker: _Picker, *, version_id: int | None, categories: Sequence[str]) -> None:
    if version_id is None or picker.full:
        return
    if categories:
        scores: dict[str, float] = {}
        for category in categories:
            for pid, score in trending_list(version_id=version_id, category=category):
                scores[pid] = max(scores.get(pid, 0.0), score)
        picker.offer([(pid, scores[pid], None) for pid in _rank(scores)], "trending_category")
    picker.offer([(pid, score, None) for pid, score in trending_list(version_id=version_id)], "trending")


def recent_sources(state: UserState) -> list[tuple[str, float]]:
    """(product id, weight) of the items the user's recommendations come from: the
    newest RECS_SERVE_RECENT views, then purchases not among them, each older
    item RECS_SERVE_DECAY times less important than the one before."""
    recent = list(dict.fromkeys([*state.recent_viewed, *state.recent_purchased]))[: settings.RECS_SERVE_RECENT]
    decay = settings.RECS_SERVE_DECAY
    return [(pid, decay**age) for age, pid in enumerate(recent)]


def excluded_for(state: UserState) -> set[str]:
    """What the user already has: the last RECS_EXCLUDE_VIEWED viewed and the last
    RECS_EXCLUDE_PURCHASED purchased products (the profile keeps ten of each)."""
    return set(state.recent_viewed[: settings.RECS_EXCLUDE_VIEWED]) | set(
        state.recent_purchased[: settings.RECS_EXCLUDE_PURCHASED]
    )


def recommendations_for_user(
    *, project_id: int, user_id: str | None, limit: int = 10, filters: ServeFilters | None = None
) -> Served:
    """The user's recommendations now. An unknown user (or one with no history)
    gets trending products; a project with no active model gets the catalog's
    best rated. Never raises for a missing profile or model."""
    state = user_state(project_id=project_id, user_id=user_id)
    return recommendations_for_state(project_id=project_id, state=state, limit=limit, filters=filters)


def recommendations_for_state(
    *, project_id: int, state: UserState, limit: int = 10, filters: ServeFilters | None = None
) -> Served:
    """recommendations_for_user for a UserState the caller has read already:
    campaigns build the states of a thousand profiles in one query
    (campaigns.sending.context) instead of one query each."""
    filters = filters or ServeFilters()
    picker = _Picker(
        project_id=project_id,
        filters=filters,
        limit=limit,
        skip=excluded_for(state) | set(filters.exclude),
        catalog_token=state.catalog_token,
    )
    sources = recent_sources(state)
    if state.model_version_id is not None and sources:
        lists = related_lists(version_id=state.model_version_id, product_ids=[pid for pid, _ in sources])
        scores: dict[str, float] = {}
        best: dict[str, tuple[float, str]] = {}
        for source, weight in sources:
            for related, score in lists.get(source, ()):
                part = weight * score
                scores[related] = scores.get(related, 0.0) + part
                if part > best.get(related, (0.0, ""))[0]:
                    best[related] = (part, source)
        picker.offer([(pid, scores[pid], best[pid][1]) for pid in _rank(scores)], "related")
    categories = filters.categories or tuple(picker.categories_seen)
    _trending_tiers(picker, version_id=state.model_version_id, categories=categories)
    picker.fill_from_catalog()
    return Served(
        recommendation_id=new_recommendation_id(),
        products=picker.picked,
        profile_id=state.profile_id,
        model_version_id=state.model_version_id,
    )


def _project_picker(*, project_id: int, filters: ServeFilters, limit: int, skip: set[str]) -> tuple[UserState, _Picker]:
    """The project's serving state and a picker on it, for the lists that are not a user's."""
    state = project_state(project_id=project_id)
    picker = _Picker(
        project_id=project_id,
        filters=filters,
        limit=limit,
        skip=skip | set(filters.exclude),
        catalog_token=state.catalog_token,
    )
    return state, picker


def similar_products(
    *, project_id: int, product_id: str, limit: int = 20, filters: ServeFilters | None = None
) -> Served:
    """Products related to `product_id` (which the caller has checked exists), then
    trending in its categories, then overall trending, then the catalog."""
    filters = filters or ServeFilters()
    state, picker = _project_picker(project_id=project_id, filters=filters, limit=limit, skip={product_id})
    version_id = state.model_version_id
    if version_id is not None:
        items = related_lists(version_id=version_id, product_ids=[product_id]).get(product_id, ())
        picker.offer([(pid, score, product_id) for pid, score in items], "related")
    categories = filters.categories
    if not categories:
        own = products_passing(
            project_id=project_id, conditions=NO_CONDITIONS, product_ids=[product_id], token=state.catalog_token
        )
        categories = tuple(own[product_id][6] or ()) if product_id in own else ()
    _trending_tiers(picker, version_id=version_id, categories=categories)
    picker.fill_from_catalog()
    return Served(recommendation_id=new_recommendation_id(), products=picker.picked, model_version_id=version_id)


def trending_products_served(*, project_id: int, limit: int = 20, filters: ServeFilters | None = None) -> Served:
    filters = filters or ServeFilters()
    state, picker = _project_picker(project_id=project_id, filters=filters, limit=limit, skip=set())
    version_id = state.model_version_id
    _trending_tiers(picker, version_id=version_id, categories=filters.categories)
    picker.fill_from_catalog()
    return Served(recommendation_id=new_recommendation_id(), products=picker.picked, model_version_id=version_id)
