"""The training pipeline against the database: collection, a full run, versions
with guarded activation, failures, retries, online updates with cold start."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from catalog.csvfile import ProductIn
from catalog.services import products_upsert
from crm import services as crm_services
from crm.models import Event, EventNameMapping, Profile
from crm.selectors import event_name_mappings_cache_clear
from recommendations import services, serving
from recommendations.models import ModelVersion, RelatedProduct, TrendingProduct, VersionKind, VersionStatus
from recommendations.training import pipeline
from recommendations.training.collect import collect_interactions, training_window

STAGES = {"collect", "load", "train", "tune", "related", "evaluate", "trending"}
METRICS = {
    f"{who}_{metric}"
    for who in ("model", "popularity", "itemknn")
    for metric in ("hr10", "ndcg10", "coverage10", "gini10", "ild10")
} | {"eval_users"}


def settings_betas() -> list[float]:
    from django.conf import settings

    return sorted(settings.RECS_DEBIAS_BETAS)


def _train(project_id: int, *extra: str, capsys: pytest.CaptureFixture) -> dict:
    call_command("train_recommendations", "--project", str(project_id), "--no-progress", *extra)
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _lists(version_id: int) -> dict[str, list[tuple[str, int, float]]]:
    out: dict[str, list] = {}
    for r in RelatedProduct.objects.filter(model_version_id=version_id).order_by("product_id", "rank"):
        out.setdefault(r.product_id, []).append((r.related_product_id, r.rank, r.score))
    return out


def _active_version(*, project_id: int) -> ModelVersion | None:
    return ModelVersion.objects.filter(project_id=project_id, status=VersionStatus.ACTIVE).first()


def _active_related(project_id: int, product_id: str) -> list[tuple[str, float]]:
    """The related list of a product in the project's active version, best first."""
    version = _active_version(project_id=project_id)
    rows = RelatedProduct.objects.filter(model_version=version, product_id=product_id).order_by("rank")
    return list(rows.values_list("related_product_id", "score")) if version else []


def _active_trending(project_id: int, category: str = "") -> list[tuple[str, float]]:
    version = _active_version(project_id=project_id)
    rows = TrendingProduct.objects.filter(model_version=version, category=category).order_by("rank")
    return list(rows.values_list("product_id", "score")) if version else []


def _events(project_id: int, user: str, rows: list[tuple[str, dict, datetime]]) -> None:
    profile = crm_services.profile_upsert(project_id=project_id, user_id=user)
    crm_services.events_insert_new(
        project_id=project_id,
        rows=[
            [profile.pk, "track", name, props, {}, ts, ts, f"{user}-{i}"] for i, (name, props, ts) in enumerate(rows)
        ],
    )


@pytest.mark.django_db
def test_collector_writes_views_carts_and_each_ordered_product_in_bounded_chunks(project_a, project_b, settings):
    project = project_a[0]
    t = datetime(2026, 2, 1, tzinfo=UTC)
    _events(project.pk, "u1", [
        ("Product Viewed", {"product_id": "A"}, t),
        ("Product Added", {"product_id": "A"}, t + timedelta(minutes=1)),
        ("Order Completed", {"products": [{"product_id": "A"}, {"product_id": "B"}, {"sku": "no id"}]},
         t + timedelta(minutes=2)),
        ("Signed Up", {"product_id": "ignored"}, t),
        ("Product Viewed", {"name": "no product id"}, t),
    ])  # fmt: skip
    _events(project_b[0].pk, "other", [("Product Viewed", {"product_id": "SECRET"}, t)])
    settings.RECS_COLLECT_BATCH = 2  # two event ids per query: several chunks
    got = collect_interactions(project_id=project.pk, folder="recs/test", since=None, until=t + timedelta(days=1))
    rows = []
    for path in got.paths:
        with default_storage.open(path, "rb") as fh:
            rows += [line.split(",") for line in gzip.decompress(fh.read()).decode().splitlines()]
    profile = Profile.objects.get(project=project, user_id="u1")
    assert [(int(r[1]), int(r[3]), r[4]) for r in rows] == [
        (profile.pk, 1, "A"), (profile.pk, 2, "A"), (profile.pk, 3, "A"), (profile.pk, 3, "B"),
    ]  # fmt: skip
    assert got.rows == 4 and len(got.paths) >= 2


