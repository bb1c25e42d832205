from __future__ import annotations

from typing import Any

from rest_framework import serializers

from crm.models import Device, Event, Profile
from crm.storable import json_problem


class DeviceOutSerializer(serializers.ModelSerializer):
    class Meta:
        model = Device
        fields = ["device_id", "platform", "push_token", "app_version", "os_name", "os_version", "last_seen"]


class ProfileOutSerializer(serializers.ModelSerializer):
    anonymous_ids = serializers.SerializerMethodField()
    devices = DeviceOutSerializer(many=True, read_only=True)

    class Meta:
        model = Profile
        fields = [
            "user_id",
            "anonymous_ids",
            "traits",
            "email",
            "phone",
            "name",
            "gender",
            "birth_date",
            "locale",
            "country",
            "city",
            "timezone",
            "first_seen",
            "last_seen",
            "recent_viewed",
            "recent_purchased",
            "email_subscribed",
            "push_subscribed",
            "sms_subscribed",
            "devices",
        ]

    def get_anonymous_ids(self, profile: Profile) -> list[str]:
        # Prefetched by the view: no query per row.
        return [a.anonymous_id for a in profile.anonymous_ids.all()]


class ProfileUpdateSerializer(serializers.Serializer):
    """Fields a server may set directly; traits merge into the existing ones."""

    traits = serializers.DictField(required=False)
    email_subscribed = serializers.BooleanField(required=False, allow_null=True)
    push_subscribed = serializers.BooleanField(required=False, allow_null=True)
    sms_subscribed = serializers.BooleanField(required=False, allow_null=True)

    def validate_traits(self, traits: dict[str, Any]) -> dict[str, Any]:
        problem = json_problem(traits, path="traits")
        if problem:
            raise serializers.ValidationError(problem)
        return traits


class EventOutSerializer(serializers.ModelSerializer):
    class Meta:
        model = Event
        fields = ["message_id", "type", "name", "properties", "timestamp", "received_at"]
