"""`import_events`: a history file of newline-delimited JSON messages into the store.

Two steps that share nothing but the chunks handed from one to the other:
- parse (`_chunks_parse`): the file's lines, validated exactly as the collectors
  validate a message (ingestion.spec), grouped into chunks per project;
- store (`ChunkWriter`): each chunk through ingestion.store.chunk_store, on a
  writer thread with its own connection. psycopg2 releases the GIL while
  PostgreSQL works, so parsing (one core) and the database (the other) overlap.
"""

from __future__ import annotations

import gzip
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from django.db import connection
from django.utils import timezone

from crm.selectors import project_for_write_key
from ingestion.spec import MAX_MESSAGE_BYTES, MessageError, message_normalize, parse_time
from ingestion.store import StoreResult, chunk_store

# Messages per transaction of import_events. Larger than the workers' chunks:
# a history has many events per user, and each chunk costs one profile update
# per user in it: 50,000 imported 11% faster than 10,000 (docs/benchmarks.md,
# "Bulk import"); the import process peaks at ~750 MB (one chunk parsed, one stored).
IMPORT_CHUNK = 50_000


@dataclass(frozen=True)
class ImportLineRejected:
    line: int
    field: str
    message: str


@dataclass
class ImportResult:
    lines: int = 0
    rejected: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    seconds: float = 0.0
    rejected_lines: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rejected_lines"] = out["rejected_lines"][:100]
        out["events_per_s"] = round(self.stored / self.seconds, 1) if self.seconds else 0.0
        return out


