"""The web side: no TensorFlow in the web process, the console's version list and
its activate / roll back actions, scoped to the marketer's projects."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from recommendations.models import ModelVersion, VersionStatus

WEB_IMPORTS = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import config.wsgi
from django.contrib import admin
from django.urls import get_resolver
import config.urls
def walk(patterns):
    for p in patterns:
        if hasattr(p, "url_patterns"):
            walk(p.url_patterns)
admin.autodiscover()
walk(get_resolver().url_patterns)
import recommendations.admin, recommendations.selectors, recommendations.services, recommendations.tasks
from config.celery import app
app.loader.import_default_modules()
heavy = sorted(m for m in ("tensorflow", "keras", "pandas", "scipy") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


def test_the_web_process_never_imports_tensorflow_or_pandas():
    out = subprocess.run([sys.executable, "-c", WEB_IMPORTS], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "HEAVY="


def _version(project, status: str, hr: float, **extra) -> ModelVersion:  # noqa: ANN001, ANN003
    return ModelVersion.objects.create(
        project=project, status=status, metrics={"model_hr10": hr, "itemknn_hr10": 0.2}, **extra
    )


@pytest.fixture
def console(marketer_a) -> Client:  # noqa: ANN001
    client = Client()
    client.force_login(marketer_a)
    return client


@pytest.mark.django_db
def test_marketer_sees_only_their_projects_versions_with_metrics(console, project_a, project_b):
    mine = _version(project_a[0], VersionStatus.ACTIVE, 0.3456)
    theirs = _version(project_b[0], VersionStatus.READY, 0.9)
    page = console.get(reverse("admin:recommendations_modelversion_changelist"))
    assert page.status_code == 200
    assert list(page.context["cl"].result_list) == [mine]
    assert b"0.346" in page.content and b"0.200" in page.content
    assert console.get(reverse("admin:recommendations_modelversion_change", args=[theirs.pk])).status_code == 302


@pytest.mark.django_db
def test_the_version_list_shows_coverage_gini_diversity_and_beta_and_older_versions_coverage(console, project_a):
    new = ModelVersion.objects.create(
        project=project_a[0], status=VersionStatus.ACTIVE, params={"debias": {"beta": 0.2}},
        metrics={"model_hr10": 0.28, "model_coverage10": 0.7585, "model_gini10": 0.7041, "model_ild10": 0.7695,
                 "itemknn_coverage10": 0.6922},
    )  # fmt: skip
    old = ModelVersion.objects.create(project=project_a[0], status=VersionStatus.RETIRED,
                                      metrics={"model_hr10": 0.27, "coverage": 0.6612})  # fmt: skip
    page = console.get(reverse("admin:recommendations_modelversion_changelist"))
    assert page.status_code == 200
    rows = {v.pk: v for v in page.context["cl"].result_list}
    assert set(rows) == {new.pk, old.pk}
    admin_ = page.context["cl"].model_admin
    assert [admin_.coverage(new), admin_.gini(new), admin_.ild(new), admin_.debias_beta(new)] == [
        "0.758", "0.704", "0.769", "0.2",
    ]  # fmt: skip
    assert [admin_.coverage(old), admin_.gini(old), admin_.debias_beta(old)] == ["0.661", "—", "—"]
    for text in (b"coverage@10", b"Gini@10", b"ILD@10 (item vectors)", b"0.758", b"0.704", b"0.661"):
        assert text in page.content


@pytest.mark.django_db
def test_marketer_activates_a_held_version_and_rolls_back(console, project_a, project_b):
    old = _version(project_a[0], VersionStatus.ACTIVE, 0.3, activated_at=timezone.now())
    held = _version(project_a[0], VersionStatus.READY, 0.1, held_reason="HR@10 0.1 is below")
    other = _version(project_b[0], VersionStatus.READY, 0.5)
    url = reverse("admin:recommendations_modelversion_changelist")
    console.post(url, {"action": "activate", "_selected_action": [held.pk]})
    held.refresh_from_db()
    old.refresh_from_db()
    assert (held.status, held.activated_by, held.held_reason) == ("active", "alice", "")
    assert old.status == "retired"
    # Another project's version is not in the marketer's queryset: nothing happens.
    console.post(url, {"action": "activate", "_selected_action": [other.pk]})
    other.refresh_from_db()
    assert other.status == "ready"
    console.post(url, {"action": "roll_back", "_selected_action": [held.pk]})
    old.refresh_from_db()
    held.refresh_from_db()
    assert (old.status, held.status) == ("active", "retired")


@pytest.mark.django_db
def test_a_failed_version_cannot_be_activated(console, project_a):
    active = _version(project_a[0], VersionStatus.ACTIVE, 0.3)
    failed = _version(project_a[0], VersionStatus.FAILED, 0.9)
    page = console.post(
        reverse("admin:recommendations_modelversion_changelist"),
        {"action": "activate", "_selected_action": [failed.pk]},
        follow=True,
    )
    assert f"Not activated: v{failed.pk} is failed." in [str(m) for m in page.context["messages"]]
    active.refresh_from_db()
    failed.refresh_from_db()
    assert (active.status, failed.status) == ("active", "failed")
