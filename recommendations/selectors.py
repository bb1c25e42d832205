"""Reads for serving and the console: the active version's related and trending
products. Every read names the project, and only the ACTIVE version is served."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from recommendations.models import ModelVersion, RelatedProduct, TrendingProduct, VersionStatus


def modelversion_active(*, project_id: int) -> ModelVersion | None:
    """Index model_version_project_status."""
    return ModelVersion.objects.filter(project_id=project_id, status=VersionStatus.ACTIVE).first()


def modelversions(*, project_id: int) -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(project_id=project_id).order_by("-id")


def related_products(*, project_id: int, product_id: str, limit: int = 20) -> list[tuple[str, float]]:
    """The active version's related products of one product, best first."""
    version = modelversion_active(project_id=project_id)
    if version is None:
        return []
    rows = RelatedProduct.objects.filter(model_version=version, product_id=product_id).order_by("rank")[:limit]
    return [(r.related_product_id, r.score) for r in rows]


def trending_products(*, project_id: int, category: str = "", limit: int = 20) -> list[tuple[str, float]]:
    """The active version's trending products, overall ("") or in one category
    (any level of the category path, case as in the catalog)."""
    version = modelversion_active(project_id=project_id)
    if version is None:
        return []
    rows = TrendingProduct.objects.filter(model_version=version, category=category).order_by("rank")[:limit]
    return [(r.product_id, r.score) for r in rows]


def modelversion_summary(version: ModelVersion) -> dict[str, Any]:
    """What the command prints and the admin shows of a version: one shape."""
    return {
        "version": version.pk,
        "project": version.project_id,
        "kind": version.kind,
        "status": version.status,
        "held_reason": version.held_reason,
        "error": version.error,
        "data_from": version.data_from.isoformat() if version.data_from else None,
        "data_to": version.data_to.isoformat() if version.data_to else None,
        "interactions": version.interactions,
        "users": version.users,
        "products": version.products,
        "stages": version.stage_seconds,
        "total_s": round(sum(version.stage_seconds.values()), 2),
        "metrics": version.metrics,
        "artifact_path": version.artifact_path,
    }
