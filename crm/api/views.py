"""Profiles API (secret key). Thin: parse, call a service or selector, format."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from crm import services
from crm.api import params
from crm.api.base import IdCursorPagination, ProjectScopedViewSet
from crm.api.serializers import EventOutSerializer, ProfileOutSerializer, ProfileUpdateSerializer
from crm.models import AnonymousId, Device, Profile
from crm.selectors import profile_events


class ProfileViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    """`GET /api/v1/profiles`, `GET|PATCH /api/v1/profiles/{user_id}`,
    `GET /api/v1/profiles/{user_id}/events`."""

    queryset = Profile.objects.all()
    serializer_class = ProfileOutSerializer
    pagination_class = IdCursorPagination
    lookup_field = "user_id"
    lookup_value_regex = "[^/]+"

    def get_queryset(self) -> QuerySet[Profile]:
        qs = (
            super()
            .get_queryset()
            .prefetch_related(
                Prefetch("anonymous_ids", queryset=AnonymousId.objects.only("profile_id", "anonymous_id")),
                Prefetch("devices", queryset=Device.objects.order_by("id")),
            )
        )
        email = self.request.query_params.get("email")
        if email:
            qs = qs.filter(email__iexact=params.text("email", email))
        return qs

    def partial_update(self, request: Request, user_id: str) -> Response:
        profile = self.get_object()
        data = ProfileUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if "traits" in values:
            services.profile_upsert(project_id=self.project.pk, user_id=profile.user_id, traits=values["traits"])
        for channel in ("email", "push", "sms"):
            if f"{channel}_subscribed" in values:
                services.profile_set_subscription(
                    profile_id=profile.pk, channel=channel, subscribed=values[f"{channel}_subscribed"]
                )
        return Response(ProfileOutSerializer(self.get_queryset().get(pk=profile.pk)).data)

    @action(detail=True, methods=["get"])
    def events(self, request: Request, user_id: str) -> Response:
        profile = self.get_object()
        limit = params.integer("limit", request.query_params.get("limit", "50"), minimum=1, maximum=500)
        events = profile_events(profile_id=profile.pk, limit=limit)
        return Response({"events": EventOutSerializer(events, many=True).data})
