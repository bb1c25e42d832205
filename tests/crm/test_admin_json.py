"""JSON typed into a console form that the store cannot hold is a form error
naming the field (crm.admin_base.ConsoleAdmin's JSON form field), not a 500;
and a JSON field a model has is edited with that check on every admin."""

import json

import pytest
from django.contrib import admin
from django.db import models
from django.test import Client, RequestFactory

from catalog.csvfile import ProductIn
from catalog.models import Product
from catalog.services import products_upsert
from crm import services
from crm.storable import MAX_JSON_DEPTH

pytestmark = pytest.mark.django_db


def _nested(depth: int) -> str:
    """A JSON object `depth` levels deep: {"a": {"a": ... 1}}."""
    return '{"a": ' * depth + "1" + "}" * depth


@pytest.fixture
def product(project_a) -> Product:
    products_upsert(project_id=project_a[0].pk, products=[ProductIn("P1", "Shirt", ["Clothes"])])
    return Product.objects.get(product_id="P1")


@pytest.fixture
def console(marketer_a) -> Client:
    client = Client()
    client.force_login(marketer_a)
    return client


def _product_form(product: Product, **changes: str) -> dict[str, str]:
    form = {
        "name": product.name,
        "categories": json.dumps(product.categories),
        "price": "",
        "currency": product.currency,
        "rating": "",
        "description": product.description,
        "image_url": product.image_url,
        "deeplink": product.deeplink,
        "in_stock": "on",
        "is_active": "on",
        "properties": json.dumps(product.properties),
    }
    return {**form, **changes}


@pytest.mark.parametrize(
    ("field", "typed", "message"),
    [
        ("properties", '{"brand": "a\\u0000b"}', "properties['brand']: must not contain a NUL character"),
        ("properties", '{"a\\u0000": 1}', "properties['a\\x00']: the key must not contain a NUL character"),
        ("properties", '{"size": 1e999}', "properties['size']: must be a finite number"),
        ("properties", '{"size": NaN}', "properties['size']: must be a finite number"),
        ("properties", '{"size": -Infinity}', "properties['size']: must be a finite number"),
        ("properties", '{"x": "\\ud800"}', "properties['x']: must be valid Unicode (it has a lone surrogate)"),
        ("properties", '{"n": 99999999999999999999}', "properties['n']: integer out of range (64 bits)"),
        ("properties", _nested(MAX_JSON_DEPTH + 1), f"nested deeper than {MAX_JSON_DEPTH} levels"),
        ("properties", "[" * 100_000 + "]" * 100_000, f"properties: nested deeper than {MAX_JSON_DEPTH} levels"),
        ("categories", '["Clothes", "\\u0000"]', "categories[1]: must not contain a NUL character"),
    ],
)
def test_json_the_store_cannot_hold_is_a_form_error_naming_the_field(console, product, field, typed, message):
    url = f"/admin/catalog/product/{product.pk}/change/"
    response = console.post(url, _product_form(product, name="Renamed", **{field: typed}))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == [field]
    assert message in errors[field][0]
    product.refresh_from_db()
    assert (product.name, product.categories, product.properties) == ("Shirt", ["Clothes"], {})


def test_json_at_the_limit_is_saved_from_the_console(console, product):
    url = f"/admin/catalog/product/{product.pk}/change/"
    typed = _nested(MAX_JSON_DEPTH)
    response = console.post(url, _product_form(product, properties=typed))
    assert (response.status_code, response["Location"]) == (302, "/admin/catalog/product/")
    product.refresh_from_db()
    assert product.properties == json.loads(typed)


def test_every_json_field_of_every_admin_form_has_the_check():
    from crm.admin_base import StorableJSONField

    request = RequestFactory().get("/")
    checked = []
    for model, model_admin in admin.site._registry.items():
        for db_field in model._meta.concrete_fields:
            if isinstance(db_field, models.JSONField) and db_field.editable:
                form_field = model_admin.formfield_for_dbfield(db_field, request)
                assert isinstance(form_field, StorableJSONField), db_field
                checked.append(f"{model._meta.label}.{db_field.name}")
    assert "catalog.Product.properties" in checked and "crm.Profile.traits" in checked


def test_a_cleared_json_field_saves_the_columns_default_not_a_null(console, product):
    # The column is NOT NULL: Django's form field reads an empty box as None (a 500).
    Product.objects.filter(pk=product.pk).update(properties={"brand": "x"})
    product.refresh_from_db()
    url = f"/admin/catalog/product/{product.pk}/change/"
    response = console.post(url, _product_form(product, properties="", categories=""))
    assert (response.status_code, response["Location"]) == (302, "/admin/catalog/product/")
    product.refresh_from_db()
    assert (product.properties, product.categories) == ({}, [])


def test_profile_traits_are_read_only_in_the_console_and_a_crafted_post_cannot_write_them(console, project_a):
    # Traits come from the collectors and PATCH /api/v1/profiles (which check them,
    # crm.storable); the console shows them only, so no form field takes them.
    profile = services.profile_upsert(project_id=project_a[0].pk, user_id="alice", traits={"plan": "pro"})
    form = {"email": "alice@x.io", "phone": "", "name": "Alice", "gender": "", "birth_date": "", "locale": "",
            "country": "", "city": "", "timezone": "", "email_subscribed": "unknown", "push_subscribed": "unknown",
            "sms_subscribed": "unknown", "traits": '{"plan": "a\\u0000b", "n": 1e999}'}  # fmt: skip
    response = console.post(f"/admin/crm/profile/{profile.pk}/change/", form)
    assert (response.status_code, response["Location"]) == (302, "/admin/crm/profile/")
    profile.refresh_from_db()
    assert (profile.name, profile.traits) == ("Alice", {"plan": "pro"})
