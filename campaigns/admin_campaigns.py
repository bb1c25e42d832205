"""The campaigns console: the campaign builder, the preview of its variants for
one profile, the estimate of a send, the start / pause / resume / cancel
buttons, its runs and messages; and the project's campaign settings.

The builder is Django's change form with the variants inline
(campaigns/static/campaigns/campaign_builder.js shows the fields of the chosen
channel and schedule kind, offers the chosen project's segments only and shows
the audience's live count; a static file: the console's CSP runs no inline
script). Every write goes through a service: the form saves a draft, the
buttons call campaigns.sending.lifecycle, whose campaign_validate names the
field of each problem; the preview and the estimate are
campaigns.sending.estimate's."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Model, OuterRef, QuerySet, Subquery
from django.forms.models import BaseInlineFormSet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_POST

from campaigns.models import (
    Campaign,
    CampaignChannel,
    CampaignRun,
    CampaignSettings,
    CampaignStatus,
    ScheduleKind,
    Segment,
    Variant,
    validate_liquid,
)
from campaigns.sending import estimate as estimates
from campaigns.sending.render import CHANNEL_FIELDS as RENDERED_FIELDS
from crm.admin_base import ProjectScopedAdmin, StorableJSONField, allowed_project_ids
from crm.api import params
from crm.models import Project
from crm.storable import text_problem
from delivery.models import Message, QuietHoursPolicy
from delivery.selectors import delivery_settings_get

# The change page lists this many of a campaign's newest runs (a triggered campaign has one per event).
RUNS_SHOWN = 20
WEEKDAYS = [(1, "Mon"), (2, "Tue"), (3, "Wed"), (4, "Thu"), (5, "Fri"), (6, "Sat"), (7, "Sun")]
# A campaign's settings can change while it is a draft or paused; started, it sends what it was.
EDITABLE = (CampaignStatus.DRAFT, CampaignStatus.PAUSED)

# The A/B test's fields (campaigns.results.decision), fixed once the campaign has started.
AB_FIELDS = ["ab_test_percent", "ab_decision_hours", "ab_metric", "ab_confidence", "ab_min_sample", "ab_fallback"]

# Each channel's template fields in Variant.content, as render.py renders them:
# (key, label, multi-line). The webhook's JSON body is rendered apart (as text, then parsed).
_LABELS = {"html": "HTML body", "text": "text body", "from_email": "from (address)", "from_name": "from (name)",
           "reply_to": "reply-to", "image": "image URL", "deeplink": "deep link", "url": "URL"}  # fmt: skip
_MULTILINE = {"html", "text", "body"}
CHANNEL_FIELDS: dict[str, list[tuple[str, str, bool]]] = {
    channel: [(key, _LABELS.get(key, key.replace("_", " ")), key in _MULTILINE) for key in fields]
    + ([("body", "JSON body template", True)] if channel == CampaignChannel.WEBHOOK else [])
    for channel, fields in RENDERED_FIELDS.items()
}
# Push `data`: a JSON object of key -> Liquid template, its own form field.
PUSH_DATA = "push_data"


def _field_name(channel: str, key: str) -> str:
    return f"{channel}_{key}"


# --- project settings -----------------------------------------------------------------------


@admin.register(CampaignSettings)
class CampaignSettingsAdmin(ProjectScopedAdmin):
    list_display = ["project", "system_control_percent", "updated_at"]
    list_select_related = ["project"]
    list_filter = ["project"]
    fields = ["project", "system_control_percent"]

    def get_readonly_fields(self, request: HttpRequest, obj: CampaignSettings | None = None) -> list[str]:
        # One row per project.
        return ["project"] if obj is not None else []


# --- the campaign form --------------------------------------------------------------------------


class SegmentSelect(forms.Select):
    """Each segment option carries its project (data-project), so the builder
    offers only the chosen project's segments; the form refuses another
    project's anyway."""

    def create_option(self, name: str, value: Any, label: Any, selected: Any, index: int, **kwargs: Any) -> dict:
        option = super().create_option(name, value, label, selected, index, **kwargs)
        instance = getattr(value, "instance", None)
        if instance is not None:
            option["attrs"]["data-project"] = str(instance.project_id)
            option["attrs"]["data-members"] = str(instance.member_count)
        return option


class SegmentChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Segment) -> str:
        return f"{obj.name} ({obj.member_count:,} members)"


