"""The console's model versions: metrics side by side, activate and roll back."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.http import HttpRequest

from catalog.models import Product
from crm.admin_base import CappedCountPaginator, ProjectScopedAdmin, ReadOnlyFactsAdmin
from recommendations import services
from recommendations.models import (
    ModelVersion,
    RecommendationDailyStat,
    RecommendationServed,
    RecommendedProductDay,
)


def _metric(name: str, label: str, *, older: str | None = None):  # noqa: ANN202 - an admin display callable
    """A metric column; `older` is the key versions trained before it was renamed used."""

    @admin.display(description=label)
    def show(admin_: ModelVersionAdmin, obj: ModelVersion) -> str:
        metrics = obj.metrics or {}
        value = metrics.get(name, metrics.get(older) if older else None)
        return "—" if value is None else f"{value:.3f}"

    return show


@admin.register(ModelVersion)
class ModelVersionAdmin(ProjectScopedAdmin):
    list_display = [
        "__str__", "project", "status", "model_hr", "model_ndcg", "coverage", "gini", "ild", "debias_beta",
        "itemknn_hr", "itemknn_coverage", "popularity_hr", "interactions", "products", "created_at", "held_reason",
    ]  # fmt: skip
    list_select_related = ["project"]
    list_filter = ["project", "status", "kind"]
    actions = ["activate", "roll_back"]
    readonly_fields = [f.name for f in ModelVersion._meta.concrete_fields]

    model_hr = _metric("model_hr10", "HR@10")
    model_ndcg = _metric("model_ndcg10", "NDCG@10")
    itemknn_hr = _metric("itemknn_hr10", "item-kNN HR@10")
    popularity_hr = _metric("popularity_hr10", "popularity HR@10")
    coverage = _metric("model_coverage10", "coverage@10", older="coverage")
    gini = _metric("model_gini10", "Gini@10")
    ild = _metric("model_ild10", "ILD@10 (item vectors)")
    itemknn_coverage = _metric("itemknn_coverage10", "item-kNN coverage@10", older="itemknn_coverage")

    @admin.display(description="debias β")
    def debias_beta(self, obj: ModelVersion) -> str:
        beta = ((obj.params or {}).get("debias") or {}).get("beta")
        return "—" if beta is None else f"{beta:g}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # versions come from training runs

    @admin.action(description="Activate the selected version (serve it now)")
    def activate(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to activate.", messages.ERROR)
            return
        version = queryset.get()
        try:
            services.modelversion_activate(version_id=version.pk, by=request.user.get_username())
        except services.ActivationError as exc:
            self.message_user(request, f"Not activated: {exc}.", messages.ERROR)
            return
        self.message_user(request, f"v{version.pk} now serves {version.project}.", messages.SUCCESS)

    @admin.action(description="Roll back: serve the previously active version of these projects")
    def roll_back(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        for project_id in sorted(set(queryset.values_list("project_id", flat=True))):
            try:
                version = services.modelversion_rollback(project_id=project_id, by=request.user.get_username())
            except services.ActivationError as exc:
                self.message_user(request, f"Project {project_id}: {exc}.", messages.ERROR)
                continue
            self.message_user(request, f"Project {project_id}: v{version.pk} serves again.", messages.SUCCESS)


# --- Recommendation tracking (recommendations/tracking/) ---------------------------------


@admin.register(RecommendationDailyStat)
class RecommendationDailyStatAdmin(ReadOnlyFactsAdmin):
    """Per day and surface: lists, impressions, clicks, CTR per slot, conversions,
    and the catalog coverage of what was recommended. Counts come in the row's
    query (subqueries), not one query per row."""

    list_display = [
        "day", "surface", "project", "lists", "impressions_shown", "clicks_shown", "ctr", "ctr_per_slot",
        "conversions", "coverage",
    ]  # fmt: skip
    list_filter = ["project", "surface", "day"]
    list_select_related = ["project"]
    ordering = ["-day", "surface"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[RecommendationDailyStat]:
        recommended = (
            RecommendedProductDay.objects.filter(
                project=OuterRef("project"), day=OuterRef("day"), surface=OuterRef("surface")
            )
            .order_by()
            .values("project")
            .annotate(n=Count("*"))
            .values("n")
        )
        catalog = (
            Product.objects.filter(project=OuterRef("project"), is_active=True)
            .order_by()
            .values("project")
            .annotate(n=Count("*"))
            .values("n")
        )
        return super().get_queryset(request).annotate(recommended=Subquery(recommended), catalog_size=Subquery(catalog))

    @admin.display(description="impressions")
    def impressions_shown(self, obj: RecommendationDailyStat) -> int:
        return obj.impressions

    @admin.display(description="clicks")
    def clicks_shown(self, obj: RecommendationDailyStat) -> int:
        return obj.clicks

    @admin.display(description="CTR")
    def ctr(self, obj: RecommendationDailyStat) -> str:
        return f"{obj.clicks / obj.impressions:.2%}" if obj.impressions else "—"

    @admin.display(description="CTR per slot (1, 2, …)")
    def ctr_per_slot(self, obj: RecommendationDailyStat) -> str:
        clicks = list(obj.slot_clicks) + [0] * (len(obj.slot_impressions) - len(obj.slot_clicks))
        return " · ".join(
            f"{c / n:.1%}" if n else "—" for n, c in zip(obj.slot_impressions[:10], clicks[:10], strict=False)
        )

    @admin.display(description="catalog coverage")
    def coverage(self, obj: RecommendationDailyStat) -> str:
        if not getattr(obj, "catalog_size", None):
            return "—"
        return f"{(obj.recommended or 0) / obj.catalog_size:.1%} ({obj.recommended or 0} of {obj.catalog_size})"


@admin.register(RecommendationServed)
class RecommendationServedAdmin(ReadOnlyFactsAdmin):
    list_display = ["id", "surface", "user_ref", "project", "created_at"]
    list_filter = ["project", "surface"]
    list_select_related = ["project"]
    search_fields = ["=id", "=user_ref"]
    ordering = ["-created_at"]
    show_full_result_count = False
    paginator = CappedCountPaginator
