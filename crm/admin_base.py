"""Tenant scoping for the console, shared by every app's admin, and the
console's answer to query strings the database cannot take.

A superuser sees everything. A staff user sees and changes only the rows of the
projects they are a member of: querysets, foreign-key choices and object
permissions are all narrowed here, so an admin class cannot forget one.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import DataError, transaction
from django.db.models import JSONField, Model, QuerySet
from django.forms.fields import InvalidJSONInput
from django.http import HttpRequest
from django.utils.functional import cached_property

from crm.api import params
from crm.models import Project
from crm.selectors import project_ids_for_user
from crm.storable import MAX_JSON_DEPTH, json_problem, text_problem


def allowed_project_ids(request: HttpRequest) -> list[int] | None:
    """None means all projects (superuser)."""
    user = request.user
    if user.is_superuser:
        return None
    cached = getattr(request, "_allowed_project_ids", None)
    if cached is None:
        cached = project_ids_for_user(user) if user.is_active and user.is_staff else []
        request._allowed_project_ids = cached  # type: ignore[attr-defined]
    return cached


class CappedCountPaginator(Paginator):
    """Counts at most CAP rows: `COUNT(*)` over a big events table is a full scan.
    Past the cap the console shows CAP and the marketer narrows with filters."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:  # type: ignore[override]
        return self.object_list[: self.CAP].count()


