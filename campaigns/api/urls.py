from django.urls import path
from rest_framework.routers import SimpleRouter

from campaigns.api import views

router = SimpleRouter(trailing_slash=False)
router.register("segments", views.SegmentViewSet, basename="segment")

urlpatterns = [
    # Before the router's segments/{pk}, which would not match "preview" anyway (pk is digits).
    path("segments/preview", views.SegmentPreviewView.as_view(), name="segment-preview"),
    path("segments/<int:pk>/members", views.SegmentMembersView.as_view(), name="segment-members"),
    path("campaigns/<int:pk>/report", views.CampaignReportView.as_view(), name="campaign-report"),
    path("users/<path:user_id>/segments", views.UserSegmentsView.as_view(), name="user-segments"),
    *router.urls,
]
