"""The local provider server's outbox in the console: what it accepted, read-only,
for superusers only (it holds every project's messages: the stand-in providers
know no projects, so a marketer's scope cannot be applied)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from crm.admin_base import CappedCountPaginator, ConsoleAdmin
from localproviders.models import OutboxMessage


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ConsoleAdmin):
    list_display = ["received_at", "provider", "recipient_short", "subject_short", "duplicate", "signature_valid"]
    list_filter = ["provider", "duplicate", "signature_valid"]
    search_fields = ["recipient", "subject", "message_key"]
    date_hierarchy = None
    show_full_result_count = False
    paginator = CappedCountPaginator
    fields = [
        "provider", "received_at", "recipient", "subject", "body", "html", "message_key", "duplicate",
        "signature_valid", "call_id", "headers", "request",
    ]  # fmt: skip
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[OutboxMessage]:
        queryset = super().get_queryset(request)
        # The changelist shows none of the heavy columns.
        if request.resolver_match and (request.resolver_match.url_name or "").endswith("changelist"):
            queryset = queryset.defer("body", "html", "headers", "request")
        return queryset

    @admin.display(description="recipient")
    def recipient_short(self, obj: OutboxMessage) -> str:
        return obj.recipient if len(obj.recipient) <= 60 else obj.recipient[:57] + "…"

    @admin.display(description="subject / title")
    def subject_short(self, obj: OutboxMessage) -> str:
        return obj.subject if len(obj.subject) <= 80 else obj.subject[:77] + "…"

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and request.user.is_superuser