@pytest.mark.django_db
def test_training_window_widens_back_until_enough_interactions(project_a):
    project = project_a[0]
    now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    for days_ago, count in ((1, 3), (5, 4), (20, 5)):
        ts = now - timedelta(days=days_ago)
        _events(project.pk, f"u{days_ago}", [("Product Viewed", {"product_id": "A"}, ts)] * count)
    day = datetime(2026, 3, 9, tzinfo=UTC)
    assert training_window(project_id=project.pk, min_events=3, now=now) == day
    assert training_window(project_id=project.pk, min_events=4, now=now) == day - timedelta(days=4)
    assert training_window(project_id=project.pk, min_events=12, now=now) == day - timedelta(days=19)
    assert training_window(project_id=project.pk, min_events=13, now=now) is None  # all history


@pytest.mark.django_db
def test_full_run_serves_twenty_related_products_per_product_with_metrics_and_artifacts(project_a, store_a, capsys):
    project = project_a[0]
    summary = _train(project.pk, capsys=capsys)
    version = ModelVersion.objects.get(pk=summary["version"])
    assert summary["status"] == "active" and version.status == VersionStatus.ACTIVE
    assert set(summary["stages"]) == STAGES and set(summary["metrics"]) == METRICS
    assert summary["products"] == 40 and summary["interactions"] == version.interactions > 1500
    # Dissimilarity 1 - cos lies in [0, 2]; every other metric is a share.
    assert all(0.0 <= v <= 1.0 for k, v in summary["metrics"].items() if k != "eval_users" and "ild" not in k)
    assert all(0.0 <= v <= 2.0 for k, v in summary["metrics"].items() if "ild" in k)
    debias = version.params["debias"]
    assert debias["beta"] in settings_betas() and [row["beta"] for row in debias["validation"]] == settings_betas()
    # Every evaluated user (3+ products) has a validation item too.
    assert debias["validation_users"] == summary["metrics"]["eval_users"] > 0
    lists = _lists(version.pk)
    assert len(lists) == 40
    for product_id, related in lists.items():
        assert [rank for _, rank, _ in related] == list(range(1, 21))
        assert product_id not in {r for r, _, _ in related}
        scores = [s for _, _, s in related]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-5
    assert _active_related(project.pk, "SKU-000001") == [(r, s) for r, _, s in lists["SKU-000001"]]
    overall = _active_trending(project.pk)
    assert len(overall) == len(TrendingProduct.objects.filter(model_version=version, category="")) > 0
    assert [s for _, s in overall] == sorted((s for _, s in overall), reverse=True)
    assert _active_trending(project.pk, category="Electronics")
    for name in ("meta.json", "arrays.npz", "model.weights.npz", "data/part-00000.csv.gz"):
        assert default_storage.exists(f"recs/{project.pk}/{version.pk}/{name}")
    # The schedules exist after the first training: 03:00 in the project's zone, every 15 minutes.
    nightly = PeriodicTask.objects.get(task=services.FULL_TASK)
    online = PeriodicTask.objects.get(task=services.ONLINE_TASK)
    assert (nightly.crontab.hour, nightly.crontab.minute, str(nightly.crontab.timezone)) == ("3", "0", "UTC")
    assert (online.interval.every, online.interval.period, online.queue) == (15, "minutes", "ml")
    assert json.loads(nightly.kwargs) == {"project_id": project.pk} and nightly.queue == "ml"


