"""The per-process catalog cache of serving: every committed product write, by
any path, is seen by the next request; filters give what the database gives."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog import services as catalog_services
from catalog.models import CatalogState, Product
from recommendations import serving
from tests.recommendations.serving_data import user_write, version_write

IN_STOCK = serving.ServeFilters(in_stock=True)


def served_ids(project_id, filters=IN_STOCK, limit=3, user="u1"):
    served = serving.recommendations_for_user(project_id=project_id, user_id=user, limit=limit, filters=filters)
    return [p.product_id for p in served.products]


def _orm_update(project):
    Product.objects.filter(project=project, product_id="p2").update(in_stock=False)


def _save(project):
    product = Product.objects.get(project=project, product_id="p2")
    product.in_stock = False
    product.save()


def _raw_sql(project):
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE catalog_product SET in_stock = false WHERE project_id = %s AND product_id = 'p2'", [project.pk]
        )


def _delete(project):
    Product.objects.filter(project=project, product_id="p2").delete()


def _deactivate(project):
    pk = Product.objects.get(project=project, product_id="p2").pk
    catalog_services.products_set_active(project_id=project.pk, product_pks=[pk], active=False)


def _upsert(project):
    catalog_services.products_upsert(
        project_id=project.pk,
        products=[catalog_services.ProductIn(product_id="p2", in_stock=False)],
        fields={"in_stock"},
    )


@pytest.mark.django_db
@pytest.mark.parametrize("write", [_orm_update, _save, _raw_sql, _delete, _deactivate, _upsert])
def test_a_product_write_by_any_path_is_seen_by_the_next_request(shop, write):
    # Related p2, p5 (p4 is related too but out of stock; p1, p3 were seen), then p6:
    # trending in Socks, a category of what was picked.
    assert served_ids(shop.pk) == ["p2", "p5", "p6"]
    write(shop)
    assert served_ids(shop.pk) == ["p5", "p6", "p7"]


@pytest.mark.django_db
def test_a_new_product_is_served_once_it_exists(shop):
    # p9 is the best related product of p3, but not in the catalog yet: skipped, and remembered as missing.
    version_write(shop.pk, related={"p3": [("p9", 0.9), ("p2", 0.1)], "p1": [("p5", 0.05)]})
    assert served_ids(shop.pk) == ["p2", "p5", "p6"]  # p6: trending in Socks, the category of p5
    Product.objects.create(project=shop, product_id="p9", name="New", in_stock=True)
    assert served_ids(shop.pk) == ["p9", "p2", "p5"]


@pytest.mark.django_db
def test_another_projects_catalog_write_keeps_this_projects_cache(shop, project_b):
    served_ids(shop.pk)
    token = CatalogState.objects.get(project_id=shop.pk).token
    Product.objects.create(project=project_b[0], product_id="p2", name="Theirs", in_stock=False)
    assert CatalogState.objects.get(project_id=shop.pk).token == token
    with CaptureQueriesContext(connection) as queries:
        assert served_ids(shop.pk) == ["p2", "p5", "p6"]
    assert len(queries.captured_queries) == 1


FILTERS = [
    serving.ServeFilters(),
    serving.ServeFilters(in_stock=False),
    serving.ServeFilters(categories=("Socks",)),
    serving.ServeFilters(categories=("Running", "Hats"), in_stock=True),
    serving.ServeFilters(price_min=Decimal("20"), price_max=Decimal("120")),
    serving.ServeFilters(price_min=Decimal("26")),  # p8 (30) passes, p7 (25) does not
    serving.ServeFilters(exclude=frozenset({"p4", "p2"})),
]


@pytest.mark.django_db
@pytest.mark.parametrize("filters", FILTERS)
def test_cached_rows_give_what_rows_read_from_the_database_give(shop, filters):
    # That a filter means the same in memory and in SQL: tests/catalog/test_selectors.py.
    Product.objects.filter(project=shop, product_id="p8").update(price=30, is_active=False)
    Product.objects.filter(project=shop, product_id="p6").update(price=None)
    cached = served_ids(shop.pk, filters=filters, limit=8)
    serving.serving_cache_clear()
    CatalogState.objects.filter(project_id=shop.pk).delete()  # no token: every row from the database
    from_database = served_ids(shop.pk, filters=filters, limit=8)
    assert cached == from_database
    assert "p8" not in cached  # inactive


@pytest.mark.django_db
def test_a_preloaded_version_serves_the_same_lists_without_queries(shop, settings):
    version = version_write(shop.pk)
    expected = serving.related_lists(version_id=version.pk, product_ids=["p1", "p3", "p9"])
    settings.RECS_SERVE_PRELOAD_MAX_ROWS = 100
    assert serving.related_preload(version_id=version.pk) is True
    with CaptureQueriesContext(connection) as queries:
        preloaded = serving.related_lists(version_id=version.pk, product_ids=["p1", "p3", "p9"])
    assert len(queries.captured_queries) == 0
    assert preloaded == expected
    assert [r for r, _ in preloaded["p1"]] == ["p2", "p3", "p5"] and preloaded["p9"] == ()


@pytest.mark.django_db
def test_a_version_larger_than_the_preload_limit_stays_in_the_per_product_cache(shop, settings):
    version = version_write(shop.pk)
    settings.RECS_SERVE_PRELOAD_MAX_ROWS = 5  # the version has 9 rows
    assert serving.related_preload(version_id=version.pk) is False
    with CaptureQueriesContext(connection) as queries:
        serving.related_lists(version_id=version.pk, product_ids=["p1"])
    assert len(queries.captured_queries) == 1


@pytest.mark.django_db
def test_a_preloaded_catalog_answers_without_queries_until_it_changes(shop):
    served_ids(shop.pk)  # the process sees the current token
    token = CatalogState.objects.get(project_id=shop.pk).token
    assert serving.catalog_preload(project_id=shop.pk, token=token) is True
    user_write(shop.pk, "u2", viewed=["p5"])
    with CaptureQueriesContext(connection) as queries:
        # p6 (related to p5), then trending: every row, and the absence of p9, from memory.
        assert served_ids(shop.pk, user="u2") == ["p6", "p7", "p1"]
    assert not [q for q in queries.captured_queries if "catalog_product" in q["sql"]]
    Product.objects.filter(project=shop, product_id="p6").update(in_stock=False)
    assert served_ids(shop.pk, user="u2") == ["p7", "p1", "p2"]


@pytest.mark.django_db
def test_a_catalog_loaded_for_an_old_token_is_not_installed(shop):
    served_ids(shop.pk)
    old = CatalogState.objects.get(project_id=shop.pk).token
    Product.objects.filter(project=shop, product_id="p2").update(in_stock=False)
    served_ids(shop.pk)  # the process moves to the new token
    assert serving.catalog_preload(project_id=shop.pk, token=old) is False
    assert served_ids(shop.pk) == ["p5", "p6", "p7"]
