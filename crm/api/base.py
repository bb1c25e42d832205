"""Base classes for every API view over project data."""

from __future__ import annotations

from django.db.models import QuerySet
from rest_framework import viewsets
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from crm.api import params
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

    def handle_exception(self, exc: Exception) -> Response:
        # A parameter refused by crm.api.params: DRF's 400, naming it.
        if isinstance(exc, params.BadParameter):
            exc = ValidationError({exc.field: [exc.message]})
        return super().handle_exception(exc)  # type: ignore[misc]


class IdCursorPagination(CursorPagination):
    """Cursor pagination in primary-key order, for every list endpoint.

    DRF checks a cursor's encoding but not its position, which goes into the
    query as it is: a forged `p=abc` failed there as a ValueError (a 500). The
    position is parsed here as the id it must be, and any cursor this API did
    not give is a 400 naming `cursor` (DRF answers 404 "Invalid cursor")."""

    ordering = "id"

    def decode_cursor(self, request: Request) -> Cursor | None:
        name = self.cursor_query_param
        invalid = params.BadParameter(name, f"{name} is not one this API gave (use the next and previous links)")
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            raise invalid from None
        if cursor is not None and cursor.position is not None:
            try:
                params.integer(name, cursor.position, minimum=0, maximum=params.MAX_ID)
            except params.BadParameter:
                raise invalid from None
        return cursor


class ProjectScopedViewSet(ProjectScopedMixin, viewsets.GenericViewSet):
    authentication_classes = [SecretKeyAuthentication]
    permission_classes = [HasProject]
    throttle_classes = [SecretKeyRateThrottle]
