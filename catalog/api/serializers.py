from __future__ import annotations

from typing import Any

from django.urls import reverse
from rest_framework import serializers

from catalog.csvfile import FIELDS
from catalog.models import CatalogUpload, Product, UploadMode
from catalog.selectors import upload_summary


class ProductOutSerializer(serializers.ModelSerializer):
    class Meta:
        model = Product
        # The CSV's known columns, then what every product has besides.
        fields = [*FIELDS, "properties", "created_at", "updated_at"]


class UploadInSerializer(serializers.Serializer):
    file = serializers.FileField(allow_empty_file=True)
    mode = serializers.ChoiceField(choices=UploadMode.values, default=UploadMode.UPSERT)


class UploadOutSerializer(serializers.Serializer):
    """The upload's summary (catalog.selectors.upload_summary) plus links."""

    def to_representation(self, instance: CatalogUpload) -> dict[str, Any]:
        data = upload_summary(instance)
        request = self.context.get("request")
        data["errors_url"] = (
            request.build_absolute_uri(reverse("catalog-upload-errors", args=[instance.pk]))
            if request is not None and instance.error_file
            else None
        )
        return data


class ProductFilterSerializer(serializers.Serializer):
    """Query parameters of GET /api/v1/products (prop.<name> are read separately)."""

    category = serializers.ListField(child=serializers.CharField(max_length=255), required=False)
    in_stock = serializers.BooleanField(required=False, allow_null=True, default=None)
    is_active = serializers.BooleanField(required=False, allow_null=True, default=None)
    min_price = serializers.DecimalField(max_digits=14, decimal_places=4, required=False, min_value=0)
    max_price = serializers.DecimalField(max_digits=14, decimal_places=4, required=False, min_value=0)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        low, high = attrs.get("min_price"), attrs.get("max_price")
        if low is not None and high is not None and low > high:
            raise serializers.ValidationError({"max_price": "must not be below min_price"})
        return attrs