class CheckedChangeList(ChangeList):
    """A changelist whose filters the database refuses is a bad filter, as Django
    answers one it cannot apply itself: a redirect to `?e=1`.

    Django checks each value against its field, but some pass and fail only when
    the query runs, which was while the page rendered (a 500): a NUL (psycopg2
    refuses it, jsonb refuses \\u0000), `day__year=99999` (no such date when the
    SQL is built), `price__gte=1e999999` (beyond PostgreSQL's numeric). The
    filtered count runs first, in get_results: it is run here in a savepoint, so a
    refusal leaves the request's transaction usable, and turned into the redirect.
    Django's date hierarchy (`attempt_time__year=9999`) fails before that, when
    it builds the range's end (year 10000): get_filters."""

    def get_filters(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().get_filters(request, *args, **kwargs)
        except (ValueError, OverflowError) as exc:
            raise IncorrectLookupParameters(exc) from exc

    def get_results(self, request: HttpRequest) -> None:
        try:
            with transaction.atomic(using=self.queryset.db):
                super().get_results(request)
        except (DataError, ValueError) as exc:
            raise IncorrectLookupParameters(exc) from exc


class StorableJSONField(forms.JSONField):
    """A console form's JSON field that refuses what the jsonb column cannot
    hold, as a form error naming the field and where in the value
    (crm.storable.json_problem): json.loads accepts a NUL (\\u0000), 1e999, NaN,
    a lone surrogate, any depth, and the save failed with a 500. `path` is the
    field's name, as the errors name it; `empty` makes the value of an empty box
    (the column's default where it is NOT NULL: Django's None was a 500)."""

    def __init__(self, *, path: str, empty: Callable[[], Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path, self.empty = path, empty

    def _loaded(self, value: Any) -> Any:
        # json.loads recurses once a level: "[" * 100000 is a RecursionError,
        # which forms.JSONField does not catch (a 500 on clean and on render).
        try:
            return super().to_python(value)
        except RecursionError:
            raise ValidationError(f"{self.path}: nested deeper than {MAX_JSON_DEPTH} levels", code="invalid") from None

    def to_python(self, value: Any) -> Any:
        if self.empty is not None and value in self.empty_values:
            return self.empty()  # {} or [] are empty values too: `required` still holds
        converted = self._loaded(value)
        problem = json_problem(converted, path=self.path)
        if problem:
            raise ValidationError(problem, code="invalid")
        return converted

    def bound_data(self, data: Any, initial: Any) -> Any:
        # A refused value is shown again as it was typed: re-encoding it would
        # put the lone surrogate into the page (a UnicodeEncodeError).
        if self.disabled:
            return initial
        if data is None:
            return None
        try:
            loaded = json.loads(data, cls=self.decoder)
        except (json.JSONDecodeError, RecursionError):
            return InvalidJSONInput(data)
        return InvalidJSONInput(data) if json_problem(loaded, path=self.path) else loaded


class ConsoleAdmin(admin.ModelAdmin):
    """Base of every admin of the project (ProjectScopedAdmin derives from it;
    console_admins_checked adds it to other apps' admins): no query string or
    search term makes a console page answer 500, and no JSON typed into a form
    a save that fails."""

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if isinstance(db_field, JSONField):
            empty = None if db_field.null else db_field.get_default
            kwargs.setdefault("form_class", functools.partial(StorableJSONField, path=db_field.name, empty=empty))
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return CheckedChangeList

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        # The changelist's search form refuses a NUL itself (Django's message);
        # the autocomplete view (admin/autocomplete/?term=) passes its term here
        # as it came. A term the database cannot hold matches no stored text.
        if text_problem(search_term):
            return queryset.none(), False
        return super().get_search_results(request, queryset, search_term)


def console_admins_checked(site: admin.AdminSite = admin.site) -> None:
    """Give the admins other apps register (Django's users and groups,
    django-celery-beat's schedules) ConsoleAdmin's checks: they are pages of the
    same console, open to superusers. Runs once every admin module is loaded
    (CrmConfig.ready: django.contrib.admin, listed first, loads them)."""
    for model, model_admin in list(site._registry.items()):
        if not isinstance(model_admin, ConsoleAdmin):
            original = type(model_admin)
            site.unregister(model)
            site.register(model, type(original.__name__, (ConsoleAdmin, original), {"__module__": original.__module__}))


class ProjectFilter(admin.SimpleListFilter):
    """The marketer's own projects only: Django's related-field filter would list
    every project's name. ProjectScopedAdmin puts it in place of "project"."""

    title = "project"
    parameter_name = "project__id__exact"

    def __init__(self, request: HttpRequest, params: Any, model: Any, model_admin: Any) -> None:
        self.project_field = getattr(model_admin, "project_field", "project")
        super().__init__(request, params, model, model_admin)

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        ids = allowed_project_ids(request)
        projects = Project.objects.all() if ids is None else Project.objects.filter(pk__in=ids)
        # Values as the query string gives them: the facet counts ("Show counts")
        # pass these to queryset() in place of the query string's.
        return [(str(p.pk), p.name) for p in projects]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if not value:
            return queryset
        try:
            project_id = params.integer(self.parameter_name, value, minimum=1, maximum=params.MAX_ID)
        except params.BadParameter as exc:
            raise IncorrectLookupParameters(exc.message) from exc
        return queryset.filter(**{f"{self.project_field}__id": project_id})


class ProjectScopedAdmin(ConsoleAdmin):
    """Base admin for models with a `project` foreign key (set `project_field`
    for models that reach their project through a relation)."""

    project_field = "project"

    def _project_filter(self, ids: list[int]) -> dict[str, Any]:
        return {f"{self.project_field}__in": ids}

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        qs = super().get_queryset(request)
        ids = allowed_project_ids(request)
        return qs if ids is None else qs.filter(**self._project_filter(ids))

    def get_list_filter(self, request: HttpRequest) -> list[Any]:
        return [ProjectFilter if f == self.project_field else f for f in super().get_list_filter(request)]

    def _object_project_id(self, obj: Model) -> int | None:
        *path, last = self.project_field.split("__")
        target: Any = obj
        for part in path:
            target = getattr(target, part)
        return getattr(target, f"{last}_id")

    def _may_touch(self, request: HttpRequest, obj: Model | None) -> bool:
        ids = allowed_project_ids(request)
        if ids is None:
            return True
        if not ids:
            return False
        return obj is None or self._object_project_id(obj) in ids

    # Members have full access to their projects' rows; Django's per-model
    # permissions are not needed on top (a membership is the grant).
    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._may_touch(request, None)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._may_touch(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._may_touch(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._may_touch(request, None)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._may_touch(request, obj)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        ids = allowed_project_ids(request)
        if ids is not None:
            related = db_field.remote_field.model
            if related is Project:
                kwargs["queryset"] = Project.objects.filter(pk__in=ids)
            elif any(f.name == "project" for f in related._meta.get_fields()):
                kwargs["queryset"] = related._default_manager.filter(project_id__in=ids)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Model, form: Any, change: bool) -> None:
        # Defence in depth behind the narrowed form choices: a crafted POST with
        # another project's id is refused here.
        if not self._may_touch(request, obj):
            raise PermissionDenied
        super().save_model(request, obj, form, change)


class ReadOnlyFactsAdmin(ProjectScopedAdmin):
    """For rows that are facts (events, dead letters): view only."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return request.user.is_superuser