class CampaignForm(forms.ModelForm):
    """The campaign's own fields. What a start needs beyond one field (shares
    adding up to 100, the channel's required templates, the schedule's fields
    per kind) is campaign_validate's: the change page lists its findings, and
    a start is refused with them."""

    weekdays = forms.TypedMultipleChoiceField(
        choices=WEEKDAYS,
        coerce=int,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Weekly recurrences: the days it is sent.",
    )
    quiet_hours_policy = forms.ChoiceField(
        choices=[("", "the project's setting"), *QuietHoursPolicy.choices],
        required=False,
        help_text="What a message that falls in the user's quiet hours does.",
    )

    class Meta:
        model = Campaign
        fields = [
            "project", "name", "channel", "marketing", "segment", "control_percent",
            "schedule_kind", "send_date", "send_time", "schedule_timezone", "past_time_policy", "recurrence",
            "weekdays", "trigger_event", "trigger_delay_seconds", "cancel_event", "cutoff_minutes",
            "goal_event", "goal_window_hours", "ab_test_percent", "ab_decision_hours", "ab_metric",
            "ab_confidence", "ab_min_sample", "ab_fallback", "quiet_hours_policy", "throttle_per_minute",
            "priority", "max_per_session", "max_per_day",
        ]  # fmt: skip
        widgets = {
            "send_date": forms.DateInput(attrs={"type": "date"}),
            "send_time": forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        segment = self.fields.get("segment")
        if segment is not None:
            # The admin narrowed the choices to the marketer's projects; a saved
            # campaign's to its own project (which it cannot leave).
            queryset = segment.queryset.order_by("name")
            if self.instance.project_id:
                queryset = queryset.filter(project_id=self.instance.project_id)
            segment.queryset = queryset

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        segment = cleaned.get("segment")
        project = cleaned.get("project") or (self.instance.project if self.instance.project_id else None)
        if segment is not None and project is not None and segment.project_id != project.pk:
            self.add_error("segment", "not a segment of the campaign's project")
        return cleaned


class VariantForm(forms.ModelForm):
    """A variant: its name and share, the templates of the campaign's channel
    (one field each, stored in Variant.content) and the filters of the
    `recommendations` its templates see (Variant.recommendations). Each
    template is compiled here, so a Liquid syntax error names its field."""

    rec_limit = forms.IntegerField(label="recommendations: how many", min_value=1, max_value=20, initial=3)
    rec_category = forms.CharField(label="category", required=False, max_length=255)
    rec_in_stock = forms.BooleanField(label="in stock only", required=False, initial=True)
    rec_min_price = forms.DecimalField(label="min price", required=False, min_value=0, max_digits=12)
    rec_max_price = forms.DecimalField(label="max price", required=False, min_value=0, max_digits=12)
    rec_properties = StorableJSONField(
        path="recommendations.properties",
        label="properties",
        required=False,
        empty=dict,
        initial=dict,
        help_text='Products whose properties contain these, e.g. {"brand": "Acme"}.',
    )
    rec_exclude = forms.CharField(
        label="exclude products", required=False, help_text="Product ids, separated by commas."
    )
    push_data = StorableJSONField(
        path="content.data",
        label="data",
        required=False,
        empty=dict,
        initial=dict,
        help_text='Key-value pairs sent with the push, each value a template, e.g. {"product": "{{ product.id }}"}.',
    )

    class Meta:
        model = Variant
        fields = ["name", "share"]

    def __init__(self, *args: Any, campaign: Campaign | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        content = self.instance.content or {}
        # The formset's campaign (VariantFormSet): the variant's own would cost a query each.
        channel = campaign.channel if campaign is not None and campaign.pk else None
        if channel:
            for key, _, _ in CHANNEL_FIELDS.get(channel, []):
                if key in content:
                    self.initial[_field_name(channel, key)] = content[key]
            if channel == CampaignChannel.PUSH:
                self.initial[PUSH_DATA] = content.get("data", {})
        recs = self.instance.recommendations or {}
        for key in ("limit", "category", "in_stock", "min_price", "max_price", "properties"):
            if key in recs and recs[key] is not None:
                self.initial[f"rec_{key}"] = recs[key]
        if recs.get("exclude"):
            self.initial["rec_exclude"] = ", ".join(recs["exclude"])

    def _channel(self) -> str | None:
        # The inline formset gives each variant its campaign, as the form above it was submitted.
        try:
            return self.instance.campaign.channel
        except Campaign.DoesNotExist:
            return None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        for channel, keys in CHANNEL_FIELDS.items():
            for key, _, _ in keys:
                name = _field_name(channel, key)
                value = cleaned.get(name) or ""
                problem = text_problem(value)
                if problem:
                    self.add_error(name, problem)
                    continue
                if value:
                    try:
                        validate_liquid(value)
                    except ValidationError as exc:
                        self.add_error(name, exc)
        data = cleaned.get(PUSH_DATA)
        if data not in (None, {}):
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                self.add_error(PUSH_DATA, "must be a JSON object of key → template text")
            else:
                for key, value in data.items():
                    try:
                        validate_liquid(value)
                    except ValidationError as exc:
                        self.add_error(PUSH_DATA, f"{key}: {exc.messages[0]}")
        properties = cleaned.get("rec_properties")
        if properties not in (None, {}) and not isinstance(properties, dict):
            self.add_error("rec_properties", "must be a JSON object of property → value")
        low, high = cleaned.get("rec_min_price"), cleaned.get("rec_max_price")
        if low is not None and high is not None and low > high:
            self.add_error("rec_max_price", "must be at least the min price")
        return cleaned

    def save(self, commit: bool = True) -> Variant:
        variant = super().save(commit=False)
        channel = self._channel()
        content: dict[str, Any] = {}
        for key, _, _ in CHANNEL_FIELDS.get(channel or "", []):
            value = self.cleaned_data.get(_field_name(channel, key)) or ""
            if value:
                content[key] = value
        if channel == CampaignChannel.PUSH and self.cleaned_data.get(PUSH_DATA):
            content["data"] = self.cleaned_data[PUSH_DATA]
        variant.content = content

        def price(value: Decimal | None) -> float | None:
            return float(value) if value is not None else None

        exclude = [p.strip() for p in (self.cleaned_data.get("rec_exclude") or "").split(",") if p.strip()]
        variant.recommendations = {
            "limit": self.cleaned_data.get("rec_limit") or 3,
            "category": self.cleaned_data.get("rec_category") or "",
            "in_stock": bool(self.cleaned_data.get("rec_in_stock")),
            "min_price": price(self.cleaned_data.get("rec_min_price")),
            "max_price": price(self.cleaned_data.get("rec_max_price")),
            "properties": self.cleaned_data.get("rec_properties") or {},
            "exclude": exclude,
        }
        if commit:
            variant.save()
        return variant


def _template_fields() -> dict[str, forms.Field]:
    """VariantForm's template fields, one per (channel, key) of CHANNEL_FIELDS."""
    fields: dict[str, forms.Field] = {}
    for channel, keys in CHANNEL_FIELDS.items():
        for key, label, multiline in keys:
            widget = forms.Textarea(attrs={"rows": 6, "cols": 80}) if multiline else forms.TextInput(attrs={"size": 80})
            fields[_field_name(channel, key)] = forms.CharField(label=label, required=False, widget=widget, strip=False)
    return fields


# Declared on the class (not added per instance): the admin builds the inline's
# form from its fieldsets, and a field it cannot find there is an error.
for _name, _field in _template_fields().items():
    VariantForm.base_fields[_name] = VariantForm.declared_fields[_name] = _field


class VariantFormSet(BaseInlineFormSet):
    def get_form_kwargs(self, index: int | None) -> dict[str, Any]:
        return {**super().get_form_kwargs(index), "campaign": self.instance}


class CampaignChild:
    """Inlines of a campaign: the campaign's own permissions (Django's per-model
    permissions are not the grant here, a membership is), and no change once it
    has started."""

    admin_site: admin.AdminSite

    def _parent(self) -> CampaignAdmin:
        return self.admin_site._registry[Campaign]  # type: ignore[return-value]

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._parent().has_view_permission(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._parent().has_change_permission(request, obj) if obj else self._parent().has_add_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._parent().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._parent().has_change_permission(request, obj)


class VariantInline(CampaignChild, admin.StackedInline):
    model = Variant
    form = VariantForm
    formset = VariantFormSet
    extra = 0
    min_num = 1
    fieldsets = [
        (None, {"fields": ["name", "share"]}),
        *[
            (
                label,
                {
                    "fields": [_field_name(channel, key) for key, _, _ in CHANNEL_FIELDS[channel]]
                    + ([PUSH_DATA] if channel == CampaignChannel.PUSH else []),
                    "classes": ["channel-fields", f"channel-{channel}"],
                },
            )
            for channel, label in CampaignChannel.choices
        ],
        (
            "Recommendations in the templates",
            {
                "fields": [
                    "rec_limit",
                    "rec_category",
                    "rec_in_stock",
                    "rec_min_price",
                    "rec_max_price",
                    "rec_properties",
                    "rec_exclude",
                ],  # fmt: skip
                "description": "The user's recommendations (the serving code's, as the API gives them), "
                "filtered: {% for p in recommendations %}{{ p.name }} {{ p.price }}{% endfor %}.",
            },
        ),
    ]


def _shown(name: str, label: str, read: Any) -> Any:
    """A read-only display of one of VariantForm's own fields, for a campaign
    shown but not editable (started): Django shows an inline's fields through
    the admin's attributes then."""

    def show(self: Any, obj: Variant) -> str:
        value = read(obj)
        if value in (None, "", {}, []):
            return ""
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    show.__name__ = name
    show.short_description = label  # type: ignore[attr-defined]
    return show


def _content_reader(channel: str, key: str) -> Any:
    return lambda v: v.content.get(key) if v.campaign.channel == channel else None


for _channel_name, _keys in CHANNEL_FIELDS.items():
    for _key, _label, _ in _keys:
        _name = _field_name(_channel_name, _key)
        setattr(VariantInline, _name, _shown(_name, _label, _content_reader(_channel_name, _key)))
setattr(VariantInline, PUSH_DATA, _shown(PUSH_DATA, "data", _content_reader(CampaignChannel.PUSH, "data")))
for _key in ("limit", "category", "in_stock", "min_price", "max_price", "properties", "exclude"):
    setattr(
        VariantInline,
        f"rec_{_key}",
        _shown(f"rec_{_key}", VariantForm.base_fields[f"rec_{_key}"].label, lambda v, k=_key: v.recommendations.get(k)),
    )


# --- the campaign admin -------------------------------------------------------------------------


def _lifecycle() -> Any:
    # Imported when a button is pressed: the lifecycle pulls in the fan-out and
    # its tasks, which the changelist does not need.
    from campaigns.sending import lifecycle

    return lifecycle


def _source_counts(*, project_id: int, source: str) -> list[dict[str, Any]]:
    """The messages of a source by state and skip reason (index message_source_claimed)."""
    return list(
        Message.objects.filter(project_id=project_id, source=source)
        .order_by()
        .values("state", "skip_reason")
        .annotate(n=Count("pk"))
        .order_by("state", "skip_reason")
    )


@admin.register(Campaign)
class CampaignAdmin(ProjectScopedAdmin):
    form = CampaignForm
    inlines = [VariantInline]
    change_form_template = "admin/campaigns/campaign/change_form.html"
    list_display = [
        "name", "project", "channel", "status", "audience", "schedule", "variant_count", "last_run", "report_column",
    ]  # fmt: skip
    list_filter = ["project", "channel", "status"]
    list_select_related = ["project", "segment"]
    search_fields = ["name"]
    readonly_fields = ["status", "system_control", "project_rules", "ab_rule", "report_link"]
    fieldsets = [
        (None, {"fields": ["project", "name", "channel", "marketing", "status", "report_link"]}),
        ("Audience", {"fields": ["segment", "control_percent", "system_control"]}),
        (
            "Schedule",
            {
                "fields": [
                    "schedule_kind",
                    "send_date",
                    "send_time",
                    "schedule_timezone",
                    "past_time_policy",
                    "recurrence",
                    "weekdays",
                    "trigger_event",
                    "trigger_delay_seconds",
                    "cancel_event",
                    "cutoff_minutes",
                ],  # fmt: skip
                "classes": ["campaign-schedule"],
            },
        ),
        ("Conversion goal", {"fields": ["goal_event", "goal_window_hours"]}),
        (
            "A/B test first",
            {
                "fields": [
                    "ab_test_percent",
                    "ab_decision_hours",
                    "ab_metric",
                    "ab_confidence",
                    "ab_min_sample",
                    "ab_fallback",
                    "ab_rule",
                ],  # fmt: skip
                "classes": ["campaign-ab"],
                "description": "Send the variants to a test share first; at the decision time the rule "
                "picks the winner, which the rest of the audience gets (send now or at a date and time only).",
            },
        ),
        ("Delivery", {"fields": ["project_rules", "quiet_hours_policy", "throttle_per_minute"]}),
        (
            "In-app",
            {"fields": ["priority", "max_per_session", "max_per_day"], "classes": ["channel-fields", "channel-in_app"]},
        ),
    ]

    class Media:
        js = ["campaigns/campaign_builder.js"]
        css = {"all": ["campaigns/campaigns.css"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Campaign]:
        last = CampaignRun.objects.filter(campaign_id=OuterRef("pk")).order_by("-id")
        return (
            super()
            .get_queryset(request)
            .annotate(
                variants_n=Count("variants", distinct=True),
                last_run_status=Subquery(last.values("status")[:1]),
                last_run_at=Subquery(last.values("planned_at")[:1]),
            )
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Campaign | None = None) -> list[str]:
        if obj is None:
            return list(self.readonly_fields)
        # A campaign stays in its project: its segment and messages are that project's.
        fields = [*self.readonly_fields, "project"]
        if obj.status != CampaignStatus.DRAFT:
            # Started (paused included): the test share and rule are those of its
            # test run, which the winner run's buckets and the decision rely on.
            fields.extend(AB_FIELDS)
        return fields

    def has_change_permission(self, request: HttpRequest, obj: Campaign | None = None) -> bool:
        if obj is not None and obj.status not in EDITABLE:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Campaign | None = None) -> bool:
        # Only drafts: a started campaign's runs and messages are its results.
        if obj is not None and obj.status != CampaignStatus.DRAFT:
            return False
        return super().has_delete_permission(request, obj)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        # A draft may be saved unfinished; say what a start would refuse.
        problems = _lifecycle().campaign_validate(form.instance)
        if problems:
            listed = "; ".join(f"{name}: {problem}" for name, problem in problems.items())
            messages.warning(request, f"Saved; not ready to start: {listed}")

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        # Django's bulk delete checks no object's status: a started campaign's
        # runs and messages are its results, so only a draft's own page deletes.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "segment":
            kwargs.update(
                form_class=SegmentChoiceField, widget=SegmentSelect, empty_label="everyone reachable on the channel"
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    # --- changelist columns ---

    @admin.display(description="audience")
    def audience(self, obj: Campaign) -> str:
        return obj.segment.name if obj.segment_id else "everyone reachable"

    @admin.display(description="schedule")
    def schedule(self, obj: Campaign) -> str:
        if obj.schedule_kind == ScheduleKind.AT:
            zone = "each user's time" if obj.schedule_timezone == "user" else "project time"
            return f"at {obj.send_date} {obj.send_time:%H:%M} ({zone})" if obj.send_date and obj.send_time else "at …"
        if obj.schedule_kind == ScheduleKind.RECURRING:
            at = f"{obj.send_time:%H:%M}" if obj.send_time else "…"
            return f"{obj.recurrence or 'recurring'} at {at}"
        if obj.schedule_kind == ScheduleKind.TRIGGERED:
            return f"on {obj.trigger_event or '…'}"
        return "send now"

    @admin.display(description="the rule in words")
    def ab_rule(self, obj: Campaign) -> str:
        from campaigns.results.decision import rule_in_words

        if obj is None or not obj.pk:
            return "Saved with the campaign; shown here in words."
        return rule_in_words(obj, variants=getattr(obj, "variants_n", None))

    @admin.display(description="results")
    def report_link(self, obj: Campaign) -> str:
        if obj is None or not obj.pk:
            return "—"
        url = reverse("admin:campaigns_campaign_report", args=[obj.pk])
        return format_html('<a href="{}" id="campaign-report-link">Report</a>', url)

    @admin.display(description="report")
    def report_column(self, obj: Campaign) -> str:
        return format_html('<a href="{}">report</a>', reverse("admin:campaigns_campaign_report", args=[obj.pk]))

    @admin.display(description="variants", ordering="variants_n")
    def variant_count(self, obj: Campaign) -> int:
        return getattr(obj, "variants_n", 0)

    @admin.display(description="last run")
    def last_run(self, obj: Campaign) -> str:
        status = getattr(obj, "last_run_status", None)
        if not status:
            return "—"
        return f"{status}, {obj.last_run_at:%Y-%m-%d %H:%M}"

    # --- change form fields ---

    @admin.display(description="system control group")
    def system_control(self, obj: Campaign) -> str:
        if not obj.project_id:
            return "the project's system control share (Campaigns → Campaign settings), held out of every campaign"
        percent = (
            CampaignSettings.objects.filter(project_id=obj.project_id)
            .values_list("system_control_percent", flat=True)
            .first()
            or 0
        )
        return f"{percent} % of the project's profiles, held out of every campaign"

    @admin.display(description="project rules")
    def project_rules(self, obj: Campaign) -> SafeString:
        if not obj.project_id:
            return mark_safe("the project's caps and quiet hours (Delivery → Delivery settings)")
        settings = delivery_settings_get(project_id=obj.project_id)
        caps = settings.caps.get(obj.channel, []) if obj.channel else []
        parts = [
            ", ".join(
                f"at most {r['max']} in {r['days']} days" if "days" in r else f"at most {r['max']} in {r['hours']} h"
                for r in caps
            )
            or "no caps on this channel"
        ]
        if settings.min_gap_seconds:
            parts.append(f"at least {settings.min_gap_seconds} s between two messages")
        if settings.quiet_hours_start is not None and settings.quiet_hours_end is not None:
            parts.append(
                f"quiet hours {settings.quiet_hours_start:%H:%M}–{settings.quiet_hours_end:%H:%M} "
                f"({settings.get_quiet_hours_policy_display()})"
            )
        else:
            parts.append("no quiet hours")
        url = (
            reverse("admin:delivery_deliverysettings_changelist")
            + "?"
            + urlencode({"project__id__exact": obj.project_id})
        )
        return format_html('{} (<a href="{}">delivery settings</a>)', "; ".join(parts), url)

    # --- the extra pages ---

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        actions = [
            path(
                f"<int:pk>/{action}/",
                wrap(require_POST(self._action_view(action))),
                name=f"campaigns_campaign_{action}",
            )
            for action in ("start", "pause", "resume", "cancel")
        ]
        return [
            *actions,
            path("<int:pk>/report/", wrap(self.report_view), name="campaigns_campaign_report"),
            path(
                "<int:pk>/ab-override/",
                wrap(require_POST(self.ab_override_view)),
                name="campaigns_campaign_ab_override",
            ),
            path("<int:pk>/preview/", wrap(self.preview_view), name="campaigns_campaign_preview"),
            path("<int:pk>/estimate/", wrap(self.estimate_view), name="campaigns_campaign_estimate"),
            path("audience/", wrap(self.audience_view), name="campaigns_campaign_audience"),
            path("ab-rule/", wrap(self.ab_rule_view), name="campaigns_campaign_ab_rule"),
            *super().get_urls(),
        ]

    def _campaign(self, request: HttpRequest, pk: int) -> Campaign:
        """The campaign `pk` if the marketer may see it (another project's: 404)."""
        return get_object_or_404(super().get_queryset(request).select_related("project", "segment"), pk=pk)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Campaign | None = None,
    ) -> Any:
        context["builder"] = {
            "audience_url": reverse("admin:campaigns_campaign_audience"),
            "ab_rule_url": reverse("admin:campaigns_campaign_ab_rule"),
        }
        if obj is not None and obj.pk:
            problems = _lifecycle().campaign_validate(obj) if obj.status in EDITABLE else {}
            context["problems"] = [(name, problem, _field_anchor(obj, name)) for name, problem in problems.items()]
            context["buttons"] = _buttons(obj)
            runs = list(obj.runs.order_by("-id")[:RUNS_SHOWN])
            context["runs"] = runs
            context["runs_total"] = obj.runs.count() if len(runs) == RUNS_SHOWN else len(runs)
            messages_url = reverse("admin:delivery_message_changelist")
            counts = _source_counts(project_id=obj.project_id, source=obj.source)
            for row in counts:
                query = {"source": obj.source, "state__exact": row["state"]}
                if row["skip_reason"]:
                    query["skip_reason__exact"] = row["skip_reason"]
                row["url"] = f"{messages_url}?{urlencode(query)}"
            context["message_counts"] = counts
            context["messages_url"] = f"{messages_url}?{urlencode({'source': obj.source})}"
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    def _action_view(self, action: str) -> Any:
        def view(request: HttpRequest, pk: int) -> HttpResponse:
            """POST (CSRF): start / pause / resume / cancel the campaign through
            campaigns.sending.lifecycle; its refusal (campaign_validate's
            problems, a wrong status) is shown naming the field."""
            campaign = self._campaign(request, pk)
            if not ProjectScopedAdmin.has_change_permission(self, request, campaign):
                raise PermissionDenied
            lifecycle = _lifecycle()
            service = getattr(lifecycle, f"campaign_{action}")
            try:
                service(campaign_id=campaign.pk)
            except ValidationError as exc:
                # campaign_validate's findings, or a status that does not allow it: each names its field.
                for field_name, problems in exc.message_dict.items():
                    for problem in problems:
                        messages.error(request, f"{field_name}: {problem}")
            else:
                campaign.refresh_from_db(fields=["status"])
                messages.success(request, f"{campaign}: {action} done; the campaign is {campaign.status}.")
            return HttpResponseRedirect(reverse("admin:campaigns_campaign_change", args=[campaign.pk]))

        return view

    def report_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """The campaign's report (campaigns.results.report.campaign_report): the
        funnel, the daily chart, the uplift table, the SRM warning, the A/B
        decision and its rule (with the override), products, coverage and
        diversity. `?format=csv`: the same figures as CSV; another format is a
        400 naming `format`. Another project's campaign: 404."""
        from campaigns import admin_report
        from campaigns.results import decision as decisions
        from campaigns.results.report import campaign_report

        campaign = self._campaign(request, pk)
        fmt = request.GET.get("format", "html")
        if fmt not in ("html", "csv"):
            return HttpResponse("format: must be html or csv", status=400, content_type="text/plain; charset=utf-8")
        report = campaign_report(campaign=campaign)
        if fmt == "csv":
            response = HttpResponse(admin_report.report_csv(report), content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="campaign-{campaign.pk}-report.csv"'
            return response
        variants = list(campaign.variants.order_by("pk"))
        is_ab = decisions.is_ab_campaign(campaign)
        test_started = is_ab and campaign.runs.exclude(occurrence__endswith=decisions.WINNER_SUFFIX).exists()
        context = {
            **self.admin_site.each_context(request),
            "title": f"Report of {campaign}",
            "opts": self.model._meta,
            "original": campaign,
            "campaign": campaign,
            "report": report,
            "variants": variants,
            "is_ab": is_ab,
            "rule_words": decisions.rule_in_words(campaign, variants=len(variants)),
            "can_override": is_ab and test_started and report.decision is None,
            "override_url": reverse("admin:campaigns_campaign_ab_override", args=[campaign.pk]),
            "csv_url": reverse("admin:campaigns_campaign_report", args=[campaign.pk]) + "?format=csv",
            "has_view_permission": True,
            **admin_report.report_context(report),
        }
        return TemplateResponse(request, "admin/campaigns/campaign/report.html", context)

    def ab_override_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """POST (CSRF) `variant`: the marketer's winner (decision.ab_override):
        before the rule decided it decides now, after it is refused with the
        reason; each message names its field."""
        from campaigns.results import decision as decisions

        campaign = self._campaign(request, pk)
        if not ProjectScopedAdmin.has_change_permission(self, request, campaign):
            raise PermissionDenied
        back = HttpResponseRedirect(reverse("admin:campaigns_campaign_report", args=[campaign.pk]))
        try:
            variant_id = params.integer("variant", request.POST.get("variant", ""), minimum=1, maximum=params.MAX_ID)
        except params.BadParameter as exc:
            messages.error(request, exc.message)  # "variant must be an integer ..."
            return back
        try:
            decision = decisions.ab_override(
                campaign_id=campaign.pk, variant_id=variant_id, decided_by=request.user.get_username()
            )
        except ValidationError as exc:
            for field_name, problems in exc.message_dict.items():
                for problem in problems:
                    messages.error(request, f"{field_name}: {problem}")
        else:
            messages.success(
                request, f"{decision.winner.name} chosen: the winner run sends it to the held-back profiles."
            )
        return back

    def preview_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """GET `?profile=<user id or email>`: each variant rendered for that
        profile of the campaign's project (its real recommendations), template
        errors shown as such, the SMS segment count; and which group the
        profile is assigned to."""
        campaign = self._campaign(request, pk)
        query = request.GET.get("profile", "").strip()
        preview = error = None
        if query:
            if text_problem(query) or len(query) > 255:
                error = "Not a user id or an email address."
            else:
                profile = estimates.profile_find(project_id=campaign.project_id, query=query)
                if profile is None:
                    error = f"No profile of {campaign.project} has the user id or email {query!r}."
                else:
                    preview = estimates.campaign_preview(campaign, profile=profile)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Preview of {campaign}",
            "opts": self.model._meta,
            "original": campaign,
            "campaign": campaign,
            "query": query,
            "preview": preview,
            "error": error,
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/campaigns/campaign/preview.html", context)

    def estimate_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """The estimate of the campaign's send (campaigns.sending.estimate), at
        its planned instant for an "at" send in the project's time zone, else now."""
        campaign = self._campaign(request, pk)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Estimate of {campaign}",
            "opts": self.model._meta,
            "original": campaign,
            "campaign": campaign,
            "estimate": estimates.campaign_estimate(campaign, now=estimates.estimate_instant(campaign)),
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/campaigns/campaign/estimate.html", context)

    def ab_rule_view(self, request: HttpRequest) -> JsonResponse:
        """GET `?ab_test_percent=&ab_decision_hours=&ab_metric=&ab_confidence=&ab_min_sample=
        &ab_fallback=&variants=`: the A/B rule in words as the builder's fields
        stand (campaigns.results.decision.rule_in_words, the one wording), for
        the builder to show while it is edited. 400 naming the field."""
        from campaigns.models import ABFallback, ABMetric
        from campaigns.results.decision import rule_in_words

        bounds = {
            "ab_test_percent": (0, 90),
            "ab_decision_hours": (1, 24 * 30),
            "ab_confidence": (50, 99),
            "ab_min_sample": (1, 10**9),
            "variants": (1, 100),
        }
        values: dict[str, Any] = {}
        try:
            for name, (low, high) in bounds.items():
                values[name] = params.integer(name, request.GET.get(name, ""), minimum=low, maximum=high)
        except params.BadParameter as exc:
            return JsonResponse({exc.field: [exc.message]}, status=400)
        for name, choices in (("ab_metric", ABMetric.values), ("ab_fallback", ABFallback.values)):
            values[name] = request.GET.get(name, "")
            if values[name] not in choices:
                return JsonResponse({name: [f"must be one of {', '.join(choices)}"]}, status=400)
        k = values.pop("variants")
        probe = Campaign(**values)
        return JsonResponse({"text": rule_in_words(probe, variants=k)})

    def audience_view(self, request: HttpRequest) -> JsonResponse:
        """GET `?project=&channel=&segment=&marketing=`: the audience's live
        count for the builder: the segment's members (kept current by the
        segments code), or everyone reachable on the channel. 400 naming the
        field; 404 for a project or segment the marketer cannot see."""
        try:
            project_id = params.integer("project", request.GET.get("project", ""), minimum=1, maximum=params.MAX_ID)
        except params.BadParameter as exc:
            return JsonResponse({"project": [exc.message]}, status=400)
        ids = allowed_project_ids(request)
        if ids is not None and project_id not in ids:
            raise Http404("no such project")
        channel = request.GET.get("channel", "")
        if channel not in CampaignChannel.values:
            return JsonResponse({"channel": [f"must be one of {', '.join(CampaignChannel.values)}"]}, status=400)
        raw_segment = request.GET.get("segment", "")
        if raw_segment:
            try:
                segment_id = params.integer("segment", raw_segment, minimum=1, maximum=params.MAX_ID)
            except params.BadParameter as exc:
                return JsonResponse({"segment": [exc.message]}, status=400)
            segment = get_object_or_404(Segment, pk=segment_id, project_id=project_id)
            return JsonResponse({"count": segment.member_count, "status": segment.status, "progress": segment.progress})
        project = get_object_or_404(Project, pk=project_id)
        probe = Campaign(project=project, channel=channel, marketing=request.GET.get("marketing", "1") != "0")
        return JsonResponse({"count": estimates.audience_profiles(probe).count(), "status": "ready"})


def _field_anchor(campaign: Campaign, name: str) -> str:
    """The form element a campaign_validate finding is about ("send_date",
    "variants[1].content.subject"), as a page anchor; "" when it has none."""
    match = re.fullmatch(r"variants\[(\d+)\](?:\.content\.(\w+))?.*", name)
    if match:
        index, key = match.groups()
        if key and (campaign.channel, key) != (CampaignChannel.PUSH, "data"):
            return f"#id_variants-{index}-{_field_name(campaign.channel, key)}"
        return f"#variants-{index}"
    if name == "variants":
        return "#variants-group"
    return f"#id_{name}" if name in CampaignForm.Meta.fields else ""


def _buttons(campaign: Campaign) -> list[tuple[str, str, str]]:
    """(action, label, url) of the lifecycle buttons that apply to its status."""
    by_status = {
        CampaignStatus.DRAFT: [("start", "Start")],
        CampaignStatus.SCHEDULED: [("pause", "Pause"), ("cancel", "Cancel")],
        CampaignStatus.RUNNING: [("pause", "Pause"), ("cancel", "Cancel")],
        CampaignStatus.PAUSED: [("resume", "Resume"), ("cancel", "Cancel")],
    }
    return [
        (action, label, reverse(f"admin:campaigns_campaign_{action}", args=[campaign.pk]))
        for action, label in by_status.get(campaign.status, [])
    ]
