"""Reads of the catalog, for the API, the console and the recommendation apps."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.db import connection
from django.db.models import Q, QuerySet
from django.http import QueryDict

from catalog.csvfile import property_value_candidates
from catalog.models import CatalogUpload, CatalogUploadError, Product
from crm.api import params

# A product row as catalog.mirror keeps it in memory (a plain tuple: see there),
# in this order: the served fields, then what the filters look at.
ROW_FIELDS = ("product_id", "name", "image_url", "deeplink", "price", "rating", "categories", "in_stock", "is_active")


@dataclass(frozen=True)
class ProductFilter:
    """What a catalog filter means, defined once for the database query (`q`) and
    for the product rows a process keeps in memory (`admits`, catalog.mirror).

    - `categories`: products in any of them, at any level of the path ("Drama"
      matches "Movies > Drama"); exact, case-sensitive names.
    - `in_stock`: the product's flag is that value.
    - `price_min`, `price_max`: inclusive bounds; a product without a price fails
      any bound (as NULL does in SQL).
    - `properties`: ((name, (values, ...)), ...): the property equals one of the
      values, as JSON (42 and "42" differ: property_filter_values gives both for
      a query-string value).

    Whether a product is active is not a condition here: the API may list
    inactive products (product_filter's `is_active`), recommendations never name
    them (catalog.mirror).
    """

    categories: tuple[str, ...] = ()
    in_stock: bool | None = None
    price_min: Decimal | None = None
    price_max: Decimal | None = None
    properties: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def q(self) -> Q:
        """The conditions for a query of catalog_product. Categories and
        properties are JSON containment (`@>`), served by the GIN indexes
        product_categories_gin and product_properties_gin; stock and price by
        product_active_stock_price."""
        condition = Q()
        if self.in_stock is not None:
            condition &= Q(in_stock=self.in_stock)
        if self.price_min is not None:
            condition &= Q(price__gte=self.price_min)
        if self.price_max is not None:
            condition &= Q(price__lte=self.price_max)
        if self.categories:
            any_category = Q()
            for category in self.categories:
                any_category |= Q(categories__contains=[category])
            condition &= any_category
        for name, values in self.properties:
            any_value = Q()
            for value in values:
                any_value |= Q(properties__contains={name: value})
            condition &= any_value
        return condition

    def admits(self, row: tuple) -> bool:
        """The same conditions on a row in ROW_FIELDS order, but for `properties`:
        rows do not carry them (a dict per row would be tracked by the garbage
        collector, and Python's equality is not JSON's: True == 1), so callers
        with property conditions query the database, as catalog.mirror does.
        Runs for every candidate of every recommendation."""
        if self.in_stock is not None and row[7] is not self.in_stock:
            return False
        price = row[4]
        if self.price_min is not None and (price is None or price < self.price_min):
            return False
        if self.price_max is not None and (price is None or price > self.price_max):
            return False
        return not self.categories or any(c in row[6] for c in self.categories)


def product_filter(
    *,
    project_id: int,
    categories: Sequence[str] = (),
    in_stock: bool | None = None,
    is_active: bool | None = None,
    price_min: Decimal | float | None = None,
    price_max: Decimal | float | None = None,
    properties: Mapping[str, Any | Sequence[Any]] | None = None,
) -> QuerySet[Product]:
    """A project's products matching every given condition (ProductFilter says
    what each means). `properties`: {name: value} or {name: [values]}; use
    property_filter_values() to turn a query-string value ("42") into what it may
    be stored as (42 and "42")."""
    conditions = ProductFilter(
        categories=tuple(categories),
        in_stock=in_stock,
        price_min=price_min,
        price_max=price_max,
        properties=tuple(
            (name, tuple(wanted) if isinstance(wanted, list | tuple) else (wanted,))
            for name, wanted in (properties or {}).items()
        ),
    )
    return products_matching(project_id=project_id, conditions=conditions, is_active=is_active)


def products_matching(
    *, project_id: int, conditions: ProductFilter, is_active: bool | None = None
) -> QuerySet[Product]:
    qs = Product.objects.filter(project_id=project_id)
    if is_active is not None:
        qs = qs.filter(is_active=is_active)
    return qs.filter(conditions.q())


# The query parameters product_filter_params reads, besides PROPERTY_PARAM_PREFIX + <name>.
PRODUCT_FILTER_PARAMS = frozenset({"category", "in_stock", "min_price", "max_price"})
PROPERTY_PARAM_PREFIX = "prop."
_PRICE = Product._meta.get_field("price")


def product_filter_params(query: QueryDict) -> dict[str, Any]:
    """ProductFilter's fields as an API query string gives them, read alike by
    the catalog API and the recommendation API (`ProductFilter(**...)`):
    `category` (repeatable; blank ones ignored), `in_stock`, `min_price`,
    `max_price` (blank: no bound) and `prop.<name>` (repeatable). Other
    parameters are the caller's. Raises crm.api.params.BadParameter naming the
    parameter at fault."""
    fields: dict[str, Any] = {
        "categories": tuple(params.text("category", c.strip()) for c in query.getlist("category") if c.strip()),
    }
    if query.get("in_stock", "").strip():
        fields["in_stock"] = params.boolean("in_stock", query["in_stock"])
    for name, field in (("min_price", "price_min"), ("max_price", "price_max")):
        raw = query.get(name, "").strip()
        if raw:
            fields[field] = params.decimal(
                name, raw, max_digits=_PRICE.max_digits, decimal_places=_PRICE.decimal_places
            )
    low, high = fields.get("price_min"), fields.get("price_max")
    if low is not None and high is not None and low > high:
        raise params.BadParameter("min_price", "min_price must not exceed max_price")
    properties = []
    for key in sorted(k for k in query if k.startswith(PROPERTY_PARAM_PREFIX)):
        name = params.text(key, key[len(PROPERTY_PARAM_PREFIX) :])
        # No property is named " ": an import strips its headers. A dot is part
        # of the name (properties are flat): prop.a.b filters the property "a.b".
        if not name.strip():
            raise params.BadParameter(key, "property filters are written prop.<name>=<value>")
        values = [v for raw in query.getlist(key) for v in property_filter_values(params.text(key, raw))]
        properties.append((name, tuple(values)))
    fields["properties"] = tuple(properties)
    return fields


def property_filter_values(raw: str) -> list[Any]:
    """ "42" -> [42, "42"]; "true" -> [True, "true"]; "red" -> ["red"]."""
    return property_value_candidates(raw.strip())


def product_get(*, project_id: int, product_id: str) -> Product | None:
    return Product.objects.filter(project_id=project_id, product_id=product_id).first()


def products_iter(*, project_id: int, batch: int = 5000, only_active: bool = False) -> Iterator[list[Product]]:
    """A project's products in primary-key ranges of `batch` (for training and
    exports: no OFFSET, no long-held cursor)."""
    last = 0
    while True:
        qs = Product.objects.filter(project_id=project_id, pk__gt=last)
        if only_active:
            qs = qs.filter(is_active=True)
        rows = list(qs.order_by("pk")[:batch])
        if not rows:
            return
        yield rows
        last = rows[-1].pk


CATEGORY_CACHE_SECONDS = 300


def category_cache_key(project_id: int) -> str:
    return f"catalog:categories:{project_id}"


def category_names(*, project_ids: Sequence[int] | None, limit: int = 200) -> list[str]:
    """Distinct category names (any level) of the projects, for the console's
    filter. Cached per project for five minutes (it reads every product);
    catalog writes drop a project's entry."""
    if project_ids is None:
        project_ids = list(Product.objects.order_by().values_list("project_id", flat=True).distinct())
    names: set[str] = set()
    for project_id in project_ids:
        key = category_cache_key(project_id)
        cached = cache.get(key)
        if cached is None:
            cached = _category_names_of(project_id, limit)
            cache.set(key, cached, CATEGORY_CACHE_SECONDS)
        names.update(cached)
    return sorted(names)[:limit]


def _category_names_of(project_id: int, limit: int) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT c FROM catalog_product p, jsonb_array_elements_text(p.categories) c "
            "WHERE p.project_id = %s ORDER BY c LIMIT %s",
            [project_id, limit],
        )
        return [row[0] for row in cursor.fetchall()]


def upload_summary(upload: CatalogUpload) -> dict[str, Any]:
    """What the console, the API and the command show of an upload: one shape."""
    return {
        "id": upload.pk,
        "state": upload.state,
        "mode": upload.mode,
        "file": upload.original_name,
        "progress": round(upload.progress, 1),
        "rows": upload.rows_processed,
        "created": upload.created,
        "updated": upload.updated,
        "deactivated": upload.deactivated,
        "rejected": upload.rejected,
        "has_error_file": bool(upload.error_file),
        "message": upload.message,
        "created_at": upload.created_at.isoformat() if upload.created_at else None,
        "started_at": upload.started_at.isoformat() if upload.started_at else None,
        "finished_at": upload.finished_at.isoformat() if upload.finished_at else None,
    }


def upload_errors(*, upload_id: int, limit: int = 20) -> list[CatalogUploadError]:
    return list(CatalogUploadError.objects.filter(upload_id=upload_id).order_by("row", "id")[:limit])