@pytest.mark.django_db
def test_schedules_follow_the_project_time_zone_and_keep_a_marketers_change(make_project):
    project, _ = make_project("Tokyo shop", "Asia/Tokyo")
    nightly, _ = services.recs_schedules_ensure(project_id=project.pk)
    assert str(nightly.crontab.timezone) == "Asia/Tokyo"
    nightly.enabled = False
    nightly.save()
    again, _ = services.recs_schedules_ensure(project_id=project.pk)
    assert again.pk == nightly.pk and again.enabled is False
    assert PeriodicTask.objects.filter(kwargs=json.dumps({"project_id": project.pk})).count() == 2


@pytest.mark.django_db
def test_a_failed_run_leaves_the_active_version_serving(project_a, store_a, capsys, monkeypatch):
    project = project_a[0]
    first = _train(project.pk, capsys=capsys)
    served = _active_related(project.pk, "SKU-000002")

    def broken(**kwargs):  # noqa: ANN003, ANN202
        raise RuntimeError("out of memory")

    monkeypatch.setattr(pipeline, "train_model", broken)
    with pytest.raises(CommandError, match="out of memory"):
        _train(project.pk, capsys=capsys)
    failed = ModelVersion.objects.exclude(pk=first["version"]).get()
    assert failed.status == VersionStatus.FAILED and failed.error == "RuntimeError: out of memory"
    assert not RelatedProduct.objects.filter(model_version=failed).exists()
    assert _active_version(project_id=project.pk).pk == first["version"]
    assert _active_related(project.pk, "SKU-000002") == served


@pytest.mark.django_db
def test_a_worse_version_waits_for_a_marketer_and_rollback_restores_the_previous(project_a, store_a, capsys):
    project = project_a[0]
    first = _train(project.pk, capsys=capsys)
    ModelVersion.objects.filter(pk=first["version"]).update(metrics={"model_hr10": 0.99})
    second = _train(project.pk, capsys=capsys)
    assert second["status"] == "ready"
    assert second["held_reason"].startswith("HR@10 ") and "below the active" in second["held_reason"]
    assert _active_version(project_id=project.pk).pk == first["version"]
    services.modelversion_activate(version_id=second["version"], by="alice")
    assert _active_version(project_id=project.pk).pk == second["version"]
    assert ModelVersion.objects.get(pk=first["version"]).status == VersionStatus.RETIRED
    back = services.modelversion_rollback(project_id=project.pk, by="alice")
    assert back.pk == first["version"] and back.activated_by == "alice"
    assert ModelVersion.objects.get(pk=second["version"]).status == VersionStatus.RETIRED
    assert _active_related(project.pk, "SKU-000003") == [(r, s) for r, _, s in _lists(first["version"])["SKU-000003"]]


@pytest.mark.django_db
def test_a_retried_run_starts_over_and_a_finished_one_is_left_alone(project_a, store_a):
    project = project_a[0]
    version = services.modelversion_start(project_id=project.pk)
    # An earlier attempt died half-way through writing its lists.
    RelatedProduct.objects.create(project=project, model_version=version, product_id="SKU-000001",
                                  related_product_id="SKU-000002", rank=1, score=0.5)  # fmt: skip
    ModelVersion.objects.filter(pk=version.pk).update(status=VersionStatus.TRAINING)
    assert services.modelversion_start(project_id=project.pk) is None  # one run at a time
    done = pipeline.run_full(version_id=version.pk)
    assert done.status == VersionStatus.ACTIVE
    rows = RelatedProduct.objects.filter(model_version=version).count()
    assert rows == 40 * 20
    finished_at = done.finished_at
    again = pipeline.run_full(version_id=version.pk)  # a redelivered task
    assert again.finished_at == finished_at
    assert RelatedProduct.objects.filter(model_version=version).count() == rows


