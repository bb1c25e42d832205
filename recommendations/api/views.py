"""Recommendation API (secret key): a user's recommendations, similar products, trending.

Plain Django views rather than DRF: these answer on every screen of every app
(the target is 1,500 requests/s on two cores, docs/benchmarks.md), and DRF's
request wrapping and content negotiation would cost more than the recommendation
itself. Input is parsed by hand, every rejection names its parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse, QueryDict
from django.views.decorators.http import require_GET

from catalog.selectors import product_get, property_filter_values
from crm.rate_limits import rate_limit_project, rate_limit_unknown_key
from crm.selectors import project_for_secret_key
from recommendations import serving, tracking

_FILTER_PARAMS = {"limit", "category", "in_stock", "min_price", "max_price", "exclude"}
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class BadParameter(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def _error(status: int, code: str, message: str, field: str | None = None) -> tuple[int, bytes]:
    body: dict[str, Any] = {"error": code, "message": message}
    if field:
        body["field"] = field
    return status, orjson.dumps(body)


def _project(authorization: str):  # noqa: ANN202 - Project | None
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return project_for_secret_key(key.strip())


def _decimal(query: QueryDict, name: str) -> Decimal | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise BadParameter(name, f"{name} must be a number, got {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise BadParameter(name, f"{name} must be a non-negative number, got {raw!r}")
    return value


def parse_filters(query: QueryDict, *, default_limit: int) -> tuple[int, serving.ServeFilters]:
    """The query string as (limit, filters); BadParameter names what is wrong."""
    for name in query:
        if name not in _FILTER_PARAMS and not name.startswith("prop."):
            raise BadParameter(name, f"unknown parameter {name!r}; property filters are written prop.<name>=<value>")
    raw_limit = query.get("limit", str(default_limit))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        raise BadParameter("limit", f"limit must be an integer from 1 to 100, got {raw_limit!r}")
    in_stock = None
    if "in_stock" in query:
        raw = query["in_stock"].strip().lower()
        if raw not in _BOOLS:
            raise BadParameter("in_stock", f"in_stock must be true or false, got {query['in_stock']!r}")
        in_stock = _BOOLS[raw]
    price_min, price_max = _decimal(query, "min_price"), _decimal(query, "max_price")
    if price_min is not None and price_max is not None and price_min > price_max:
        raise BadParameter("min_price", "min_price must not exceed max_price")
    categories = tuple(c.strip() for c in query.getlist("category") if c.strip())
    exclude = frozenset(pid.strip() for raw in query.getlist("exclude") for pid in raw.split(",") if pid.strip())
    properties = []
    for name in sorted(n for n in query if n.startswith("prop.")):
        prop = name[len("prop.") :]
        if not prop:
            raise BadParameter(name, "property filters are written prop.<name>=<value>")
        values: list[Any] = []
        for raw in query.getlist(name):
            values.extend(property_filter_values(raw))
        properties.append((prop, tuple(values)))
    filters = serving.ServeFilters(
        categories=categories,
        in_stock=in_stock,
        price_min=price_min,
        price_max=price_max,
        properties=tuple(properties),
        exclude=exclude,
    )
    return int(raw_limit), filters


def _rate_limited(retry_after: int, message: str) -> tuple[int, bytes, dict[str, str]]:
    status, body = _error(429, "rate_limited", f"{message}; retry in {retry_after} s")
    return status, body, {"Retry-After": str(retry_after)}


def answer(
    *, meta: Mapping[str, Any], query: QueryDict, run: Any, default_limit: int
) -> tuple[int, bytes, dict[str, str]]:
    """(status, JSON body, headers) of one API call, for the Django views and the
    WSGI fast path alike: authenticate, count it against the rate limits
    (crm.rate_limits), parse the filters, `run(project, limit, filters)`.
    `meta` is the request's META (or the WSGI environ)."""
    project = _project(meta.get("HTTP_AUTHORIZATION", ""))
    if project is None:
        retry_after = rate_limit_unknown_key(meta=meta)
        if retry_after:
            return _rate_limited(retry_after, "too many requests without a valid secret key from this address")
        status, body = _error(401, "invalid_secret_key", "Authorization must be 'Bearer <secret key>' of a project.")
        return status, body, {}
    retry_after = rate_limit_project(project=project, key_kind="secret")
    if retry_after:
        return _rate_limited(retry_after, "too many requests for this secret key")
    status, body = _result(project, query, run, default_limit)
    return status, body, {}


def _result(project: Any, query: QueryDict, run: Any, default_limit: int) -> tuple[int, bytes]:
    try:
        limit, filters = parse_filters(query, default_limit=default_limit)
        result = run(project, limit, filters)
    except BadParameter as exc:
        return _error(400, "invalid_parameter", exc.message, exc.field)
    except ValueError as exc:  # a value the database driver refuses (psycopg2: a NUL character)
        return _error(400, "invalid_parameter", str(exc), "prop")
    if isinstance(result, tuple):
        return result
    return 200, orjson.dumps(result.as_dict())


def user_recommendations_run(user_id: str) -> Any:
    def run(project, limit: int, filters: serving.ServeFilters):  # noqa: ANN001, ANN202
        served = serving.recommendations_for_user(project_id=project.pk, user_id=user_id, limit=limit, filters=filters)
        tracking.served_record(project_id=project.pk, served=served, surface="api", user_ref=user_id)
        return served

    return run


def _respond(answered: tuple[int, bytes, dict[str, str]]) -> HttpResponse:
    status, body, headers = answered
    return HttpResponse(body, status=status, content_type="application/json", headers=headers)


@require_GET
def user_recommendations(request: HttpRequest, user_id: str) -> HttpResponse:
    """Also answered, without Django's middleware, by recommendations.api.fast."""
    return _respond(
        answer(
            meta=request.META,
            query=request.GET,
            run=user_recommendations_run(user_id),
            default_limit=10,
        )
    )


@require_GET
def similar_products(request: HttpRequest, product_id: str) -> HttpResponse:
    def run(project, limit: int, filters: serving.ServeFilters):  # noqa: ANN001, ANN202
        if product_get(project_id=project.pk, product_id=product_id) is None:
            return _error(404, "not_found", f"product {product_id!r} is not in the catalog", "product_id")
        served = serving.similar_products(project_id=project.pk, product_id=product_id, limit=limit, filters=filters)
        tracking.served_record(project_id=project.pk, served=served, surface="api", user_ref="")
        return served

    return _respond(answer(meta=request.META, query=request.GET, run=run, default_limit=20))


@require_GET
def trending(request: HttpRequest) -> HttpResponse:
    def run(project, limit: int, filters: serving.ServeFilters):  # noqa: ANN001, ANN202
        served = serving.trending_products_served(project_id=project.pk, limit=limit, filters=filters)
        tracking.served_record(project_id=project.pk, served=served, surface="api", user_ref="")
        return served

    return _respond(answer(meta=request.META, query=request.GET, run=run, default_limit=20))
