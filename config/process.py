"""Process-wide tuning, in one place.

Interpreter settings are global to a process, so the apps do not set them at
import time: each entry point calls `process_tune` once for its kind, and code
that needs a setting for a while (the catalog import) uses the scoped helpers
below. Each value was measured; docs/benchmarks.md has the figures.

Entry points: config/wsgi.py (web, collectors, recommendation API), config/celery.py
(every worker kind), manage.py (commands, runserver), the test run (tests/pytest_env.py).
"""

from __future__ import annotations

import csv
import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

ProcessKind = Literal["web", "worker", "command"]

# A product description may legitimately be long; the catalog's own length limits
# reject what is too long with a row-level reason instead of csv.Error stopping
# the whole file (the csv module's default is 128 KB a field).
CSV_FIELD_LIMIT = 16 * 1024 * 1024


def process_tune(*, kind: ProcessKind, switch_interval_ms: int = 0) -> None:
    """Set what this kind of process runs with. Call once, after the app is
    loaded (Django set up, the app's modules imported): the heap is frozen then.

    - every kind: the CSV field limit;
    - web and worker (long-lived): `heap_freeze`;
    - web: the thread switch interval, when `switch_interval_ms` is set
      (WEB_SWITCH_INTERVAL_MS: 1 for the recommendation API's single-threaded
      processes, where the tracking flush thread held requests up for Python's
      default 5 ms, the p99; threaded servers keep the default: with 1 ms the
      collectors' p99 was 127 instead of ~50 ms).
    """
    csv.field_size_limit(CSV_FIELD_LIMIT)
    if kind in ("web", "worker"):
        heap_freeze()
    if kind == "web" and switch_interval_ms:
        sys.setswitchinterval(switch_interval_ms / 1000)


def heap_freeze() -> None:
    """Move everything allocated so far out of the garbage collector's view.

    What a long-lived process loaded at startup (Django, the apps) or keeps for
    good (a preloaded model's lists) is never garbage: frozen, the collector's
    full passes do not walk it again and again while requests and ingest batches
    allocate thousands of short-lived objects (full passes had paused serving up
    to 114 ms)."""
    gc.collect()
    gc.freeze()


@contextmanager
def bulk_parsing(*, switch_interval_s: float = 0.001) -> Iterator[None]:
    """For a parse thread beside a writer thread (the catalog import), restored after.

    - A short switch interval: the writer waits on PostgreSQL with the GIL
      released, and when the answer comes it must get the GIL back from the
      parse thread, which by default keeps it up to 5 ms (~10 such waits a chunk).
    - Rare cyclic collections: parsing allocates millions of short-lived strings
      and lists and makes no reference cycles; with the default thresholds the
      collector took a third of the parse time (measured on 100k rows).
    """
    interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(min(interval, switch_interval_s))
    gc.set_threshold(100_000, 20, 100)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*thresholds)