@pytest.mark.django_db
def test_online_update_refreshes_what_changed_and_gives_a_new_product_related_products(project_a, store_a, capsys):
    project = project_a[0]
    with pytest.raises(CommandError, match="no active version"):
        _train(project.pk, "--online", capsys=capsys)
    full = _train(project.pk, capsys=capsys)
    products_upsert(project_id=project.pk, products=[
        ProductIn(product_id="SKU-NEW", name="Acme Pro Smartphone", categories=["Electronics", "Phones"],
                  price=Decimal("199.00"), description="A smartphone by Acme for phones lovers."),
    ])  # fmt: skip
    now = datetime.now(UTC)
    _events(project.pk, "fresh", [
        ("Product Viewed", {"product_id": "SKU-000001"}, now - timedelta(minutes=2)),
        ("Product Viewed", {"product_id": "SKU-000002"}, now - timedelta(minutes=1)),
    ])  # fmt: skip
    assert services.online_update_due(project_id=project.pk)
    online = _train(project.pk, "--online", capsys=capsys)
    version = ModelVersion.objects.get(pk=online["version"])
    assert (version.kind, version.status, version.parent_id) == (VersionKind.ONLINE, "active", full["version"])
    assert version.interactions == 2 and version.users == 1 and version.products == 41
    assert version.metrics["inherited_from"] == full["version"] and version.metrics["refreshed_products"] == 3
    assert ModelVersion.objects.get(pk=full["version"]).status == VersionStatus.RETIRED
    old, new = _lists(full["version"]), _lists(version.pk)
    assert len(new["SKU-NEW"]) == 20  # cold start: nobody has touched it
    assert "SKU-NEW" not in {r for r, _, _ in new["SKU-NEW"]}
    unchanged = set(old) - {"SKU-000001", "SKU-000002"}
    assert {p: new[p] for p in unchanged} == {p: old[p] for p in unchanged}
    assert version.last_event_id > ModelVersion.objects.get(pk=full["version"]).last_event_id
    assert not services.online_update_due(project_id=project.pk)


@pytest.mark.django_db
def test_another_projects_versions_and_lists_are_invisible(project_a, project_b, store_a, capsys):
    _train(project_a[0].pk, capsys=capsys)
    b = project_b[0].pk
    assert _active_version(project_id=b) is None
    assert _active_related(b, "SKU-000001") == []
    assert serving.related_lists(version_id=_active_version(project_id=project_a[0].pk).pk,
                                 product_ids=["SKU-000001"])["SKU-000001"]  # fmt: skip
    assert serving.user_state(project_id=b, user_id="user-0000001").model_version_id is None
    assert _active_trending(b) == []
    assert not ModelVersion.objects.filter(project_id=b).exists()


@pytest.mark.django_db
def test_command_rejects_an_unknown_project():
    with pytest.raises(CommandError, match="project 999 does not exist"):
        call_command("train_recommendations", "--project", "999")


@pytest.mark.django_db
def test_every_project_gets_its_schedules_once(make_project):
    from recommendations.tasks import recs_schedules_ensure_all_task

    first, _ = make_project("One")
    second, _ = make_project("Two")
    assert recs_schedules_ensure_all_task() == 2
    assert recs_schedules_ensure_all_task() == 0
    names = sorted(PeriodicTask.objects.filter(task__startswith="recommendations.train").values_list("name", flat=True))
    assert names == sorted(
        [
            f"recommendations: nightly training of project {first.pk}",
            f"recommendations: nightly training of project {second.pk}",
            f"recommendations: online update of project {first.pk}",
            f"recommendations: online update of project {second.pk}",
        ]
    )


