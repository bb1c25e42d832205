from django.contrib import admin

from campaigns.models import InAppMessage
from crm.admin_base import ProjectScopedAdmin


@admin.register(InAppMessage)
class InAppMessageAdmin(ProjectScopedAdmin):
    list_display = ["name", "project", "is_active", "priority", "products_count", "max_per_session", "max_per_day"]
    list_filter = ["project", "is_active"]
    list_select_related = ["project"]
    search_fields = ["name"]
    fieldsets = [
        (None, {"fields": ["project", "name", "is_active", "priority"]}),
        (
            "Content",
            {
                "fields": ["template", "products_count", "category", "in_stock_only"],
                "description": "Liquid template. Variables: user (name, first_name, email, city, country, traits, "
                "user_id), products (product_id, name, image_url, deeplink, price, rating), recommendation_id.",
            },
        ),
        ("Frequency caps per user (0 = no cap)", {"fields": ["max_per_session", "max_per_day"]}),
    ]
