"""The catalog upload's size limit (CATALOG_UPLOAD_MAX_BYTES), for every request
with a file (multipart/form-data: the upload API and the console's upload form
are the only ones), before anything stores it:

- a Content-Length above the limit is answered 413 before the body is read;
- while the body streams in (a Content-Length that lies, or none where the
  server passes such a body on), an upload handler counts each file's bytes and
  stops at the limit: nothing is written past it, the partial temporary file is
  dropped, and the answer is 413.

The console's forms are parsed here, under the handler, as CsrfViewMiddleware
would parse them next anyway. A view exempt from CSRF (the DRF API) parses its
body itself, after it has authenticated the request, and answers 413 on
UploadTooLarge (catalog.api.views).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest, HttpResponse, JsonResponse

# Room for the form's other fields and the multipart framing around the file.
FORM_OVERHEAD_BYTES = 64 * 1024


class UploadTooLarge(RequestDataTooBig):
    """A file of the request passed CATALOG_UPLOAD_MAX_BYTES. A RequestDataTooBig,
    so that wherever it is not answered 413 Django still answers 400, not 500."""

    def __init__(self, limit: int) -> None:
        super().__init__(_message(limit))
        self.limit = limit


def _message(limit: int) -> str:
    mb = limit / (1024 * 1024)
    size = f"{mb:g} MB" if mb >= 1 else f"{limit} bytes"
    return f"The file is larger than the upload limit of {size} (CATALOG_UPLOAD_MAX_BYTES)."


class UploadLimitHandler(FileUploadHandler):
    """First of the request's upload handlers: passes each chunk on to the next
    handler (memory or temporary file) until the file passes the limit."""

    def __init__(self, request: HttpRequest, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.received = 0

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > self.limit:
            raise UploadTooLarge(self.limit)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler makes the file


def too_large_response(request: HttpRequest, limit: int) -> HttpResponse:
    """413: JSON for the API (DRF's error shape), a short page for the console."""
    message = _message(limit)
    if request.path_info.startswith("/api/"):
        return JsonResponse({"detail": message, "code": "payload_too_large"}, status=413)
    return HttpResponse(
        f"<!doctype html><title>File too large</title><h1>File too large</h1><p>{message}</p>",
        status=413,
        content_type="text/html; charset=utf-8",
    )


class UploadLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.content_type == "multipart/form-data":
            limit = settings.CATALOG_UPLOAD_MAX_BYTES
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0  # Django reads no body then
            if length > limit + FORM_OVERHEAD_BYTES:
                return too_large_response(request, limit)
            request.upload_handlers.insert(0, UploadLimitHandler(request, limit))
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view: Any, args: Any, kwargs: Any) -> HttpResponse | None:
        if request.content_type != "multipart/form-data" or getattr(view, "csrf_exempt", False):
            return None
        try:
            request.POST  # noqa: B018 - parsed here, under the limit, rather than in CsrfViewMiddleware
        except UploadTooLarge as exc:
            return too_large_response(request, exc.limit)
        return None