@pytest.mark.django_db
def test_a_project_that_maps_its_own_event_names_trains_on_them(project_a, store_a, capsys):
    """Training reads events through the project's event-name mappings, as
    ingestion's recent items do: the same store under the app's own names gives
    the same interactions and a model that serves."""
    project = project_a[0]
    until = timezone.now() + timedelta(days=1)
    canonical = collect_interactions(project_id=project.pk, folder="recs/canonical", since=None, until=until).rows
    assert canonical > 1500
    renamed = {"Product Viewed": "Item Seen", "Product Added": "Basket Add", "Order Completed": "Checkout Done"}
    for name, own in renamed.items():
        Event.objects.filter(project=project, name=name).update(name=own)
    event_name_mappings_cache_clear()
    assert collect_interactions(project_id=project.pk, folder="recs/unmapped", since=None, until=until).rows == 0

    for name, own in renamed.items():
        EventNameMapping.objects.create(project=project, source_name=own, canonical_name=name)
    event_name_mappings_cache_clear()
    assert collect_interactions(project_id=project.pk, folder="recs/mapped", since=None, until=until).rows == canonical
    summary = _train(project.pk, capsys=capsys)
    assert (summary["status"], summary["interactions"]) == ("active", canonical)
    assert len(_active_related(project.pk, "SKU-000001")) == 20


@pytest.mark.django_db
def test_beta_is_tuned_without_the_test_items_and_the_model_never_sees_them(project_a, store_a, capsys, monkeypatch):
    """The first training and the tuning get the validation split; the test split's
    held-out (user, product) pairs are in neither, and only the figure reads them."""
    seen: dict = {"train": []}
    real_split, real_tune, real_train = pipeline.holdout_split, pipeline.debias_tune, pipeline.train_model

    def pairs(users, items) -> set[tuple[int, int]]:  # noqa: ANN001
        return set(zip(np.asarray(users).tolist(), np.asarray(items).tolist(), strict=True))

    def spy_split(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen["test"] = real_split(*args, **kwargs)
        return seen["test"]

    def spy_tune(*, validation, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen["validation"] = validation
        return real_tune(validation=validation, **kwargs)

    def spy_train(*, seqs, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen["train"].append(pairs(seqs.users, seqs.items))
        return real_train(seqs=seqs, **kwargs)

    monkeypatch.setattr(pipeline, "holdout_split", spy_split)
    monkeypatch.setattr(pipeline, "debias_tune", spy_tune)
    monkeypatch.setattr(pipeline, "train_model", spy_train)
    summary = _train(project_a[0].pk, capsys=capsys)
    test, validation = seen["test"], seen["validation"]
    test_pairs = pairs(test.eval_users, test.heldout)
    validation_pairs = pairs(validation.eval_users, validation.heldout)
    assert len(test_pairs) == len(validation_pairs) == summary["metrics"]["eval_users"] > 0
    assert not test_pairs & pairs(validation.train.users, validation.train.items)
    assert not test_pairs & validation_pairs
    # Two trainings: on the validation split's training part, then the warm refit that adds
    # the validation items back; neither has a test item.
    first, refit = seen["train"]
    assert not test_pairs & first and not validation_pairs & first
    assert validation_pairs <= refit and not test_pairs & refit
    assert ModelVersion.objects.get(pk=summary["version"]).params["refit"]["examples"] > 0


@pytest.mark.django_db
def test_a_project_whose_profiles_have_no_demographics_still_trains(project_a, store_a, capsys):
    project = project_a[0]
    blank = Profile.objects.filter(project=project).update(
        gender="", birth_date=None, country="", city="", locale="", timezone="", traits={}
    )
    assert blank == 60
    summary = _train(project.pk, capsys=capsys)
    assert summary["status"] == "active" and set(summary["metrics"]) == METRICS
    assert RelatedProduct.objects.filter(model_version_id=summary["version"]).count() == 40 * 20


@pytest.mark.django_db
def test_the_activation_guard_reads_hr10_only_not_coverage(project_a, store_a, capsys):
    """Better coverage does not let a version with a worse HR@10 serve by itself."""
    project = project_a[0]
    first = _train(project.pk, capsys=capsys)
    ModelVersion.objects.filter(pk=first["version"]).update(
        metrics={**first["metrics"], "model_hr10": first["metrics"]["model_hr10"] + 0.0201, "model_coverage10": 0.0}
    )
    second = _train(project.pk, capsys=capsys)
    assert second["status"] == "ready" and second["metrics"]["model_coverage10"] > 0.0
    assert _active_version(project_id=project.pk).pk == first["version"]
