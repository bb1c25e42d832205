"""The product catalog: products, and the upload jobs that fill it from CSV files."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from crm.models import Project


class Product(models.Model):
    """One product of a project's catalog, as the customer's CSV describes it.

    Products are never deleted by an import: a replace-mode upload marks the ones
    missing from the file inactive, so events and recommendations that name them
    still resolve.
    """

    # No index of its own: the unique (project, product_id) index leads with project_id
    # and serves every per-project query; one index fewer to maintain per imported row.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="products", db_index=False)
    # The customer's own id (the `product_id` of their events).
    product_id = models.CharField(max_length=255)
    name = models.CharField(max_length=500, blank=True, default="")
    # The category path as a list of levels: "Movies > Drama" -> ["Movies", "Drama"].
    # Filtered by JSON containment (catalog.selectors.ProductFilter): GIN index
    # product_categories_gin, like product_properties_gin on `properties` (migration 0001).
    categories = models.JSONField(default=list, blank=True)
    price = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True, default="")
    rating = models.FloatField(null=True, blank=True)
    description = models.TextField(blank=True, default="")
    image_url = models.URLField(max_length=2048, blank=True, default="")
    deeplink = models.CharField(max_length=2048, blank=True, default="")
    in_stock = models.BooleanField(default=True)
    is_active = models.BooleanField(default=True)
    # Every further CSV column, typed: number, boolean, text, or date (an ISO string).
    properties = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The upload (and its row) that last wrote this product: replace mode deactivates
    # what the current upload did not touch, and a second row with the same id in one
    # file is recognised as a duplicate without keeping every id of the file in memory.
    # A plain id, not a foreign key: deleting an old upload must not rewrite millions
    # of product rows, and the import does not pay a constraint check per row.
    last_upload_id = models.BigIntegerField(null=True, blank=True, editable=False)
    last_upload_row = models.PositiveBigIntegerField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["id"]
        constraints = [
            # The upsert's conflict target; also serves lookups by the customer's id
            # (API detail, recommendation candidates by id, event enrichment).
            models.UniqueConstraint(fields=["project", "product_id"], name="product_id_unique_per_project"),
        ]
        indexes = [
            # Recommendation candidates and the API list: a project's active products,
            # in stock or not, within a price range (project_id = ? AND in_stock AND price BETWEEN).
            models.Index(
                fields=["project", "in_stock", "price"], condition=Q(is_active=True), name="product_active_stock_price"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.product_id} {self.name}".strip()


class UploadMode(models.TextChoices):
    UPSERT = "upsert", "Upsert: create or update the products in the file, leave the others"
    REPLACE = "replace", "Replace: also deactivate the products missing from the file"


class UploadState(models.TextChoices):
    PENDING = "pending", "Awaiting confirmation"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class UploadSource(models.TextChoices):
    ADMIN = "admin"
    API = "api"
    CLI = "cli"
    DEMO = "demo"


class CatalogUpload(models.Model):
    """One catalog file and its import: the single record that the admin, the API
    and the command line all read for state, progress, counts and the error file."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="catalog_uploads")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source = models.CharField(max_length=8, choices=UploadSource.choices, default=UploadSource.API)
    mode = models.CharField(max_length=8, choices=UploadMode.choices, default=UploadMode.UPSERT)
    state = models.CharField(max_length=10, choices=UploadState.choices, default=UploadState.PENDING)
    file = models.FileField(upload_to="catalog/uploads/%Y/%m/", max_length=500)
    original_name = models.CharField(max_length=255, blank=True, default="")
    size_bytes = models.BigIntegerField(default=0)
    # What the first rows told: encoding, delimiter, the recognised columns and a preview.
    encoding = models.CharField(max_length=16, blank=True, default="")
    header_row = models.PositiveIntegerField(default=1)  # 2 after an Excel "sep=;" line
    delimiter = models.CharField(max_length=1, blank=True, default="")
    columns = models.JSONField(default=list, blank=True)
    preview = models.JSONField(default=list, blank=True)
    # Progress, committed with every chunk: a resumed import starts after `rows_processed`.
    progress = models.FloatField(default=0.0)  # percent of the file's bytes read
    rows_processed = models.PositiveBigIntegerField(default=0)
    created = models.PositiveBigIntegerField(default=0)
    updated = models.PositiveBigIntegerField(default=0)
    deactivated = models.PositiveBigIntegerField(default=0)
    rejected = models.PositiveBigIntegerField(default=0)
    error_file = models.FileField(upload_to="catalog/errors/%Y/%m/", max_length=500, blank=True, default="")
    message = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            # "Is another import of this project running?" before an import starts.
            models.Index(fields=["project", "state"], name="catalog_upload_project_state"),
        ]

    def __str__(self) -> str:
        return f"Upload #{self.pk} ({self.original_name or self.file.name})"

    @property
    def is_finished(self) -> bool:
        return self.state in (UploadState.DONE, UploadState.FAILED, UploadState.CANCELLED)


class CatalogUploadError(models.Model):
    """One rejected value of an upload. Kept in the database, chunk by chunk with the
    products, so a resumed import neither loses nor repeats them; the downloadable
    CSV is written from these rows when the import ends."""

    upload = models.ForeignKey(CatalogUpload, on_delete=models.CASCADE, related_name="errors")
    row = models.PositiveBigIntegerField()  # the file's record number, header = 1
    product_id = models.CharField(max_length=255, blank=True, default="")
    column = models.CharField(max_length=255, blank=True, default="")
    value = models.TextField(blank=True, default="")
    reason = models.CharField(max_length=500)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"row {self.row} {self.column}: {self.reason}"


class CatalogState(models.Model):
    """A token that changes whenever any of a project's products changes.

    Written by database triggers on catalog_product (migration 0002), so every
    writer is covered: uploads, the API, the console, raw SQL. Recommendation
    serving keeps catalog rows in per-process memory and reads this token in the
    same query as the user's profile: a different token empties the project's
    cache, so a product changed by a committed transaction is served as it is
    now from the next request on.

    The token comes from a sequence, not a counter: a sequence never gives a
    value twice, not even after a rolled-back transaction, so a token once seen
    always means the same catalog. The row update serialises concurrent catalog
    writers of one project at the end of their statements, which is what makes
    "the newest token" and "the newest committed catalog" the same thing.
    """

    # A plain id, not a foreign key: the triggers write this row while a project's
    # products are being deleted with the project itself, after Django collected
    # what to delete; a foreign key would then refuse the project's deletion.
    project_id = models.BigIntegerField(primary_key=True)
    token = models.BigIntegerField()

    def __str__(self) -> str:
        return f"catalog state of project {self.project_id}: {self.token}"
