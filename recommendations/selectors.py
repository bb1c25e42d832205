"""Reads of model versions: the one a project serves (only the ACTIVE version
is), and what the command and the console show of a version. Serving reads the
versions' lists itself (recommendations.serving.lists)."""

from __future__ import annotations

from typing import Any

from recommendations.models import ModelVersion


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
