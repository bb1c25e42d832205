"""The console for the catalog: products, and the upload page (preview, progress, summary)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from catalog import selectors, services
from catalog.csvfile import CatalogFileError, Column
from catalog.models import CatalogUpload, Product, UploadMode, UploadSource, UploadState
from crm.admin_base import CappedCountPaginator, ProjectScopedAdmin, allowed_project_ids
from crm.models import Project


class CategoryFilter(admin.SimpleListFilter):
    title = "category"
    parameter_name = "category"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = selectors.category_names(project_ids=allowed_project_ids(request))
        current = request.GET.get(self.parameter_name)
        if current and current not in names:
            names = [current, *names]  # a category that is not in the list yet still filters
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Product]) -> QuerySet[Product]:
        value = self.value()
        return queryset.filter(selectors.ProductFilter(categories=(value,)).q()) if value else queryset


@admin.register(Product)
class ProductAdmin(ProjectScopedAdmin):
    list_display = ["thumbnail", "product_id", "name", "category_path", "price", "currency", "in_stock", "is_active"]
    list_display_links = ["product_id", "name"]
    list_select_related = ["project"]
    list_filter = [CategoryFilter, "in_stock", "is_active", "project"]
    # `=product_id` is an exact match on the unique (project, product_id) index;
    # the name is a substring match (a scan of the project's products).
    search_fields = ["=product_id", "name"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    list_per_page = 50

    class Media:
        css = {"all": ["catalog/console.css"]}  # the image sizes (no inline styles: config/security.py)

    actions = ["activate", "deactivate"]
    readonly_fields = ["project", "product_id", "image_preview", "created_at", "updated_at"]
    fields = [
        "project",
        "product_id",
        "name",
        "categories",
        "price",
        "currency",
        "rating",
        "description",
        "image_url",
        "image_preview",
        "deeplink",
        "in_stock",
        "is_active",
        "properties",
        "created_at",
        "updated_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # products come from catalog uploads

    def has_delete_permission(self, request: HttpRequest, obj: Product | None = None) -> bool:
        # Events and recommendations name products: marketers deactivate instead.
        return request.user.is_superuser

    def get_queryset(self, request: HttpRequest) -> QuerySet[Product]:
        qs = super().get_queryset(request)
        match = request.resolver_match
        if match is not None and match.url_name and match.url_name.endswith("changelist"):
            qs = qs.defer("description", "properties")  # shown on the detail page only
        return qs

    @admin.display(description="")
    def thumbnail(self, obj: Product) -> str:
        if not obj.image_url:
            return "—"
        return format_html('<img src="{}" alt="" loading="lazy" class="product-thumbnail">', obj.image_url)

    @admin.display(description="image")
    def image_preview(self, obj: Product) -> str:
        if not obj.image_url:
            return "—"
        return format_html('<img src="{}" alt="" class="product-image">', obj.image_url)

    @admin.display(description="categories")
    def category_path(self, obj: Product) -> str:
        return " > ".join(obj.categories or [])

    def _set_active(self, request: HttpRequest, queryset: QuerySet[Product], active: bool) -> None:
        changed = 0
        for project_id in set(queryset.values_list("project_id", flat=True)):
            pks = list(queryset.filter(project_id=project_id).values_list("pk", flat=True))
            changed += services.products_set_active(project_id=project_id, product_pks=pks, active=active)
        self.message_user(request, f"{changed} product(s) {'activated' if active else 'deactivated'}.")

    @admin.action(description="Activate the selected products")
    def activate(self, request: HttpRequest, queryset: QuerySet[Product]) -> None:
        self._set_active(request, queryset, True)

    @admin.action(description="Deactivate the selected products")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[Product]) -> None:
        self._set_active(request, queryset, False)


class UploadForm(forms.Form):
    project = forms.ModelChoiceField(queryset=Project.objects.none())
    mode = forms.ChoiceField(choices=UploadMode.choices, initial=UploadMode.UPSERT, widget=forms.RadioSelect)
    file = forms.FileField(
        help_text="CSV with a header row and a product_id (or id, sku) column; UTF-8 or Latin-1; "
        "comma, semicolon or tab separated."
    )

    def __init__(self, *args: Any, projects: QuerySet[Project], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["project"].queryset = projects  # type: ignore[attr-defined]
        if projects.count() == 1:
            self.fields["project"].initial = projects.first()


@admin.register(CatalogUpload)
class CatalogUploadAdmin(ProjectScopedAdmin):
    list_display = [
        "id",
        "original_name",
        "project",
        "mode",
        "state",
        "progress_percent",
        "created",
        "updated",
        "deactivated",
        "rejected",
        "created_at",
    ]
    list_display_links = ["id", "original_name"]
    list_select_related = ["project"]
    list_filter = ["state", "mode", "project"]
    show_full_result_count = False
    paginator = CappedCountPaginator

    def has_delete_permission(self, request: HttpRequest, obj: CatalogUpload | None = None) -> bool:
        return request.user.is_superuser  # the history of what was imported

    @admin.display(description="progress")
    def progress_percent(self, obj: CatalogUpload) -> str:
        return f"{obj.progress:.0f}%"

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/status/", wrap(self.status_view), name="catalog_catalogupload_status"),
            path("<int:pk>/start/", wrap(require_POST(self.start_view)), name="catalog_catalogupload_start"),
            path("<int:pk>/cancel/", wrap(require_POST(self.cancel_view)), name="catalog_catalogupload_cancel"),
            path("<int:pk>/errors/", wrap(self.errors_view), name="catalog_catalogupload_errors"),
            *super().get_urls(),
        ]

    def _projects(self, request: HttpRequest) -> QuerySet[Project]:
        ids = allowed_project_ids(request)
        return Project.objects.all() if ids is None else Project.objects.filter(pk__in=ids)

    def _upload_or_404(self, request: HttpRequest, pk: int) -> CatalogUpload:
        # The scoped queryset: another project's upload is a 404, like a missing one.
        return get_object_or_404(self.get_queryset(request), pk=pk)

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        """The upload page: project, mode and file; then the preview (change view)."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        projects = self._projects(request)
        form = UploadForm(request.POST or None, request.FILES or None, projects=projects)
        if request.method == "POST" and form.is_valid():
            try:
                upload = services.catalog_upload_create(
                    project_id=form.cleaned_data["project"].pk,
                    file=form.cleaned_data["file"],
                    mode=form.cleaned_data["mode"],
                    source=UploadSource.ADMIN,
                    created_by_id=request.user.pk,
                    start=False,
                )
            except CatalogFileError as exc:
                form.add_error("file", str(exc))
            else:
                return HttpResponseRedirect(reverse("admin:catalog_catalogupload_change", args=[upload.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": "Upload a catalog",
            "opts": self.model._meta,
            "form": form,
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/catalog/catalogupload/upload_form.html", context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        """One page per upload: the preview while pending, the progress bar while it
        runs, the summary when done."""
        try:
            upload = self._upload_or_404(request, int(object_id))
        except ValueError:
            raise Http404 from None
        columns = [Column.from_json(c) for c in upload.columns]
        context = {
            **self.admin_site.each_context(request),
            "title": str(upload),
            "opts": self.model._meta,
            "upload": upload,
            "summary": selectors.upload_summary(upload),
            "columns": columns,
            "preview_rows": [
                [row[c.index] if c.index < len(row) else "" for c in columns] for row in (upload.preview or [])
            ],
            "errors": selectors.upload_errors(upload_id=upload.pk, limit=20),
            "is_pending": upload.state == UploadState.PENDING,
            "status_url": reverse("admin:catalog_catalogupload_status", args=[upload.pk]),
            "errors_url": reverse("admin:catalog_catalogupload_errors", args=[upload.pk]),
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/catalog/catalogupload/detail.html", context)

    def status_view(self, request: HttpRequest, pk: int) -> JsonResponse:
        """What the progress bar polls."""
        upload = self._upload_or_404(request, pk)
        return JsonResponse(selectors.upload_summary(upload))

    def start_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        upload = self._upload_or_404(request, pk)
        if not self.has_change_permission(request, upload):
            raise PermissionDenied
        if not services.catalog_upload_start(upload_id=upload.pk):
            messages.warning(request, "This upload was already started or cancelled.")
        return HttpResponseRedirect(reverse("admin:catalog_catalogupload_change", args=[upload.pk]))

    def cancel_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        upload = self._upload_or_404(request, pk)
        if not self.has_change_permission(request, upload):
            raise PermissionDenied
        if services.catalog_upload_cancel(upload_id=upload.pk):
            messages.info(request, "Upload cancelled; nothing was imported.")
        return HttpResponseRedirect(reverse("admin:catalog_catalogupload_changelist"))

    def errors_view(self, request: HttpRequest, pk: int) -> FileResponse:
        upload = self._upload_or_404(request, pk)
        if not upload.error_file:
            raise Http404("this upload has no rejected rows")
        return FileResponse(
            upload.error_file.open("rb"),
            as_attachment=True,
            filename=upload.error_file.name.rsplit("/", 1)[-1],
            content_type="text/csv",
        )
