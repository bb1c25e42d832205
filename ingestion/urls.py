"""The collectors (Segment HTTP Tracking API), mounted at the site root."""

from django.urls import path

from ingestion.api.views import collect

# Full names as in Segment's API reference, plus the short paths the official
# SDKs actually call: analytics.js (/v1/t, /v1/p, ...) and the mobile SDKs (/v1/b).
PATHS = {
    "identify": ("identify", "i"),
    "track": ("track", "t"),
    "page": ("page", "p"),
    "screen": ("screen", "s"),
    "group": ("group", "g"),
    "alias": ("alias", "a"),
    "batch": ("batch", "import", "b"),
}

urlpatterns = [
    path(f"v1/{name}", collect, {"kind": kind}, name=f"collect-{name}")
    for kind, names in PATHS.items()
    for name in names
]
