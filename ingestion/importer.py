"""`import_events`: a history file of newline-delimited JSON messages into the store.

Two processes that share nothing but the chunks handed from one to the other:
- the parser (`_parser_run`, a child process): the file's lines, validated
  exactly as the collectors validate a message (ingestion.spec), grouped into
  chunks per project (`_chunks_parse`), each sent to the writer as one JSON
  document;
- the writer (the calling process): each chunk through ingestion.store.chunk_store,
  one transaction per chunk.
Separate processes, not threads: the parser's Python and the writer's Python
(identities, activity, devices) each need most of a core, and in one process
they shared one interpreter lock (docs/benchmarks.md, "Bulk import"). The
parser works on the next chunk while the writer stores this one, and waits
when it is a chunk ahead: at most about three chunks are in memory.

A chunk commits whole or not at all, and stores nothing twice (message ids):
an import stopped at any point (killed, a database gone) is resumed by running
it again.
"""

from __future__ import annotations

import gzip
import logging
import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any

import orjson
from django.db import connection, connections
from django.utils import timezone

from config.process import bulk_parsing
from crm.selectors import project_for_write_key
from ingestion.spec import MAX_MESSAGE_BYTES, MessageError, message_normalize, nesting_bounded, parse_received_at
from ingestion.store import TRANSIENT_ERRORS, StoreResult, chunk_store

logger = logging.getLogger(__name__)

# Messages per transaction of import_events. Larger than the workers' chunks:
# a history has many events per user, and each chunk costs one profile update
# per user in it: 50,000 imported 11% faster than 10,000 (docs/benchmarks.md,
# "Bulk import").
IMPORT_CHUNK = 50_000

# A chunk that meets a transient database error (connection lost, server
# restarting, deadlock victim) is stored again this many times, after 1, 2, 4 s;
# then the import stops with ImportStopped.
TRANSIENT_RETRIES = 3


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


