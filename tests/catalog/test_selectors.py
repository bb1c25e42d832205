"""Catalog selectors, as the recommendation apps will call them."""

from decimal import Decimal

import pytest
from django.db import connection

from catalog import mirror, selectors
from catalog.csvfile import ProductIn
from catalog.models import Product
from catalog.services import products_upsert


@pytest.fixture
def catalog(project_a, project_b):  # noqa: ANN001, ANN201
    project = project_a[0]
    products_upsert(
        project_id=project.pk,
        products=[
            ProductIn("M1", "Drama", ["Movies", "Drama"], Decimal("10"), properties={"year": 2001, "hd": True}),
            ProductIn("M2", "Comedy", ["Movies", "Comedy"], Decimal("20"), in_stock=False, properties={"year": 1999}),
            ProductIn("B1", "Novel", ["Books", "Drama"], Decimal("30"), properties={"lang": "en", "hd": False}),
            ProductIn("B2", "Old", ["Books"], Decimal("5"), is_active=False),
        ],
    )
    products_upsert(project_id=project_b[0].pk, products=[ProductIn("M1", "B's", ["Movies", "Drama"])])
    return project


def _ids(qs) -> list[str]:  # noqa: ANN001
    return list(qs.order_by("id").values_list("product_id", flat=True))


def test_product_filter_combines_categories_stock_activity_price_and_properties(catalog):
    pid = catalog.pk
    assert _ids(selectors.product_filter(project_id=pid, categories=["Drama"])) == ["M1", "B1"]
    assert _ids(selectors.product_filter(project_id=pid, categories=["Movies"], in_stock=True)) == ["M1"]
    assert _ids(selectors.product_filter(project_id=pid, is_active=True, price_min=10, price_max=20)) == ["M1", "M2"]
    assert _ids(selectors.product_filter(project_id=pid, is_active=False)) == ["B2"]
    assert _ids(selectors.product_filter(project_id=pid, properties={"year": 2001})) == ["M1"]
    assert _ids(selectors.product_filter(project_id=pid, properties={"year": [2001, 1999]})) == ["M1", "M2"]
    assert _ids(selectors.product_filter(project_id=pid, properties={"hd": True})) == ["M1"]
    assert _ids(selectors.product_filter(project_id=pid, properties={"lang": "en"}, categories=["Books"])) == ["B1"]
    assert _ids(selectors.product_filter(project_id=pid, properties={"nope": "x"})) == []


def test_lookups_by_id_and_batches_stay_in_the_project(catalog, project_b):
    assert selectors.product_get(project_id=catalog.pk, product_id="M1").name == "Drama"
    assert selectors.product_get(project_id=project_b[0].pk, product_id="M1").name == "B's"
    assert selectors.product_get(project_id=catalog.pk, product_id="zz") is None
    batches = list(selectors.products_iter(project_id=catalog.pk, batch=3))
    assert [[p.product_id for p in b] for b in batches] == [["M1", "M2", "B1"], ["B2"]]
    assert [p.product_id for b in selectors.products_iter(project_id=catalog.pk, only_active=True) for p in b] == [
        "M1",
        "M2",
        "B1",
    ]


def test_category_names_are_every_level_of_the_projects_paths(catalog, project_b):
    assert selectors.category_names(project_ids=[catalog.pk]) == ["Books", "Comedy", "Drama", "Movies"]
    assert selectors.category_names(project_ids=[project_b[0].pk]) == ["Drama", "Movies"]


def test_category_and_property_filters_are_served_by_the_gin_indexes(project_a):
    project = project_a[0]
    common = [ProductIn(f"P{i}", categories=["Movies", "Drama"], properties={"year": 2000}) for i in range(3000)]
    rare = [ProductIn(f"R{i}", categories=["Movies", "Western"], properties={"year": 1950}) for i in range(3)]
    products_upsert(project_id=project.pk, products=common + rare)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE catalog_product")
        for qs, index in [
            (selectors.product_filter(project_id=project.pk, categories=["Western"]), "product_categories_gin"),
            (selectors.product_filter(project_id=project.pk, properties={"year": 1950}), "product_properties_gin"),
        ]:
            assert _ids(qs) == ["R0", "R1", "R2"]
            sql, params = qs.query.sql_with_params()
            cursor.execute("EXPLAIN " + sql, params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert f"Bitmap Index Scan on {index}" in plan, plan


F = selectors.ProductFilter
# Active products of the `catalog` fixture, with N1 added below: M1 (Movies > Drama, 10),
# M2 (Movies > Comedy, 20, out of stock), B1 (Books > Drama, 30), N1 (Books > Drama, no price).
FILTERS = [
    (F(), ["B1", "M1", "M2", "N1"]),
    (F(in_stock=True), ["B1", "M1", "N1"]),
    (F(in_stock=False), ["M2"]),
    (F(categories=("Drama",)), ["B1", "M1", "N1"]),
    (F(categories=("Comedy", "Books"), in_stock=True), ["B1", "N1"]),
    (F(categories=("drama",)), []),  # exact names
    (F(price_min=Decimal("10"), price_max=Decimal("20")), ["M1", "M2"]),  # bounds included; N1 fails them
    (F(price_min=Decimal("10.5")), ["B1", "M2"]),
    (F(price_max=Decimal("10")), ["M1"]),
]


@pytest.mark.parametrize(("conditions", "expected"), FILTERS)
def test_a_filter_admits_in_memory_exactly_what_it_selects_in_the_database(catalog, conditions, expected):
    products_upsert(project_id=catalog.pk, products=[ProductIn("N1", "Unpriced", ["Books", "Drama"], None)])
    ids = ["M1", "M2", "B1", "B2", "N1", "zz"]
    # No token: the mirror reads the rows and filters them in memory (ProductFilter.admits).
    in_memory = mirror.products_passing(project_id=catalog.pk, conditions=conditions, product_ids=ids, token=None)
    in_database = Product.objects.filter(project_id=catalog.pk, is_active=True).filter(conditions.q())
    assert sorted(in_memory) == expected
    assert sorted(in_database.values_list("product_id", flat=True)) == expected
