"""The console for segments.

Segments: a changelist with live counts and a size chart, a rule-tree builder
(campaigns/static/campaigns/segment_builder.js, kept in sync with a hidden
`rules` field) with a preview, the members page, and a section on the profile
page (crm.admin.profile_section_register): the profile's segments, and why it
is or is not in a chosen one."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_POST

from campaigns.models import Segment, SegmentSize, SegmentStatus
from campaigns.segments import selectors
from campaigns.segments.catalogue import segment_rule_catalogue
from campaigns.segments.membership import SegmentInUse, segment_delete, segment_save
from campaigns.segments.rules import RulesInvalid, rules_parse
from crm.admin import profile_section_register
from crm.admin_base import ProjectScopedAdmin, allowed_project_ids
from crm.api import params
from crm.models import Profile
from crm.storable import json_problem

# The size chart covers this much history (SegmentSize rows, by the (segment, at) index).
CHART_DAYS = 30
CHART_WIDTH, CHART_HEIGHT = 120, 24
MEMBERS_PAGE = 100


def sparkline(values: list[int]) -> SafeString:
    """An inline SVG polyline of `values` (oldest first), scaled to the chart's box."""
    if len(values) < 2:
        return mark_safe('<span class="segment-chart-empty">—</span>')
    low, high = min(values), max(values)
    span = (high - low) or 1
    step = CHART_WIDTH / (len(values) - 1)
    points = " ".join(
        f"{i * step:.1f},{CHART_HEIGHT - 2 - (v - low) / span * (CHART_HEIGHT - 4):.1f}" for i, v in enumerate(values)
    )
    return format_html(
        '<svg class="segment-chart" width="{}" height="{}" viewBox="0 0 {} {}" role="img">'
        "<title>{} → {} members</title>"
        '<polyline fill="none" stroke="#417690" stroke-width="1.5" points="{}"/></svg>',
        CHART_WIDTH,
        CHART_HEIGHT,
        CHART_WIDTH,
        CHART_HEIGHT,
        values[0],
        values[-1],
        points,
    )


class SegmentForm(forms.ModelForm):
    """The rules come from the builder as JSON in a hidden field; they are
    parsed here so that a bad tree is a form error naming its paths (saving
    goes through segment_save, in SegmentAdmin.save_model)."""

    class Meta:
        model = Segment
        fields = ["project", "name", "description", "rules"]
        widgets = {"rules": forms.HiddenInput}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if "rules" not in cleaned:
            return cleaned
        problem = json_problem(cleaned["rules"], path="rules")
        if problem:
            self.add_error("rules", problem)
            return cleaned
        project = cleaned.get("project") or (self.instance.project if self.instance.project_id else None)
        if project is None:
            return cleaned  # the project's own error is shown
        try:
            rules_parse(cleaned["rules"], project_id=project.pk, segment_id=self.instance.pk)
        except RulesInvalid as exc:
            self.add_error("rules", [f"{p}: {m}" for p, m in exc.errors])
        return cleaned