class ImportStopped(Exception):
    """The database stayed unreachable: the import stopped after `result`
    (the chunks stored so far are committed; running the import again skips
    them and stores the rest)."""

    def __init__(self, message: str, result: ImportResult) -> None:
        super().__init__(message)
        self.result = result


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
    `writeKey`. A line's own `receivedAt` (exports carry it; not before 2000,
    nor more than 24 h after the import time) is the reference of its
    clock-skew correction and future clamp; otherwise the import time is. Rejected lines
    are reported through `on_rejected` with their line numbers and skipped;
    `on_progress` gets the bytes read since its last call. Re-running a file
    stores nothing twice (message ids; a line without one gets an id derived
    from its content).

    The file is parsed in a child process while this one stores (see the
    module docstring); inside a transaction, whose rows a child's connection
    could not see, both run here, one after the other. A chunk that meets a
    transient database error is stored again (TRANSIENT_RETRIES); if the error
    persists, ImportStopped says how far the import got. Precondition (outside
    a transaction): no other thread of this process uses the database while the
    parser is started (its connections are closed before the fork).
    """
    result = ImportResult()
    started = time.perf_counter()
    stored = StoreResult()
    # Rare cyclic collections (config.process.bulk_parsing): a chunk is
    # millions of short-lived objects and no cycles; with the default
    # thresholds the collector took a third of the parse time and a tenth of
    # the store's Python (measured on 100,000 events).
    with bulk_parsing():
        if connection.in_atomic_block:
            with path.open("rb") as raw:
                for pid, messages in _chunks_parse(
                    raw, result=result, project_id=project_id, chunk=chunk, on_progress=on_progress,
                    on_rejected=on_rejected,
                ):  # fmt: skip
                    stored.add(_chunk_store(project_id=pid, messages=messages, result=result, retry=False))
        else:
            for kind, value in _parsed(path=path, project_id=project_id, chunk=chunk):
                if kind == "chunk":
                    pid, lines, payload = value
                    result.lines = lines
                    stored.add(_chunk_store(project_id=pid, messages=orjson.loads(payload), result=result, retry=True))
                    result.stored, result.duplicates = stored.stored, stored.duplicates
                elif kind == "rejected":
                    _line_rejected(result, ImportLineRejected(*value), on_rejected)
                elif kind == "progress":
                    if on_progress:
                        on_progress(value)
                elif kind == "end":
                    result.lines = value
    result.stored, result.duplicates, result.dead_lettered = stored.stored, stored.duplicates, stored.dead_lettered
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def _chunk_store(
    *, project_id: int, messages: Sequence[dict[str, Any]], result: ImportResult, retry: bool
) -> StoreResult:
    """chunk_store, with the transient-error policy of events_import."""
    for attempt in range(TRANSIENT_RETRIES + 1):
        try:
            return chunk_store(project_id=project_id, messages=messages)
        except TRANSIENT_ERRORS as exc:
            if not retry or attempt == TRANSIENT_RETRIES:
                raise ImportStopped(
                    f"import stopped at the chunk ending on line {result.lines}, database error: {exc}. "
                    f"{result.stored} events were stored before it; run the import again to store the "
                    "rest (what is stored already is skipped).",
                    result,
                ) from exc
            logger.warning("chunk ending on line %d: %r; storing it again", result.lines, exc)
            # A broken connection is replaced by a new one on the next query.
            connection.close()
            time.sleep(2**attempt)
    raise AssertionError("unreachable")


def _parsed(*, path: Path, project_id: int | None, chunk: int) -> Iterator[tuple[str, Any]]:
    """What the parser process sends, in order: ("chunk", (project id, lines
    read, JSON of the messages)), ("rejected", (line, field, message)),
    ("progress", bytes read), then ("end", lines). The parser is killed when
    the caller stops early (an error, an interrupt)."""
    # A forked child must not use the parent's connection (one socket, two
    # processes): the parent's are closed and each side opens its own.
    connections.close_all()
    receiver, sender = multiprocessing.Pipe(duplex=False)
    # os.fork, not multiprocessing.Process: that runs the after-fork hooks the
    # libraries registered (Celery's closes its broker connections politely,
    # over sockets the parent still uses). The child touches nothing of the
    # parent's and leaves with os._exit.
    child = os.fork()
    if child == 0:  # pragma: no cover - the parser process
        try:
            receiver.close()
            _parser_run(path, project_id, chunk, sender)
        finally:
            os._exit(0)
    sender.close()
    try:
        while True:
            try:
                kind, value = receiver.recv()
            except EOFError:
                raise RuntimeError("the import's parser process ended unexpectedly") from None
            if kind == "error":
                raise RuntimeError(f"the import's parser failed:\n{value}")
            yield kind, value
            if kind == "end":
                break
    finally:
        receiver.close()
        if os.waitpid(child, os.WNOHANG) == (0, 0):
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)


def _parser_run(path: Path, project_id: int | None, chunk: int, sender: Connection) -> None:
    """The parser process: `_chunks_parse` over the file, each chunk sent as
    one JSON document (a few µs per message each way, less than pickling)."""
    # The signal handlers inherited from the parent are not this process's: it
    # is killed by the parent, and an interrupt is the parent's to handle.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    result = ImportResult()
    try:
        with path.open("rb") as raw:
            for pid, messages in _chunks_parse(
                raw,
                result=result,
                project_id=project_id,
                chunk=chunk,
                on_progress=lambda n: sender.send(("progress", n)),
                on_rejected=lambda r: sender.send(("rejected", (r.line, r.field, r.message))),
            ):
                payload = orjson.dumps(messages)
                del messages
                sender.send(("chunk", (pid, result.lines, payload)))
        sender.send(("end", result.lines))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        sender.send(("error", traceback.format_exc()))
    finally:
        sender.close()
        connections.close_all()


def _line_rejected(
    result: ImportResult, rejected: ImportLineRejected, on_rejected: Callable[[ImportLineRejected], Any] | None
) -> None:
    result.rejected += 1
    if len(result.rejected_lines) < 10_000:
        result.rejected_lines.append(rejected.line)
    if on_rejected:
        on_rejected(rejected)


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
                received_at = parse_received_at(message.get("receivedAt"), now=now)
                normalized = message_normalize(
                    message,
                    project_id=pid,
                    received_at=received_at or now,
                    check_size=False,
                    check_depth=not nesting_bounded(line),
                    received_at_text=None if received_at else now_text,
                )
            except MessageError as exc:
                _line_rejected(result, ImportLineRejected(line=number, field=exc.field, message=exc.error), on_rejected)
                continue
            batch = pending.get(pid)
            if batch is None:
                batch = pending[pid] = []
            batch.append(normalized)
            if len(batch) >= chunk:
                result.lines = number
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
