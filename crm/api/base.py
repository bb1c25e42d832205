"""Base classes for every API view over project data."""

from __future__ import annotations

from django.db.models import QuerySet
from rest_framework import viewsets
from rest_framework.request import Request

from crm.authentication import HasProject, SecretKeyAuthentication, SecretKeyRateThrottle
from crm.models import Project


class ProjectScopedMixin:
    """Scopes `get_queryset()` to the authenticated project. Every API view over
    project data derives from this, so a forgotten filter cannot leak another
    project's rows: lookups of another project's ids answer 404."""

    request: Request

    @property
    def project(self) -> Project:
        return self.request.auth  # type: ignore[return-value]

    def get_queryset(self) -> QuerySet:
        return super().get_queryset().filter(project_id=self.project.pk)  # type: ignore[misc]


class ProjectScopedViewSet(ProjectScopedMixin, viewsets.GenericViewSet):
    authentication_classes = [SecretKeyAuthentication]
    permission_classes = [HasProject]
    throttle_classes = [SecretKeyRateThrottle]
