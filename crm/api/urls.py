from rest_framework.routers import SimpleRouter

from crm.api.views import ProfileViewSet

router = SimpleRouter(trailing_slash=False)
router.register("profiles", ProfileViewSet, basename="profile")

urlpatterns = router.urls
