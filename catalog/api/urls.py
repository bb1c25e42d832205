from django.urls import path
from rest_framework.routers import SimpleRouter

from catalog.api.views import ProductViewSet, UploadCreateView, UploadDetailView, UploadErrorsView

router = SimpleRouter(trailing_slash=False)
router.register("products", ProductViewSet, basename="product")

urlpatterns = [
    path("catalog/uploads", UploadCreateView.as_view(), name="catalog-upload-create"),
    path("catalog/uploads/<int:pk>", UploadDetailView.as_view(), name="catalog-upload-detail"),
    path("catalog/uploads/<int:pk>/errors", UploadErrorsView.as_view(), name="catalog-upload-errors"),
    *router.urls,
]
