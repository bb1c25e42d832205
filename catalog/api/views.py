"""Catalog API (secret key). Thin: parse, call a service or selector, format.

- `POST /api/v1/catalog/uploads` (multipart: file, mode) -> 202 with the upload's id;
  413 past CATALOG_UPLOAD_MAX_BYTES (catalog.middleware)
- `GET /api/v1/catalog/uploads/{id}`: state, progress, counts
- `GET /api/v1/catalog/uploads/{id}/errors`: the rejected rows as CSV
- `GET /api/v1/products` (category, in_stock, is_active, min_price, max_price,
  prop.<name>; cursor pagination) and `GET /api/v1/products/{product_id}`
"""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpResponse
from rest_framework import generics, mixins, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from catalog import selectors, services
from catalog.api.serializers import ProductOutSerializer, UploadInSerializer, UploadOutSerializer
from catalog.csvfile import CatalogFileError
from catalog.middleware import UploadTooLarge, too_large_response
from catalog.models import CatalogUpload, Product, UploadSource
from crm.api import params
from crm.api.base import IdCursorPagination, ProjectScopedMixin, ProjectScopedViewSet
from crm.authentication import HasProject, SecretKeyAuthentication, SecretKeyRateThrottle


class ProductViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    queryset = Product.objects.all()
    serializer_class = ProductOutSerializer
    pagination_class = IdCursorPagination
    lookup_field = "product_id"
    lookup_value_regex = "[^/]+"

    def get_queryset(self) -> QuerySet[Product]:
        qs = super().get_queryset()
        if self.action != "list":
            return qs
        query = self.request.query_params
        raw_active = query.get("is_active", "").strip()
        # The selector builds the conditions; the scoped queryset keeps the project.
        matching = selectors.products_matching(
            project_id=self.project.pk,
            conditions=selectors.ProductFilter(**selectors.product_filter_params(query)),
            is_active=params.boolean("is_active", raw_active) if raw_active else None,
        )
        return qs & matching


class _UploadView(ProjectScopedMixin, generics.GenericAPIView):
    authentication_classes = [SecretKeyAuthentication]
    permission_classes = [HasProject]
    throttle_classes = [SecretKeyRateThrottle]
    queryset = CatalogUpload.objects.all()


class UploadCreateView(_UploadView):
    def post(self, request: Request) -> Response | HttpResponse:
        try:
            body = request.data  # parsed here, after authentication, under the upload limit
        except UploadTooLarge as exc:
            return too_large_response(request, exc.limit)
        data = UploadInSerializer(data=body)
        data.is_valid(raise_exception=True)
        try:
            upload = services.catalog_upload_create(
                project_id=self.project.pk,
                file=data.validated_data["file"],
                mode=data.validated_data["mode"],
                source=UploadSource.API,
            )
        except CatalogFileError as exc:
            raise ValidationError({"file": [str(exc)]}) from exc
        return Response(UploadOutSerializer(upload, context={"request": request}).data, status=status.HTTP_202_ACCEPTED)


class UploadDetailView(_UploadView):
    def get(self, request: Request, pk: int) -> Response:
        upload = generics.get_object_or_404(self.get_queryset(), pk=pk)
        return Response(UploadOutSerializer(upload, context={"request": request}).data)


class UploadErrorsView(_UploadView):
    def get(self, request: Request, pk: int) -> FileResponse:
        upload = generics.get_object_or_404(self.get_queryset(), pk=pk)
        if not upload.error_file:
            raise Http404("this upload has no rejected rows")
        return FileResponse(
            upload.error_file.open("rb"),
            as_attachment=True,
            filename=upload.error_file.name.rsplit("/", 1)[-1],
            content_type="text/csv",
        )
