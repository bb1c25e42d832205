"""The console for projects, profiles, devices and events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from axes.admin import AccessAttemptAdmin, AccessFailureLogAdmin, AccessLogAdmin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from crm import services
from crm.admin_base import (
    CappedCountPaginator,
    ConsoleAdmin,
    ProjectScopedAdmin,
    ReadOnlyFactsAdmin,
    allowed_project_ids,
)
from crm.models import Device, Event, EventNameMapping, Membership, Profile, Project
from crm.selectors import profile_events

# Sections that later apps add at the foot of the profile page (campaigns: the
# profile's segments, and why it is or is not in one), so that crm imports none
# of them: imports between apps run one way. A section gets the request (its
# query string chooses what to show) and the profile, and returns safe HTML.
ProfileSection = Callable[[HttpRequest, Profile], SafeString]
_profile_sections: list[ProfileSection] = []


def profile_section_register(section: ProfileSection) -> None:
    if section not in _profile_sections:
        _profile_sections.append(section)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser


def _show_keys(request: HttpRequest, project: Project, keys: services.ProjectKeys) -> None:
    parts = []
    if keys.write_key:
        parts.append(f"write key: {keys.write_key}")
    if keys.secret_key:
        parts.append(f"secret key: {keys.secret_key}")
    messages.warning(
        request,
        f"New keys of {project.name!r} (shown once; copy them now) — " + " · ".join(parts),
    )


@admin.register(Project)
class ProjectAdmin(ConsoleAdmin):
    list_display = ["name", "id", "timezone", "write_key_prefix", "secret_key_prefix", "keys_rotated_at"]
    readonly_fields = ["write_key_prefix", "secret_key_prefix", "keys_rotated_at", "created_at"]
    fields = ["name", "timezone", "rate_limit_write_key", "rate_limit_secret_key", *readonly_fields]
    inlines = [MembershipInline]
    actions = ["rotate_write_key", "rotate_secret_key"]
    search_fields = ["name"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Project]:
        qs = super().get_queryset(request)
        ids = allowed_project_ids(request)
        return qs if ids is None else qs.filter(pk__in=ids)

    def get_readonly_fields(self, request: HttpRequest, obj: Project | None = None) -> list[str]:
        # A project's rate limits protect the platform from it: the operator's to set.
        if request.user.is_superuser:
            return self.readonly_fields
        return [*self.readonly_fields, "rate_limit_write_key", "rate_limit_secret_key"]

    def _is_member(self, request: HttpRequest, obj: Project | None) -> bool:
        ids = allowed_project_ids(request)
        if ids is None:
            return True
        return bool(ids) and (obj is None or obj.pk in ids)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._is_member(request, None)

    def has_view_permission(self, request: HttpRequest, obj: Project | None = None) -> bool:
        return self._is_member(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Project | None = None) -> bool:
        return self._is_member(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Project | None = None) -> bool:
        return request.user.is_superuser

    def save_model(self, request: HttpRequest, obj: Project, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        project, keys = services.project_create(name=obj.name, timezone_name=obj.timezone)
        obj.pk = project.pk
        obj.refresh_from_db()
        services.membership_add(project_id=project.pk, user_id=request.user.pk)
        _show_keys(request, project, keys)

    @admin.action(description="Rotate the write key (apps must be updated)")
    def rotate_write_key(self, request: HttpRequest, queryset: QuerySet[Project]) -> None:
        for project in queryset:
            _show_keys(request, project, services.project_rotate_keys(project_id=project.pk, secret=False))

    @admin.action(description="Rotate the secret key (servers must be updated)")
    def rotate_secret_key(self, request: HttpRequest, queryset: QuerySet[Project]) -> None:
        for project in queryset:
            _show_keys(request, project, services.project_rotate_keys(project_id=project.pk, write=False))


@admin.register(Profile)
class ProfileAdmin(ProjectScopedAdmin):
    list_display = ["__str__", "project", "email", "name", "country", "last_seen"]
    list_select_related = ["project"]
    list_filter = ["project", "country", "email_subscribed", "push_subscribed"]
    # Exact matches use the unique (project, user_id) and (project, email) indexes.
    search_fields = ["=user_id", "=email"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    readonly_fields = [
        "project",
        "user_id",
        "anonymous_id_list",
        "first_seen",
        "last_seen",
        "recent_viewed",
        "recent_purchased",
        "last_events",
        "traits",
    ]
    fieldsets = [
        (None, {"fields": ["project", "user_id", "anonymous_id_list", "first_seen", "last_seen"]}),
        (
            "Demographics",
            {"fields": ["email", "phone", "name", "gender", "birth_date", "locale", "country", "city", "timezone"]},
        ),
        ("Subscriptions", {"fields": ["email_subscribed", "push_subscribed", "sms_subscribed"]}),
        ("Activity", {"fields": ["recent_viewed", "recent_purchased", "last_events", "traits"]}),
    ]

    change_form_template = "admin/crm/profile/change_form.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # profiles come from the collectors and imports

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Profile | None = None,
    ) -> Any:
        context["profile_sections"] = [section(request, obj) for section in _profile_sections] if obj else []
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    @admin.display(description="Anonymous ids")
    def anonymous_id_list(self, obj: Profile) -> str:
        return ", ".join(obj.anonymous_ids.values_list("anonymous_id", flat=True)) or "—"

    @admin.display(description="Last events")
    def last_events(self, obj: Profile) -> str:
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            (
                (e.timestamp.strftime("%Y-%m-%d %H:%M:%S"), e.name, str(e.properties)[:200])
                for e in profile_events(profile_id=obj.pk, limit=20)
            ),
        )
        return format_html("<table><tr><th>time</th><th>event</th><th>properties</th></tr>{}</table>", rows)


@admin.register(Device)
class DeviceAdmin(ProjectScopedAdmin):
    list_display = ["device_id", "platform", "profile", "project", "app_version", "last_seen"]
    list_select_related = ["profile", "project"]
    list_filter = ["project", "platform"]
    search_fields = ["=device_id"]
    raw_id_fields = ["profile"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    readonly_fields = [
        "project",
        "profile",
        "device_id",
        "platform",
        "app_version",
        "os_name",
        "os_version",
        "last_seen",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Event)
class EventAdmin(ReadOnlyFactsAdmin):
    list_display = ["name", "type", "profile", "project", "timestamp", "received_at"]
    list_select_related = ["profile", "project"]
    list_filter = ["project", "type"]
    search_fields = ["=name", "=message_id"]
    # Newest first by primary key: the pk index serves it, unlike timestamp.
    ordering = ["-id"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    raw_id_fields = ["profile"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Event]:
        qs = super().get_queryset(request)
        match = request.resolver_match
        if match is not None and match.url_name and match.url_name.endswith("changelist"):
            # The JSON columns are only shown on the detail page.
            qs = qs.defer("properties", "context")
        return qs


@admin.register(EventNameMapping)
class EventNameMappingAdmin(ProjectScopedAdmin):
    list_display = ["source_name", "canonical_name", "project", "created_at"]
    list_select_related = ["project"]
    list_filter = ["project", "canonical_name"]
    search_fields = ["source_name"]
    fields = ["project", "source_name", "canonical_name"]


# --- Console logins (django-axes): failed attempts and lockouts, superusers only ---
# (AXES_ENABLE_ADMIN is off: axes' own registration would show them to any staff
# user given its model permissions.) Deleting an attempt lifts its lockout.


class _SuperusersOnly:
    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and request.user.is_superuser


@admin.register(AccessAttempt)
class LoginAttemptAdmin(_SuperusersOnly, AccessAttemptAdmin):
    pass


@admin.register(AccessLog)
class LoginLogAdmin(_SuperusersOnly, AccessLogAdmin):
    pass


@admin.register(AccessFailureLog)
class LoginFailureLogAdmin(_SuperusersOnly, AccessFailureLogAdmin):
    pass
