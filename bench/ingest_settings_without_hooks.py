"""Settings for `bench/ingest.py --without-stored-hooks`: the production settings
with no stored-events hooks, to measure the ingest pipeline apart from the later
stages that plug into it (see ingestion/hooks.py and docs/benchmarks.md)."""

from config.settings import *  # noqa: F403

INGEST_STORED_EVENT_HOOKS: list[str] = []
