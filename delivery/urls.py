from django.urls import path

from delivery import views

urlpatterns = [
    path("<str:token>", views.unsubscribe, name="unsubscribe"),
]
