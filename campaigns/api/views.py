"""Segments and campaign results API (secret key). Thin: parse, call a service or
selector, format.

`/api/v1/segments` (CRUD), `POST /api/v1/segments/preview`,
`GET /api/v1/segments/{id}/members`, `GET /api/v1/users/{user_id}/segments`,
`GET /api/v1/campaigns/{id}/report`."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404
from rest_framework import generics, mixins, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.api.serializers import (
    MemberOutSerializer,
    PreviewInSerializer,
    ProfileSegmentOutSerializer,
    SegmentInSerializer,
    SegmentListSerializer,
    SegmentOutSerializer,
)
from campaigns.models import Campaign, Segment, SegmentMembership
from campaigns.results.report import campaign_report, report_json
from campaigns.segments import selectors
from campaigns.segments.membership import SegmentInUse, segment_delete, segment_save
from campaigns.segments.rules import RulesInvalid
from crm.api import params
from crm.api.base import IdCursorPagination, ProjectScopedMixin, ProjectScopedViewSet
from crm.authentication import HasProject, SecretKeyAuthentication, SecretKeyRateThrottle
from crm.models import Profile


def rules_errors(exc: RulesInvalid) -> ValidationError:
    """The 400 of a rule tree that cannot be compiled: one message per bad path."""
    return ValidationError({"rules": [f"{path}: {message}" for path, message in exc.errors]})


class SegmentViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    ProjectScopedViewSet,
):
    """`GET|POST /api/v1/segments`, `GET|PUT|PATCH|DELETE /api/v1/segments/{id}`.
    Writes go through segment_save, which validates the rules, stores what they
    depend on and queues the full computation (status `pending`)."""

    queryset = Segment.objects.all()
    serializer_class = SegmentOutSerializer
    pagination_class = IdCursorPagination
    lookup_value_regex = "[0-9]+"

    def get_serializer_class(self) -> type:
        return SegmentListSerializer if self.action == "list" else SegmentOutSerializer

    def _save(self, values: dict[str, Any], segment_id: int | None) -> Segment:
        try:
            return segment_save(project_id=self.project.pk, segment_id=segment_id, **values)
        except RulesInvalid as exc:
            raise rules_errors(exc) from exc

    def create(self, request: Request) -> Response:
        data = SegmentInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        segment = self._save(dict(data.validated_data), None)
        return Response(SegmentOutSerializer(segment).data, status=status.HTTP_201_CREATED)

    def update(self, request: Request, pk: str, partial: bool = False) -> Response:
        segment = self.get_object()
        data = SegmentInSerializer(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        values = {"name": segment.name, "description": segment.description, "rules": segment.rules}
        values.update(data.validated_data)
        return Response(SegmentOutSerializer(self._save(values, segment.pk)).data)

    def partial_update(self, request: Request, pk: str) -> Response:
        return self.update(request, pk, partial=True)

    def destroy(self, request: Request, pk: str) -> Response:
        segment = self.get_object()
        try:
            segment_delete(project_id=self.project.pk, segment_id=segment.pk)
        except SegmentInUse as exc:
            # Deleting it would change the segments whose rules refer to it.
            return Response({"detail": str(exc), "used_by": exc.used_by}, status=status.HTTP_409_CONFLICT)
        return Response(status=status.HTTP_204_NO_CONTENT)


class _ProjectAPIView(ProjectScopedMixin, APIView):
    authentication_classes = [SecretKeyAuthentication]
    permission_classes = [HasProject]
    throttle_classes = [SecretKeyRateThrottle]


class SegmentPreviewView(_ProjectAPIView):
    """`POST /api/v1/segments/preview` `{"rules": …}`: the count, the count
    reachable per channel and a sample of 20 profiles with the conditions they
    met (selectors.segment_preview); nothing is stored."""

    def post(self, request: Request) -> Response:
        data = PreviewInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            preview = selectors.segment_preview(project_id=self.project.pk, rules=data.validated_data["rules"])
        except RulesInvalid as exc:
            raise rules_errors(exc) from exc
        return Response(preview.as_json())


class MemberCursorPagination(IdCursorPagination):
    # The unique (segment, profile) index serves this order.
    ordering = "profile_id"


class SegmentMembersView(ProjectScopedMixin, generics.ListAPIView):
    """`GET /api/v1/segments/{id}/members`: the stored members in profile-id
    order, cursor-paginated (`?cursor=`, 100 a page)."""

    authentication_classes = [SecretKeyAuthentication]
    permission_classes = [HasProject]
    throttle_classes = [SecretKeyRateThrottle]
    serializer_class = MemberOutSerializer
    pagination_class = MemberCursorPagination

    def get_queryset(self) -> QuerySet[SegmentMembership]:
        # Not the mixin's filter (memberships have no project column): the
        # segment is looked up in the caller's project, another's answers 404.
        segment = get_object_or_404(Segment.objects.filter(project_id=self.project.pk), pk=self.kwargs["pk"])
        return selectors.segment_members(project_id=self.project.pk, segment_id=segment.pk)


class UserSegmentsView(_ProjectAPIView):
    """`GET /api/v1/users/{user_id}/segments`: the segments the user is a stored
    member of, by name; the user as the recommendations route names it (the
    customer's user id); an unknown one, or another project's, answers 404."""

    def get(self, request: Request, user_id: str) -> Response:
        params.text("user_id", user_id)
        profile = get_object_or_404(Profile.objects.filter(project_id=self.project.pk), user_id=user_id)
        rows = selectors.profile_segments(project_id=self.project.pk, profile_id=profile.pk)
        return Response({"user_id": user_id, "segments": ProfileSegmentOutSerializer(rows, many=True).data})


class CampaignReportView(_ProjectAPIView):
    """`GET /api/v1/campaigns/{id}/report`: the campaign's results as JSON
    (campaigns.results.report.report_json), from its counters; another
    project's campaign, or none, answers 404."""

    def get(self, request: Request, pk: int) -> Response:
        if pk > params.MAX_ID:  # no such id (and past bigint, which the query would refuse with a 500)
            raise Http404
        campaign = get_object_or_404(Campaign.objects.filter(project_id=self.project.pk), pk=pk)
        return Response(report_json(campaign_report(campaign=campaign)))
