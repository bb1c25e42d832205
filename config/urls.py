from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


admin.site.site_header = "Engage console"
admin.site.site_title = "Engage"
admin.site.index_title = "Marketing console"

urlpatterns = [
    path("healthz", healthz),
    path("admin/", admin.site.urls),
    path("api/v1/", include("crm.api.urls")),
    path("", include("ingestion.urls")),
    path("api/v1/", include("catalog.api.urls")),
    path("api/v1/", include("recommendations.api.urls")),
    path("api/v1/", include("campaigns.api.urls")),
    # The local provider server (404 unless LOCAL_PROVIDERS is on: localproviders.views).
    path("_local/", include("localproviders.urls")),
    path("u/", include("delivery.urls")),  # signed unsubscribe links, RFC 8058 one-click (delivery.views)
    path("t/", include("delivery.urls_tracking")),  # the open pixel and tracked links (delivery.tracking)
    path("hooks/", include("delivery.urls_hooks")),  # providers' receipts: SendGrid events, Twilio status
]
