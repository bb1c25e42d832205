"""Console: dead letters (read-only facts, processed again by an action)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from crm.admin_base import CappedCountPaginator, ReadOnlyFactsAdmin
from ingestion.models import DeadLetter
from ingestion.store import dead_letters_retry


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyFactsAdmin):
    list_display = ["created_at", "message_id", "short_error", "project", "received_at"]
    list_select_related = ["project"]
    list_filter = ["project"]
    search_fields = ["=message_id"]
    ordering = ["-id"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    readonly_fields = ["project", "message_id", "error", "message", "traceback", "received_at", "created_at"]
    actions = ["requeue"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[DeadLetter]:
        qs = super().get_queryset(request)
        match = request.resolver_match
        if match is not None and match.url_name and match.url_name.endswith("changelist"):
            qs = qs.defer("message", "traceback")
        return qs

    @admin.display(description="error")
    def short_error(self, obj: DeadLetter) -> str:
        return obj.error[:120]

    @admin.action(description="Process the selected messages again (after fixing the cause)")
    def requeue(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        result = dead_letters_retry(dead_letter_ids=list(queryset.values_list("pk", flat=True)))
        messages.info(
            request,
            f"{result.stored} stored, {result.duplicates} already stored, {result.dead_lettered} failed again.",
        )
