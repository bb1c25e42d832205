from __future__ import annotations

from typing import Any

from rest_framework import serializers

from campaigns.models import Segment
from crm.storable import json_problem, text_problem


class SegmentOutSerializer(serializers.ModelSerializer):
    class Meta:
        model = Segment
        fields = [
            "id",
            "name",
            "description",
            "rules",
            "rules_version",
            "status",
            "progress",
            "member_count",
            "computed_at",
            "error",
            "created_at",
            "updated_at",
        ]


class SegmentListSerializer(serializers.ModelSerializer):
    """The list leaves the rules out: a tree can be large, and the list is for counts."""

    class Meta:
        model = Segment
        fields = ["id", "name", "description", "status", "progress", "member_count", "computed_at", "updated_at"]


def _storable_text(value: str) -> str:
    problem = text_problem(value)
    if problem:
        raise serializers.ValidationError(problem)
    return value


class RulesField(serializers.JSONField):
    """A rule tree as JSON; its grammar is checked by rules_parse in the service,
    here only that PostgreSQL's jsonb can hold it (no NUL, bounded depth)."""

    def to_internal_value(self, data: Any) -> Any:
        # The body is parsed JSON already; json_problem names where a value is
        # one jsonb cannot hold (1e999 parses as inf: "rules.all[0].value: must
        # be a finite number"), where DRF's own check says only "valid JSON".
        problem = json_problem(data, path="rules")
        if problem:
            raise serializers.ValidationError(problem)
        return data


class SegmentInSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, validators=[_storable_text])
    description = serializers.CharField(required=False, allow_blank=True, default="", validators=[_storable_text])
    # null passes to the grammar, which names the path like every other bad tree.
    rules = RulesField(allow_null=True)


class PreviewInSerializer(serializers.Serializer):
    rules = RulesField(allow_null=True)


class MemberOutSerializer(serializers.Serializer):
    profile_id = serializers.IntegerField()
    user_id = serializers.CharField(allow_null=True)
    entered_at = serializers.DateTimeField()


class ProfileSegmentOutSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="segment_id")
    name = serializers.CharField(source="segment.name")
    entered_at = serializers.DateTimeField()
