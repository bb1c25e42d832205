"""The console of the delivery service: a project's delivery rules (caps, quiet
hours) and provider settings per channel (secrets never shown back), the
messages (read-only facts, a cheap changelist), and a section on the profile
page answering "why did this user not get source Y" (crm.admin.profile_section_register)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.safestring import SafeString

from crm.admin import profile_section_register
from crm.admin_base import CappedCountPaginator, ProjectScopedAdmin, ReadOnlyFactsAdmin, allowed_project_ids
from crm.models import Profile
from crm.storable import text_problem
from delivery.channels import channel_get
from delivery.models import ChannelSettings, DeliverySettings, Message
from delivery.receipts import sendgrid_webhook_url
from delivery.selectors import profile_messages, profile_source_messages
from delivery.services import channel_settings_save
from delivery.services.settings import settings_merge_secrets

# The recent sources offered by the changelist's source filter come from this many newest rows.
SOURCE_FILTER_SCAN = 5_000


@admin.register(DeliverySettings)
class DeliverySettingsAdmin(ProjectScopedAdmin):
    list_display = ["project", "caps", "min_gap_seconds", "quiet_hours_start", "quiet_hours_end", "quiet_hours_policy"]
    list_select_related = ["project"]
    list_filter = ["project"]
    fields = ["project", "caps", "min_gap_seconds", "quiet_hours_start", "quiet_hours_end", "quiet_hours_policy"]


def _channel_public(channel: str, settings: dict[str, Any]) -> dict[str, Any]:
    try:
        return channel_get(channel).settings_public(settings)
    except (LookupError, ValueError, ImportError):
        # A channel not installed here: show the keys only, never a value.
        return {key: "…" for key in settings}


class ChannelSettingsForm(forms.ModelForm):
    """The settings box shows the channel's settings_public (secrets masked); a
    secret left as shown or blank keeps the stored one; the channel's
    settings_validate names each bad field."""

    class Meta:
        model = ChannelSettings
        fields = ["project", "channel", "enabled", "settings"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["settings"] = _channel_public(self.instance.channel, self.instance.settings)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        channel = data.get("channel") or self.instance.channel
        submitted = data.get("settings")
        if not channel or not isinstance(submitted, dict):
            if "settings" in data and not isinstance(submitted, dict):
                self.add_error("settings", "must be a JSON object of the channel's settings")
            return data
        stored = self.instance.settings if self.instance.pk and self.instance.channel == channel else {}
        try:
            plugin = channel_get(channel)
        except (LookupError, ValueError, ImportError):
            self.add_error("channel", f"the {channel} channel is not installed")
            return data
        try:
            merged = settings_merge_secrets(channel=channel, stored=stored, submitted=submitted)
            data["settings"] = plugin.settings_validate(merged)
        except ValidationError as exc:
            if hasattr(exc, "error_dict"):
                for field, errors in exc.message_dict.items():
                    for message in errors:
                        self.add_error("settings", f"{field}: {message}")
            else:
                for message in exc.messages:
                    self.add_error("settings", message)
        return data


@admin.register(ChannelSettings)
class ChannelSettingsAdmin(ProjectScopedAdmin):
    form = ChannelSettingsForm
    list_display = ["project", "channel", "enabled", "public_settings", "updated_at"]
    list_select_related = ["project"]
    list_filter = ["project", "channel", "enabled"]

    def get_readonly_fields(self, request: HttpRequest, obj: ChannelSettings | None = None) -> list[str]:
        # One row per (project, channel): a change of channel would be another row.
        if obj is None:
            return []
        return ["project", "channel", "receipts_url"] if obj.channel == "email" else ["project", "channel"]

    @admin.display(description="SendGrid event webhook URL")
    def receipts_url(self, obj: ChannelSettings) -> str:
        """What to enter at SendGrid (Mail Settings → Event Webhook), with Signed Event
        Webhook on and its verification key as event_webhook_public_key (delivery.receipts)."""
        return sendgrid_webhook_url(project_id=obj.project_id)

    @admin.display(description="settings")
    def public_settings(self, obj: ChannelSettings) -> str:
        return str(_channel_public(obj.channel, obj.settings))

    def save_model(self, request: HttpRequest, obj: ChannelSettings, form: Any, change: bool) -> None:
        if not self._may_touch(request, obj):
            raise PermissionDenied
        row = channel_settings_save(
            project_id=obj.project_id, channel=obj.channel, settings=form.cleaned_data["settings"], enabled=obj.enabled
        )
        obj.pk = row.pk
        obj.refresh_from_db()


class SourceFilter(admin.SimpleListFilter):
    """By source: the choices are the sources of the newest messages (a bounded
    scan, not a DISTINCT over the whole table); any `?source=` value filters."""

    title = "source"
    parameter_name = "source"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        qs = model_admin.get_queryset(request).order_by("-id").values_list("source", flat=True)[:SOURCE_FILTER_SCAN]
        seen = dict.fromkeys(s for s in qs if s)
        return [(s, s) for s in sorted(seen)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if not value:
            return queryset
        if text_problem(value):
            return queryset.none()
        return queryset.filter(source=value)


@admin.register(Message)
class MessageAdmin(ReadOnlyFactsAdmin):
    list_display = [
        "id", "created_at", "channel", "state", "skip_reason", "source", "profile", "to", "attempts", "sent_at",
        "project",
    ]  # fmt: skip
    list_select_related = ["project", "profile"]
    list_filter = ["project", "state", "skip_reason", "channel", SourceFilter]
    search_fields = ["=idempotency_key", "=provider_id"]
    raw_id_fields = ["profile"]
    ordering = ["-id"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    readonly_fields = [
        "project", "profile", "channel", "source", "idempotency_key", "state", "skip_reason", "to", "marketing",
        "quiet_hours_policy", "throttle_per_minute", "not_before", "cutoff_at", "attempts", "claimed_at",
        "claimed_by", "dispatched_at", "sent_at", "provider_id", "error", "content", "created_at", "label",
        "items", "delivered_at", "opened_at", "clicked_at",
    ]  # fmt: skip

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        qs = super().get_queryset(request)
        match = request.resolver_match
        if match is not None and match.url_name and match.url_name.endswith("changelist"):
            qs = qs.defer("content", "error")
        return qs


def profile_messages_section(request: HttpRequest, profile: Profile) -> SafeString:
    """The profile page's "Messages": the newest messages of the profile, and
    with `?source=<source>` every message of that source to it, with its state
    and reason ("why did this user not get campaign Y"). The profile page has
    already checked that the marketer may see this profile's project."""
    ids = allowed_project_ids(request)
    if ids is not None and profile.project_id not in ids:
        raise PermissionDenied
    source = request.GET.get("source", "")
    why = None
    error = None
    if source:
        if text_problem(source) or len(source) > 255:
            error = "Not a source."
        else:
            why = list(profile_source_messages(project_id=profile.project_id, profile_id=profile.pk, source=source))
    return render_to_string(
        "admin/delivery/message/profile_section.html",
        {
            "recent": list(profile_messages(project_id=profile.project_id, profile_id=profile.pk)),
            "source": source,
            "why": why,
            "error": error,
            "profile_url": reverse("admin:crm_profile_change", args=[profile.pk]),
        },
        request=request,
    )


profile_section_register(profile_messages_section)
