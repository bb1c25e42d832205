"""/t/: the open pixel and tracked links (delivery.tracking); short, as they sit in every link."""

from django.urls import path

from delivery import views

urlpatterns = [
    path("o/<str:token>", views.track_open, name="track-open"),
    path("c/<str:token>", views.track_click, name="track-click"),
]