@admin.register(Segment)
class SegmentAdmin(ProjectScopedAdmin):
    form = SegmentForm
    change_form_template = "admin/campaigns/segment/change_form.html"
    list_display = [
        "name",
        "project",
        "status",
        "progress_shown",
        "member_count",
        "size_chart",
        "computed_at",
        "members",
    ]
    list_filter = ["project", "status"]
    list_select_related = ["project"]
    search_fields = ["name"]
    readonly_fields = ["status", "progress_shown", "member_count", "computed_at", "rules_version", "error", "members"]
    fieldsets = [
        (None, {"fields": ["project", "name", "description", "rules"]}),
        (
            "Membership",
            {
                "fields": [
                    "status",
                    "progress_shown",
                    "member_count",
                    "computed_at",
                    "rules_version",
                    "error",
                    "members",
                ]
            },
        ),
    ]

    class Media:
        js = ["campaigns/segment_builder.js"]
        css = {"all": ["campaigns/segments.css"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Segment]:
        # The size charts of a changelist page in ONE query (Django batches the
        # prefetch over the page's segments), bounded to CHART_DAYS.
        since = timezone.now() - timedelta(days=CHART_DAYS)
        sizes = SegmentSize.objects.filter(at__gte=since).order_by("at").only("segment_id", "at", "members")
        return super().get_queryset(request).prefetch_related(Prefetch("sizes", queryset=sizes, to_attr="chart_sizes"))

    def get_readonly_fields(self, request: HttpRequest, obj: Segment | None = None) -> list[str]:
        # A segment stays in its project: its members and references are that project's.
        return [*self.readonly_fields, "project"] if obj else list(self.readonly_fields)

    @admin.display(description="progress")
    def progress_shown(self, obj: Segment) -> str:
        return f"{obj.progress:.0%}" if obj.status == SegmentStatus.COMPUTING else "—"

    @admin.display(description=f"size, last {CHART_DAYS} days")
    def size_chart(self, obj: Segment) -> SafeString:
        return sparkline([s.members for s in getattr(obj, "chart_sizes", [])])

    @admin.display(description="members")
    def members(self, obj: Segment) -> SafeString:
        if obj.pk is None:
            return mark_safe("—")
        url = reverse("admin:campaigns_segment_members", args=[obj.pk])
        return format_html('<a href="{}" class="segment-members-link">{} members</a>', url, obj.member_count)

    # --- writes through the service ---------------------------------------------

    def save_model(self, request: HttpRequest, obj: Segment, form: Any, change: bool) -> None:
        if not self._may_touch(request, obj):
            raise PermissionDenied
        saved = segment_save(
            project_id=obj.project_id,
            name=obj.name,
            rules=obj.rules,
            description=obj.description,
            segment_id=obj.pk if change else None,
        )
        obj.pk = saved.pk
        obj.refresh_from_db()

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[list[str], dict[str, int], set, list[str]]:
        """The confirmation page: the segments only (their members, changes and
        sizes go with them; Django's collector would list every member row), and
        as protected the other segments whose rules refer to them (segment_delete
        refuses those: SegmentInUse)."""
        segments = list(objs)
        ids = [s.pk for s in segments]
        protected = []
        for segment in segments:
            users = (
                Segment.objects.filter(project_id=segment.project_id, dependencies__segments__contains=[segment.pk])
                .exclude(pk__in=ids)
                .values_list("name", flat=True)
            )
            protected += [f"{name} (its rules refer to {segment})" for name in users]
        return [str(s) for s in segments], {"segments": len(segments)}, set(), protected

    def delete_model(self, request: HttpRequest, obj: Segment) -> None:
        segment_delete(project_id=obj.project_id, segment_id=obj.pk)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Segment]) -> None:
        # Segments that refer to others of the selection go first: each pass
        # deletes those no remaining segment refers to.
        pending = list(queryset)
        while pending:
            left = []
            for segment in pending:
                try:
                    segment_delete(project_id=segment.project_id, segment_id=segment.pk)
                except SegmentInUse:
                    left.append(segment)
            if len(left) == len(pending):
                raise SegmentInUse(left[0].pk, [s.name for s in left])
            pending = left

    # --- the builder, the preview, the members page ---------------------------------

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("preview/", wrap(require_POST(self.preview_view)), name="campaigns_segment_preview"),
            path("<int:pk>/members/", wrap(self.members_view), name="campaigns_segment_members"),
            *super().get_urls(),
        ]

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Segment | None = None,
    ) -> Any:
        ids = allowed_project_ids(request)
        others = Segment.objects.all() if ids is None else Segment.objects.filter(project_id__in=ids)
        if obj is not None:
            others = others.filter(project_id=obj.project_id).exclude(pk=obj.pk)
        context["builder"] = {
            "catalogue": json.dumps(segment_rule_catalogue()),
            "segments": json.dumps(list(others.order_by("name").values("id", "name", "project_id"))),
            "preview_url": reverse("admin:campaigns_segment_preview"),
            "project_id": obj.project_id if obj else "",
        }
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    def preview_view(self, request: HttpRequest) -> JsonResponse:
        """POST `{"project": id, "rules": tree}` (the builder's current tree):
        the preview's JSON (selectors.segment_preview), 400 `{field: [messages]}`
        for a bad body, 404 for a project the marketer is not a member of."""
        try:
            body = json.loads(request.body or b"null")
        except ValueError:
            return JsonResponse({"body": ["must be JSON"]}, status=400)
        if not isinstance(body, dict):
            return JsonResponse({"body": ["must be a JSON object"]}, status=400)
        try:
            project_id = params.integer("project", str(body.get("project", "")), minimum=1, maximum=params.MAX_ID)
        except params.BadParameter as exc:
            return JsonResponse(
                {"project": ["choose a project"] if not body.get("project") else [exc.message]}, status=400
            )
        ids = allowed_project_ids(request)
        if ids is not None and project_id not in ids:
            raise Http404("no such project")
        problem = json_problem(body.get("rules"), path="rules")
        if problem:
            return JsonResponse({"rules": [problem]}, status=400)
        try:
            preview = selectors.segment_preview(project_id=project_id, rules=body.get("rules"))
        except RulesInvalid as exc:
            return JsonResponse({"rules": [f"{p}: {m}" for p, m in exc.errors]}, status=400)
        return JsonResponse(preview.as_json())

    def members_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """A segment's stored members by profile id, MEMBERS_PAGE a page
        (`?after=<profile id>`), each linked to its profile's page."""
        # Without the changelist's size charts; with the project the page names.
        segment = get_object_or_404(self.get_queryset(request).prefetch_related(None).select_related("project"), pk=pk)
        raw_after = request.GET.get("after", "")
        try:
            after = params.integer("after", raw_after, minimum=0, maximum=params.MAX_ID) if raw_after else 0
        except params.BadParameter as exc:
            raise Http404(exc.message) from exc
        rows = list(
            selectors.segment_members(project_id=segment.project_id, segment_id=segment.pk)
            .filter(profile_id__gt=after)
            .order_by("profile_id")[: MEMBERS_PAGE + 1]
        )
        more = len(rows) > MEMBERS_PAGE
        rows = rows[:MEMBERS_PAGE]
        context = {
            **self.admin_site.each_context(request),
            "title": f"Members of {segment}",
            "opts": self.model._meta,
            "segment": segment,
            "members": [(m, reverse("admin:crm_profile_change", args=[m.profile_id])) for m in rows],
            "next_after": rows[-1].profile_id if more else None,
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/campaigns/segment/members.html", context)


def profile_segments_section(request: HttpRequest, profile: Profile) -> SafeString:
    """The profile page's "Segments": every segment of the profile's project,
    whether the profile is a member, and for the one chosen by `?segment=<id>`
    each condition met or not (selectors.profile_segment_why). The profile page
    already checked that the marketer may see this profile's project."""
    memberships = {
        m.segment_id: m for m in selectors.profile_segments(project_id=profile.project_id, profile_id=profile.pk)
    }
    segments = list(Segment.objects.filter(project_id=profile.project_id).order_by("name").only("id", "name"))
    why = error = None
    raw = request.GET.get("segment", "")
    if raw:
        try:
            segment_id = params.integer("segment", raw, minimum=1, maximum=params.MAX_ID)
            why = selectors.profile_segment_why(
                project_id=profile.project_id, profile_id=profile.pk, segment_id=segment_id
            )
        except (params.BadParameter, Segment.DoesNotExist):
            error = "No such segment in this profile's project."
    return render_to_string(
        "admin/campaigns/segment/profile_section.html",
        {
            "rows": [(s, memberships.get(s.pk)) for s in segments],
            "why": why,
            "error": error,
            "profile_url": reverse("admin:crm_profile_change", args=[profile.pk]),
        },
        request=request,
    )


profile_section_register(profile_segments_section)

# The campaigns console (the builder, preview, estimate, runs) registers its admins there.
from campaigns import admin_campaigns  # noqa: E402, F401
