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
