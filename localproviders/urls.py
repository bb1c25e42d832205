from django.urls import path

from localproviders import views

urlpatterns = [
    path("sendgrid/v3/mail/send", views.sendgrid_mail_send),
    path("google/token", views.google_token),
    path("fcm/v1/projects/<str:project_id>/messages:send", views.fcm_send),
    path("twilio/2010-04-01/Accounts/<str:account_sid>/Messages.json", views.twilio_messages),
    path("webhooks/<str:name>", views.webhook_receive),
]
