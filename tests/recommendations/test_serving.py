"""Serving: related products of the user's recent items, catalog filters as the
catalog is now, exclusions, trending fill, determinism, and the HTTP API."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog.models import Product
from recommendations import serving
from recommendations.models import RecommendationServed
from tests.conftest import bearer_client
from tests.recommendations.serving_data import catalog_write, user_write, version_write


@pytest.fixture
def shop(project_a):
    project = project_a[0]
    catalog_write(project.pk)
    version_write(project.pk)
    return project


def ids(served):
    return [p.product_id for p in served.products]


@pytest.mark.django_db
def test_related_products_of_recent_items_weighted_by_recency(shop):
    # Viewed p3 then p1: p1 is newest (weight 1), p3 older (weight 0.8).
    user_write(shop.pk, "u1", viewed=["p3", "p1"])
    served = serving.recommendations_for_user(project_id=shop.pk, user_id="u1", limit=3)
    # p2: 1*0.5 = 0.5; p4: 0.8*0.6 = 0.48 but out of stock is still allowed without a stock filter;
    # p5: 1*0.1 = 0.1.  p1/p3 are excluded (viewed).
    assert ids(served) == ["p2", "p4", "p5"]
    assert [p.because_of for p in served.products] == ["p1", "p3", "p1"]
    assert [p.reason for p in served.products] == ["related", "related", "related"]
    assert served.products[0].score == pytest.approx(0.5)
    assert served.products[1].score == pytest.approx(0.48)
    first = served.products[0]
    assert (first.name, first.image_url, first.deeplink, first.price, first.rating) == (
        "Product p2",
        "https://img.example/p2.jpg",
        "shop://p/p2",
        120.0,
        4.0,
    )


@pytest.mark.django_db
def test_filters_apply_to_the_catalog_as_it_is_now(shop):
    user_write(shop.pk, "u1", viewed=["p3", "p1"])
    served = serving.recommendations_for_user(
        project_id=shop.pk, user_id="u1", limit=3, filters=serving.ServeFilters(in_stock=True)
    )
    assert ids(served)[:2] == ["p2", "p5"]  # p4 is out of stock
    Product.objects.filter(project=shop, product_id="p2").update(in_stock=False)
    served = serving.recommendations_for_user(
        project_id=shop.pk, user_id="u1", limit=3, filters=serving.ServeFilters(in_stock=True)
    )
    assert "p2" not in ids(served)
    assert ids(served)[0] == "p5"


@pytest.mark.django_db
def test_every_filter_kind(shop):
    user_write(shop.pk, "u1", viewed=["p1"])
    f = serving.ServeFilters
    run = lambda flt: ids(serving.recommendations_for_user(project_id=shop.pk, user_id="u1", limit=8, filters=flt))  # noqa: E731
    assert set(run(f(categories=("Socks",)))) == {"p5", "p6"}
    assert set(run(f(categories=("Trail", "Hats")))) == {"p3", "p4", "p7", "p8"}
    from decimal import Decimal

    assert set(run(f(price_min=Decimal("25"), price_max=Decimal("100")))) == {"p7", "p8", "p4"}
    assert set(run(f(properties=(("color", ("red",)),)))) == {"p3", "p4"}
    assert set(run(f(properties=(("size", (42, "42")),)))) == {"p5"}
    assert "p2" not in run(f(exclude=frozenset({"p2"})))


@pytest.mark.django_db
def test_fills_from_trending_then_catalog_up_to_the_limit(shop):
    user_write(shop.pk, "u1", viewed=["p5"])
    served = serving.recommendations_for_user(project_id=shop.pk, user_id="u1", limit=7)
    # related: p6; trending in the categories seen (Socks): p6 (taken), p5 (viewed);
    # overall trending: p7, p1; then the catalog by rating: p4 (4.9), p2 (4.0), p3 (3.0).
    assert ids(served) == ["p6", "p7", "p1", "p4", "p2", "p3", "p8"]
    assert [p.reason for p in served.products] == [
        "related",
        "trending",
        "trending",
        "catalog",
        "catalog",
        "catalog",
        "catalog",
    ]


@pytest.mark.django_db
def test_unknown_user_gets_trending(shop):
    served = serving.recommendations_for_user(project_id=shop.pk, user_id="nobody", limit=4)
    assert ids(served) == ["p7", "p5", "p1", "p6"]
    assert served.profile_id is None
    assert all(p.because_of is None for p in served.products)


@pytest.mark.django_db
def test_without_any_model_the_best_rated_products_are_served(project_a):
    catalog_write(project_a[0].pk)
    served = serving.recommendations_for_user(project_id=project_a[0].pk, user_id="u", limit=3)
    assert ids(served) == ["p4", "p1", "p5"]


@pytest.mark.django_db
def test_returns_fewer_only_when_the_catalog_has_no_more(shop):
    served = serving.recommendations_for_user(
        project_id=shop.pk, user_id="x", limit=10, filters=serving.ServeFilters(categories=("Hats",))
    )
    assert ids(served) == ["p7", "p8"]


@pytest.mark.django_db
def test_purchases_are_excluded_and_answers_are_deterministic(shop):
    user_write(shop.pk, "u1", viewed=["p1"], purchased=["p2"])
    a = serving.recommendations_for_user(project_id=shop.pk, user_id="u1", limit=5)
    b = serving.recommendations_for_user(project_id=shop.pk, user_id="u1", limit=5)
    assert "p2" not in ids(a) and "p1" not in ids(a)
    assert ids(a) == ids(b) and a.recommendation_id != b.recommendation_id


@pytest.mark.django_db
def test_a_new_active_version_is_served_at_once(shop):
    user_write(shop.pk, "u1", viewed=["p1"])
    assert ids(serving.recommendations_for_user(project_id=shop.pk, user_id="u1", limit=1)) == ["p2"]
    version_write(shop.pk, related={"p1": [("p8", 0.9)]})
    assert ids(serving.recommendations_for_user(project_id=shop.pk, user_id="u1", limit=1)) == ["p8"]


@pytest.mark.django_db
def test_another_projects_model_and_catalog_are_never_served(shop, project_b):
    other = project_b[0]
    Product.objects.create(project=other, product_id="p9", name="Other", categories=["Shoes"])
    version_write(other.pk, related={"p1": [("p9", 0.99)]}, trending={"": ["p9"]})
    user_write(shop.pk, "u1", viewed=["p1"])
    served = serving.recommendations_for_user(project_id=shop.pk, user_id="u1", limit=8)
    assert "p9" not in ids(served)


@pytest.mark.django_db
def test_similar_products(shop):
    served = serving.similar_products(project_id=shop.pk, product_id="p1", limit=4)
    # related of p1, then trending in its categories (Shoes: p3 taken... p1 itself excluded), then overall.
    assert ids(served) == ["p2", "p3", "p5", "p7"]


@pytest.mark.django_db
def test_serving_a_known_user_costs_one_query_once_the_process_is_warm(shop):
    user_write(shop.pk, "u1", viewed=["p3", "p1"])
    serving.recommendations_for_user(project_id=shop.pk, user_id="u1", limit=3)
    with CaptureQueriesContext(connection) as queries:
        served = serving.recommendations_for_user(project_id=shop.pk, user_id="u1", limit=3)
    assert len(queries.captured_queries) == 1
    assert ids(served) == ["p2", "p4", "p5"]


# --- HTTP API -------------------------------------------------------------------------


@pytest.mark.django_db
def test_api_answers_with_catalog_fields_and_records_the_list(shop, project_a):
    user_write(shop.pk, "u1", viewed=["p3", "p1"])
    api = bearer_client(project_a[1].secret_key)
    response = api.get("/api/v1/users/u1/recommendations?limit=2&in_stock=true")
    assert response.status_code == 200
    body = response.json()
    assert [p["product_id"] for p in body["products"]] == ["p2", "p5"]
    assert body["products"][0] == {
        "product_id": "p2",
        "name": "Product p2",
        "image_url": "https://img.example/p2.jpg",
        "deeplink": "shop://p/p2",
        "price": 120.0,
        "rating": 4.0,
        "score": 0.5,
        "because_of": "p1",
        "reason": "related",
    }
    served = RecommendationServed.objects.get(pk=body["recommendation_id"])
    assert (served.project_id, served.user_ref, served.surface, served.products) == (shop.pk, "u1", "api", ["p2", "p5"])


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query, field",
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("in_stock=perhaps", "in_stock"),
        ("min_price=abc", "min_price"),
        ("min_price=-1", "min_price"),
        ("min_price=50&max_price=10", "min_price"),
        ("colour=red", "colour"),
        ("=red", ""),
        ("prop.=x", "prop."),
    ],
)
def test_api_rejects_invalid_filters_naming_them(shop, project_a, query, field):
    api = bearer_client(project_a[1].secret_key)
    response = api.get(f"/api/v1/users/u1/recommendations?{query}")
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert RecommendationServed.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/v1/trending", "/api/v1/products/p1/similar"])
@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("min_price=1e999999", "min_price", "min_price must be below 10^10, got '1e999999'"),
        ("max_price=Infinity", "max_price", "max_price must be a number, got 'Infinity'"),
        ("prop.brand=%00", "prop.brand", "prop.brand must not contain a NUL character"),
        ("prop.%00=1", "prop.\x00", "prop.\x00 must not contain a NUL character"),
        ("category=%00", "category", "category must not contain a NUL character"),
        ("limit=%C2%B2", "limit", "limit must be an integer from 1 to 100, got '²'"),
    ],
)
def test_api_hostile_parameters_are_a_400_naming_them(shop, project_a, path, query, field, message):
    response = bearer_client(project_a[1].secret_key).get(f"{path}?{query}")
    assert (response.status_code, response.json()) == (
        400,
        {"error": "invalid_parameter", "message": message, "field": field},
    )
    assert RecommendationServed.objects.count() == 0


@pytest.mark.django_db
def test_api_similar_to_a_product_id_with_a_nul_is_a_400_naming_it(shop, project_a):
    response = bearer_client(project_a[1].secret_key).get("/api/v1/products/p%001/similar")
    assert (response.status_code, response.json()) == (
        400,
        {"error": "invalid_parameter", "message": "product_id must not contain a NUL character", "field": "product_id"},
    )


@pytest.mark.django_db
def test_api_property_and_category_filters(shop, project_a):
    api = bearer_client(project_a[1].secret_key)
    body = api.get("/api/v1/trending?category=Socks&category=Hats&prop.color=white").json()
    assert [p["product_id"] for p in body["products"]] == ["p5"]
    body = api.get("/api/v1/trending?category=Shoes&limit=2&exclude=p3").json()
    assert [p["product_id"] for p in body["products"]] == ["p1", "p2"]


@pytest.mark.django_db
def test_api_similar_products_and_unknown_product(shop, project_a):
    api = bearer_client(project_a[1].secret_key)
    body = api.get("/api/v1/products/p1/similar?limit=2").json()
    assert [p["product_id"] for p in body["products"]] == ["p2", "p3"]
    missing = api.get("/api/v1/products/nope/similar")
    assert missing.status_code == 404 and missing.json()["field"] == "product_id"


@pytest.mark.django_db
def test_api_is_scoped_to_the_key_and_needs_one(shop, project_b):
    # Project B's key cannot see A's product nor A's users' recommendations.
    api_b = bearer_client(project_b[1].secret_key)
    assert api_b.get("/api/v1/products/p1/similar").status_code == 404
    user_write(shop.pk, "u1", viewed=["p1"])
    assert api_b.get("/api/v1/users/u1/recommendations").json()["products"] == []
    from rest_framework.test import APIClient

    assert APIClient().get("/api/v1/trending").status_code == 401
    assert bearer_client("sk_wrong").get("/api/v1/trending").status_code == 401
