"""Security headers (config.security): the WSGI fast paths answer with exactly
the headers of Django's middleware, and the console with a Content-Security-Policy
that its pages need nothing beyond (no inline script or style)."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.test import Client

from catalog.csvfile import ProductIn
from catalog.models import CatalogUpload, UploadState
from catalog.services import catalog_upload_create, products_upsert
from tests.conftest import basic_header, wsgi_call

NAMES = (
    "X-Content-Type-Options",
    "Referrer-Policy",
    "Cross-Origin-Opener-Policy",
    "X-Frame-Options",
    "Strict-Transport-Security",
    "Content-Security-Policy",
)
DJANGO = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
HSTS = {"Strict-Transport-Security": "max-age=31536000; includeSubDomains; preload"}  # the production defaults


def security(headers: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name in NAMES}


@pytest.mark.django_db
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_fast_path_answers_carry_the_security_headers_of_djangos(project_a, scheme):
    keys = project_a[1]
    expected = {**DJANGO, **(HSTS if scheme == "https" else {})}
    assert security(wsgi_call("/healthz", scheme=scheme)[1]) == expected  # Django's middleware
    bad_json = {"HTTP_AUTHORIZATION": basic_header(keys.write_key)}
    answers = {
        "collector 400": wsgi_call("/v1/track", method="POST", body=b"{", scheme=scheme, **bad_json),
        "collector 401": wsgi_call("/v1/track", method="POST", body=b"{}", scheme=scheme),
        "collector 204": wsgi_call("/v1/track", method="OPTIONS", scheme=scheme),
        "recommendations 200": wsgi_call(
            "/api/v1/users/u1/recommendations", scheme=scheme, HTTP_AUTHORIZATION=f"Bearer {keys.secret_key}"
        ),
        "recommendations 401": wsgi_call("/api/v1/users/u1/recommendations", scheme=scheme),
    }
    assert {name: status for name, (status, _h, _b) in answers.items()} == {
        "collector 400": 400,
        "collector 401": 401,
        "collector 204": 204,
        "recommendations 200": 200,
        "recommendations 401": 401,
    }
    for name, (_status, headers, _body) in answers.items():
        assert security(headers) == expected, name


@pytest.mark.django_db
def test_the_console_answers_with_a_content_security_policy(settings, client):
    policy = settings.CONSOLE_CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in policy and "'unsafe-inline'" not in policy
    login = client.get("/admin/login/")
    assert security(dict(login.items())) == {**DJANGO, "Content-Security-Policy": policy}
    assert "Content-Security-Policy" not in client.get("/healthz")
    assert "Content-Security-Policy" not in client.get("/api/v1/trending")


INLINE = {
    "inline script": re.compile(r"<script(?![^>]*\ssrc=)(?![^>]*type=\"application/json\")[^>]*>", re.I),
    "style element": re.compile(r"<style", re.I),
    "style attribute": re.compile(r"\sstyle=", re.I),
    "event handler": re.compile(r"\son[a-z]+=", re.I),
    "javascript: URL": re.compile(r"javascript:", re.I),
}


def inline(html: str) -> dict[str, list[str]]:
    return {name: pattern.findall(html) for name, pattern in INLINE.items() if pattern.search(html)}


@pytest.mark.django_db
def test_console_pages_need_nothing_the_policy_forbids(project_a):
    """What a browser would block under the policy (no Chromium needed): inline
    scripts, style elements and attributes, event handler attributes."""
    project = project_a[0]
    products_upsert(
        project_id=project.pk, products=[ProductIn("P1", "Shirt", image_url="https://cdn.example.com/p1.jpg")]
    )
    pending = catalog_upload_create(
        project_id=project.pk, file=ContentFile(b"id,name\nP1,Shirt\n", name="c.csv"), start=False
    )
    running = catalog_upload_create(
        project_id=project.pk, file=ContentFile(b"id,name\nP2,Hat\n", name="d.csv"), start=False
    )
    CatalogUpload.objects.filter(pk=running.pk).update(state=UploadState.RUNNING)
    root = get_user_model().objects.create_superuser("root", "root@x.io", "pw-root-123")
    console = Client()
    login = console.get("/admin/login/")
    assert (login.status_code, inline(login.content.decode())) == (200, {})
    console.force_login(root)
    product = project.products.get()
    pages = [
        "/admin/",
        "/admin/catalog/product/",
        f"/admin/catalog/product/{product.pk}/change/",
        "/admin/catalog/catalogupload/",
        "/admin/catalog/catalogupload/add/",
        f"/admin/catalog/catalogupload/{pending.pk}/change/",
        f"/admin/catalog/catalogupload/{running.pk}/change/",
        f"/admin/crm/project/{project.pk}/change/",
        "/admin/axes/accessattempt/",
    ]
    for path in pages:
        response = console.get(path)
        assert response.status_code == 200, path
        assert inline(response.content.decode()) == {}, path
    # The progress bar's script and the page's styles are files of the site.
    html = console.get(f"/admin/catalog/catalogupload/{running.pk}/change/").content.decode()
    status_url = f"/admin/catalog/catalogupload/{running.pk}/status/"
    assert f'data-status-url="{status_url}"' in html
    assert '<script src="/static/catalog/upload_progress.js" defer></script>' in html
    assert '<link rel="stylesheet" href="/static/catalog/console.css">' in html
    assert json.loads(console.get(status_url).content)["state"] == "running"
    for asset in ("/static/catalog/upload_progress.js", "/static/catalog/console.css"):
        assert console.get(asset).status_code == 200, asset
