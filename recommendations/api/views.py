"""Recommendation API (secret key): a user's recommendations, similar products, trending.

Plain Django views rather than DRF: these answer on every screen of every app
(the target is 1,500 requests/s on two cores, docs/benchmarks.md), and DRF's
request wrapping and content negotiation would cost more than the recommendation
itself. Input is parsed by crm.api.params, every rejection names its parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse, QueryDict
from django.views.decorators.http import require_GET

from catalog.selectors import PRODUCT_FILTER_PARAMS, PROPERTY_PARAM_PREFIX, product_filter_params, product_get
from crm.api import params
from crm.rate_limits import rate_limit_project, rate_limit_unknown_key
from crm.selectors import project_for_secret_key
from recommendations import serving, tracking

_OWN_PARAMS = {"limit", "exclude"}


def _error(status: int, code: str, message: str, field: str | None = None) -> tuple[int, bytes]:
    body: dict[str, Any] = {"error": code, "message": message}
    if field is not None:  # "" too: `?=x` is an unknown parameter named ""
        body["field"] = field
    return status, orjson.dumps(body)


def _project(authorization: str):  # noqa: ANN202 - Project | None
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return project_for_secret_key(key.strip())


def parse_filters(query: QueryDict, *, default_limit: int) -> tuple[int, serving.ServeFilters]:
    """The query string as (limit, filters); params.BadParameter names what is wrong."""
    for name in query:
        # Unknown parameters are refused here (a misspelt filter would serve an
        # unfiltered list), a nameless one (`?=x`) with its own message; the DRF
        # APIs (products, profiles) ignore unknown parameters, nameless ones too.
        if not name.strip():
            written = f"{name}={query.get(name)}"[:40]
            raise params.BadParameter(
                name, f"a query parameter has no name (the query string has {written!r}); write <name>=<value>"
            )
        if name not in _OWN_PARAMS and name not in PRODUCT_FILTER_PARAMS and not name.startswith(PROPERTY_PARAM_PREFIX):
            raise params.BadParameter(
                name, f"unknown parameter {name!r}; property filters are written prop.<name>=<value>"
            )
    limit = params.integer("limit", query.get("limit", str(default_limit)), minimum=1, maximum=100)
    exclude = frozenset(
        params.text("exclude", pid.strip()) for raw in query.getlist("exclude") for pid in raw.split(",") if pid.strip()
    )
    return limit, serving.ServeFilters(**product_filter_params(query), exclude=exclude)


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
    except params.BadParameter as exc:
        return _error(400, "invalid_parameter", exc.message, exc.field)
    if isinstance(result, tuple):
        return result
    return 200, orjson.dumps(result.as_dict())


def user_recommendations_run(user_id: str) -> Any:
    def run(project, limit: int, filters: serving.ServeFilters):  # noqa: ANN001, ANN202
        params.text("user_id", user_id)
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
        params.text("product_id", product_id)
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
