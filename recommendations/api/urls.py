from django.urls import path

from recommendations.api import views

urlpatterns = [
    path("users/<path:user_id>/recommendations", views.user_recommendations, name="recs-user"),
    path("products/<path:product_id>/similar", views.similar_products, name="recs-similar"),
    path("trending", views.trending, name="recs-trending"),
]