def events_import(
    *,
    path: Path,
    project_id: int | None = None,
    chunk: int = IMPORT_CHUNK,
    on_progress: Callable[[int], Any] | None = None,
    on_rejected: Callable[[ImportLineRejected], Any] | None = None,
) -> ImportResult:
    """Import newline-delimited JSON messages (gzip too) into the store.

    Each line is validated exactly as the collectors validate a message
    (ingestion.spec) and stored by the ingest workers' path
    (ingestion.store.chunk_store), in transactions of `chunk` messages: a
    history of many events per user costs one profile update per user per
    chunk, not one per event. The project is `project_id`, or each line's
    `writeKey`. A line's own `receivedAt` (exports carry it) is the reference
    of its clock-skew correction; otherwise the import time is. Rejected lines
    are reported through `on_rejected` with their line numbers and skipped;
    `on_progress` gets the bytes read since its last call. Re-running a file
    stores nothing twice (message ids; a line without one gets an id derived
    from its content).

    The chunks are stored on a writer thread with its own connection while the
    next chunk is parsed (inline when called inside a transaction, whose rows
    that connection could not see).
    """
    result = ImportResult()
    started = time.perf_counter()
    with path.open("rb") as raw, ChunkWriter(threaded=not connection.in_atomic_block) as writer:
        for pid, messages in _chunks_parse(
            raw, result=result, project_id=project_id, chunk=chunk, on_progress=on_progress, on_rejected=on_rejected
        ):
            writer.put(project_id=pid, messages=messages)
        stored = writer.close()
    result.stored, result.duplicates, result.dead_lettered = stored.stored, stored.duplicates, stored.dead_lettered
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def _chunks_parse(
    raw: IO[bytes],
    *,
    result: ImportResult,
    project_id: int | None,
    chunk: int,
    on_progress: Callable[[int], Any] | None,
    on_rejected: Callable[[ImportLineRejected], Any] | None,
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """The file's valid lines as normalised messages, in chunks of at most
    `chunk` messages of one project: (project id, messages). Counts the lines
    and the rejected ones in `result`."""
    now = timezone.now()
    now_text = now.isoformat()
    pending: dict[int, list[dict[str, Any]]] = {}
    position = 0
    number = 0
    for block in _line_blocks(raw):
        if on_progress:
            now_position = raw.tell()
            on_progress(now_position - position)
            position = now_position
        for line in block:
            number += 1
            line = line.strip()
            if not line:
                continue
            try:
                if len(line) > MAX_MESSAGE_BYTES:
                    raise MessageError("message", f"message is larger than {MAX_MESSAGE_BYTES // 1024} KB")
                try:
                    message = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise MessageError("line", "malformed JSON") from None
                if not isinstance(message, dict):
                    raise MessageError("line", "each line must be a JSON object")
                pid = project_id
                if pid is None:
                    key = message.get("writeKey")
                    project = project_for_write_key(key) if isinstance(key, str) else None
                    if project is None:
                        raise MessageError("writeKey", "unknown or missing writeKey (or pass --project)")
                    pid = project.pk
                received_at = parse_time(message.get("receivedAt"), "receivedAt")
                normalized = message_normalize(
                    message,
                    project_id=pid,
                    received_at=received_at or now,
                    check_size=False,
                    received_at_text=None if received_at else now_text,
                )
            except MessageError as exc:
                result.rejected += 1
                if len(result.rejected_lines) < 10_000:
                    result.rejected_lines.append(number)
                if on_rejected:
                    on_rejected(ImportLineRejected(line=number, field=exc.field, message=exc.error))
                continue
            batch = pending.get(pid)
            if batch is None:
                batch = pending[pid] = []
            batch.append(normalized)
            if len(batch) >= chunk:
                yield pid, pending.pop(pid)
    result.lines = number
    for pid in list(pending):
        yield pid, pending.pop(pid)
    if on_progress:
        on_progress(raw.tell() - position)


def _open_lines(raw: IO[bytes]) -> IO[bytes]:
    """The file's lines, gunzipped when it starts with the gzip magic bytes."""
    magic = raw.read(2)
    raw.seek(0)
    return gzip.GzipFile(fileobj=raw) if magic == b"\x1f\x8b" else raw


# Lines are read in blocks of this size and split in C: iterating a GzipFile
# line by line costs a Python call per line.
_READ_BLOCK = 1 << 20


def _line_blocks(raw: IO[bytes]) -> Iterator[list[bytes]]:
    """The file's lines (without their newline), a block's worth at a time."""
    lines = _open_lines(raw)
    rest = b""
    while block := lines.read(_READ_BLOCK):
        parts = (rest + block).split(b"\n")
        rest = parts.pop()
        yield parts
    if rest:
        yield [rest]


class ChunkWriter:
    """Stores chunks with `chunk_store`, on a writer thread with its own
    database connection (`threaded=True`) or in the caller's thread.

    `put` hands over a chunk and returns at once unless the writer is still
    busy with the previous one (at most one chunk waits: memory stays at two
    chunks). `close` waits for the writer and returns the totals. An error of
    the writer is raised by the next `put` or by `close`.

    Threaded mode needs the caller to be outside a transaction: the writer's
    connection cannot see the caller's uncommitted rows.
    """

    def __init__(self, *, threaded: bool) -> None:
        self.result = StoreResult()
        self._error: BaseException | None = None
        self._queue: queue.Queue[tuple[int, Sequence[dict[str, Any]]] | None] | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._queue = queue.Queue(maxsize=1)
            self._thread = threading.Thread(target=self._run, name="import-writer", daemon=True)
            self._thread.start()

    def put(self, *, project_id: int, messages: Sequence[dict[str, Any]]) -> None:
        self._raise_error()
        if self._queue is None:
            self.result.add(chunk_store(project_id=project_id, messages=messages))
            return
        self._queue.put((project_id, messages))

    def close(self) -> StoreResult:
        """Wait for the chunks handed over, then return the totals (or raise the writer's error)."""
        self._stop()
        self._raise_error()
        return self.result

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Also on an error of the caller: the writer finishes the chunk in hand
        # (each chunk is its own transaction) and its connection is closed.
        self._stop()

    def _stop(self) -> None:
        if self._queue is not None and self._thread is not None:
            if self._thread.is_alive():
                self._queue.put(None)
                self._thread.join()
            self._queue = None

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        assert self._queue is not None
        try:
            while (item := self._queue.get()) is not None:
                if self._error is None:
                    try:
                        self.result.add(chunk_store(project_id=item[0], messages=item[1]))
                    except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                        self._error = exc
        finally:
            # This thread's own connection (Django opens one per thread).
            connection.close()
