"""The console's model versions: metrics side by side, activate and roll back."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from crm.admin_base import ProjectScopedAdmin
from recommendations import services
from recommendations.models import ModelVersion


def _metric(name: str, label: str):  # noqa: ANN202 - an admin display callable
    @admin.display(description=label)
    def show(admin_: ModelVersionAdmin, obj: ModelVersion) -> str:
        value = (obj.metrics or {}).get(name)
        return "—" if value is None else f"{value:.3f}"

    return show


@admin.register(ModelVersion)
class ModelVersionAdmin(ProjectScopedAdmin):
    list_display = [
        "__str__", "project", "status", "model_hr", "model_ndcg", "itemknn_hr", "popularity_hr", "coverage",
        "interactions", "products", "created_at", "held_reason",
    ]  # fmt: skip
    list_select_related = ["project"]
    list_filter = ["project", "status", "kind"]
    actions = ["activate", "roll_back"]
    readonly_fields = [f.name for f in ModelVersion._meta.concrete_fields]

    model_hr = _metric("model_hr10", "HR@10")
    model_ndcg = _metric("model_ndcg10", "NDCG@10")
    itemknn_hr = _metric("itemknn_hr10", "item-kNN HR@10")
    popularity_hr = _metric("popularity_hr10", "popularity HR@10")
    coverage = _metric("coverage", "coverage")

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
