"""/hooks/: the providers' receipts (delivery.receipts_views)."""

from django.urls import path

from delivery import receipts_views

urlpatterns = [
    path("sendgrid/<str:token>", receipts_views.sendgrid_events, name="hook-sendgrid"),
    path("twilio/<str:token>", receipts_views.twilio_status, name="hook-twilio"),
]
