# The collectors (Segment HTTP Tracking API) are mounted here.
urlpatterns: list = []
