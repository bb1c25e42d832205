"""Writes to the catalog. Every way in (console, API, command line, worker, demo
generator) calls these functions; import them from here.

- `products`: the bulk product upsert (COPY), the console's activate/deactivate,
  the catalog token bump.
- `uploads`: the CatalogUpload record, the one record of an import's state,
  progress and counts: create, start, cancel, and the import's steps on it.
- `importer`: the threaded import of an upload's file: parse thread, parallel
  writers committing in file order, replace mode, resume.

Re-exported here is what code outside this package calls; the import's own
steps (the upload record's claim, progress and finish, replace mode's product
writes, the COPY line format) stay in their modules, called by the importer.
"""

from catalog.csvfile import ProductIn  # what products_upsert takes
from catalog.services.importer import (
    IMPORT_CHUNK_ROWS,
    ImportBusy,
    ProgressCallback,
    catalog_import_run,
)
from catalog.services.products import (
    UpsertResult,
    catalog_state_bump,
    products_set_active,
    products_upsert,
)
from catalog.services.uploads import (
    STALE_AFTER,
    catalog_upload_cancel,
    catalog_upload_create,
    catalog_upload_start,
)

__all__ = [
    "IMPORT_CHUNK_ROWS",
    "STALE_AFTER",
    "ImportBusy",
    "ProductIn",
    "ProgressCallback",
    "UpsertResult",
    "catalog_import_run",
    "catalog_state_bump",
    "catalog_upload_cancel",
    "catalog_upload_create",
    "catalog_upload_start",
    "products_set_active",
    "products_upsert",
]
