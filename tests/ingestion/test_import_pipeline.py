"""`import_events` as it runs outside a transaction: a parser process, the chunks
stored by this one (COPY-staged when large), compared with the workers' path on
the same messages."""

import io
import json
from datetime import UTC, datetime

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError

from crm.models import AnonymousId, Event, EventNameMapping, Profile
from crm.selectors import event_name_mappings_cache_clear
from crm.services import events as event_services
from ingestion import hooks, importer
from ingestion.importer import ImportStopped, events_import
from ingestion.models import DeadLetter
from ingestion.spec import message_normalize
from ingestion.store import messages_store
from tests.ingestion.test_import_history import HISTORY, at, device_context, snapshot, viewed, write

pytestmark = [pytest.mark.django_db(transaction=True)]

# The history without its line that has no time (dated by the import, with a random id).
TIMED = HISTORY[:-1]


@pytest.fixture
def staged(monkeypatch):
    """Every chunk of events through the COPY-staged insert (not only large ones)."""
    monkeypatch.setattr(event_services, "EVENTS_COPY_MIN_ROWS", 1)


def who(profile_id):
    """A profile by natural key (primary keys differ between projects)."""
    p = Profile.objects.get(pk=profile_id)
    return p.user_id or "anon:" + ",".join(
        sorted(AnonymousId.objects.filter(profile=p).values_list("anonymous_id", flat=True))
    )


@pytest.fixture
def hook_calls():
    """Each call of the stored-events hooks: (project, its events with their profile as at the call)."""
    calls = []

    def hook(project_id, events):
        calls.append((project_id, [(e.message_id, who(e.profile_id), e.type, e.name, e.properties, e.timestamp)
                                   for e in events]))  # fmt: skip

    hooks.stored_hook_register(hook)
    yield calls
    hooks.stored_hook_unregister(hook)


def of(calls, project_id):
    return [events for pid, events in calls if pid == project_id]


def test_the_pipelined_import_has_exactly_the_effects_of_the_workers_path(tmp_path, project_a, project_b, staged,
                                                                          hook_calls):  # fmt: skip
    (imported, _), (workers, _) = project_a, project_b
    for project in (imported, workers):
        EventNameMapping.objects.create(project=project, source_name="Added", canonical_name="Product Added")
    event_name_mappings_cache_clear()
    path = write(tmp_path / "history.ndjson", TIMED)
    result = events_import(path=path, project_id=imported.pk, chunk=6)
    received = datetime(2026, 3, 2, tzinfo=UTC)
    stored = messages_store(
        project_id=workers.pk,
        messages=[message_normalize(m, project_id=workers.pk, received_at=received) for m in TIMED],
        chunk_size=6,
    )
    assert (result.lines, result.stored, result.duplicates, result.rejected) == (23, 22, 1, 0)
    assert (stored.stored, stored.duplicates) == (22, 1)
    assert snapshot(imported) == snapshot(workers)
    # Spot checks that the comparison compares something.
    view = snapshot(imported)
    assert view["profiles"]["u3"]["anonymous_ids"] == ["a5", "a6"]
    assert view["profiles"]["u1"]["recent"] == (["p13", "p4", "p3", "p1"], ["p1", "p9"])
    assert view["devices"]["d1"][:3] == ("u2", "ios", "tok2")
    assert len(view["events"]) == 22
    assert of(hook_calls, imported.pk) == of(hook_calls, workers.pk)
    assert [len(events) for events in of(hook_calls, imported.pk)] == [6, 5, 6, 5]


def test_a_rerun_of_the_pipelined_import_stores_nothing_twice(tmp_path, project_a, staged, hook_calls):
    project, _ = project_a
    path = write(tmp_path / "history.ndjson", TIMED)
    first = events_import(path=path, project_id=project.pk, chunk=6)
    before = snapshot(project)
    again = events_import(path=path, project_id=project.pk, chunk=6)
    assert (first.stored, again.stored, again.duplicates) == (22, 0, 23)
    assert snapshot(project) == before
    assert sum(len(events) for _, events in hook_calls) == 22
    assert Event.objects.filter(project=project).count() == 22


def test_a_line_rejected_mid_file_is_reported_and_the_rest_stored(tmp_path, project_a, staged):
    project, _ = project_a
    lines = [json.dumps(viewed(i, f"p{i}", userId=f"u{i % 3}")) for i in range(10)]
    lines[4] = "{broken"
    lines[7] = json.dumps({"type": "track", "event": "no ids", "messageId": "x"})
    path = tmp_path / "history.ndjson"
    path.write_text("\n".join(lines) + "\n")
    out, err = io.StringIO(), io.StringIO()
    call_command("import_events", str(path), "--project", str(project.pk), "--chunk", "3", "--no-progress",
                 stdout=out, stderr=err)  # fmt: skip
    result = json.loads(out.getvalue())
    assert err.getvalue().splitlines() == ["line 5: line: malformed JSON",
                                           "line 8: userId: userId or anonymousId is required"]  # fmt: skip
    assert {k: result[k] for k in ("lines", "rejected", "stored", "rejected_lines")} == {
        "lines": 10,
        "rejected": 2,
        "stored": 8,
        "rejected_lines": [5, 8],
    }
    assert sorted(Event.objects.filter(project=project).values_list("message_id", flat=True)) == sorted(
        f"m{i}" for i in (0, 1, 2, 3, 5, 6, 8, 9)
    )
    assert Profile.objects.get(project=project, user_id="u0").recent_viewed == ["p9", "p6", "p3", "p0"]


def test_a_staged_chunk_with_an_unstorable_message_dead_letters_just_that_message(tmp_path, project_a, staged):
    project, _ = project_a
    lines = [viewed(i, f"p{i}", userId=f"u{i}", context=device_context(f"d{i}")) for i in range(8)]
    lines[5] = viewed(5, "p\u0000", userId="u5")
    path = write(tmp_path / "nul.ndjson", lines)
    result = events_import(path=path, project_id=project.pk, chunk=8)
    assert (result.stored, result.dead_lettered) == (7, 1)
    assert DeadLetter.objects.get(project=project).message_id == "m5"
    assert sorted(Event.objects.filter(project=project).values_list("message_id", flat=True)) == [
        f"m{i}" for i in (0, 1, 2, 3, 4, 6, 7)
    ]
    assert not Profile.objects.filter(project=project, user_id="u5").exists()
    assert Profile.objects.get(project=project, user_id="u6").recent_viewed == ["p6"]


def test_a_staged_chunk_stores_a_repeated_message_id_from_its_first_line(tmp_path, project_a, staged):
    project, _ = project_a
    path = write(tmp_path / "dup.ndjson", [viewed(1, "p1", userId="u1"), viewed(2, "p2", userId="u1", messageId="m1")])
    result = events_import(path=path, project_id=project.pk)
    assert (result.stored, result.duplicates) == (1, 1)
    assert Event.objects.get(project=project, message_id="m1").timestamp == at(1)
    assert Profile.objects.get(project=project, user_id="u1").recent_viewed == ["p1"]


def test_a_transient_database_error_stores_the_chunk_again(tmp_path, project_a, monkeypatch):
    project, _ = project_a
    path = write(tmp_path / "history.ndjson", [viewed(i, "p1", userId="u1") for i in range(4)])
    calls = []
    real = importer.chunk_store

    def flaky(**kwargs):
        calls.append(len(kwargs["messages"]))
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return real(**kwargs)

    monkeypatch.setattr(importer, "chunk_store", flaky)
    monkeypatch.setattr(importer.time, "sleep", lambda s: None)
    result = events_import(path=path, project_id=project.pk, chunk=2)
    assert calls == [2, 2, 2]
    assert (result.stored, result.duplicates) == (4, 0)


def test_a_database_that_stays_down_stops_the_import_saying_how_to_resume(tmp_path, project_a, monkeypatch):
    project, _ = project_a
    path = write(tmp_path / "history.ndjson", [viewed(i, "p1", userId="u1") for i in range(4)])
    real = importer.chunk_store
    calls = []

    def down_after_first(**kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise OperationalError("could not connect to server")
        return real(**kwargs)

    monkeypatch.setattr(importer, "chunk_store", down_after_first)
    monkeypatch.setattr(importer.time, "sleep", lambda s: None)
    with pytest.raises(
        ImportStopped, match="chunk ending on line 4.*2 events were stored before it; run the import again"
    ):
        events_import(path=path, project_id=project.pk, chunk=2)
    assert len(calls) == 1 + 1 + importer.TRANSIENT_RETRIES
    with pytest.raises(CommandError, match="run the import again"):
        call_command("import_events", str(path), "--project", str(project.pk), "--chunk", "2", "--no-progress",
                     stdout=io.StringIO(), stderr=io.StringIO())  # fmt: skip
    monkeypatch.setattr(importer, "chunk_store", real)
    again = events_import(path=path, project_id=project.pk, chunk=2)
    assert (again.stored, again.duplicates) == (2, 2)
    assert Event.objects.filter(project=project).count() == 4


def test_the_parser_process_chooses_the_project_by_each_lines_write_key(tmp_path, project_a, project_b):
    (a, a_keys), (b, b_keys) = project_a, project_b
    path = write(
        tmp_path / "mixed.ndjson",
        [
            {"writeKey": a_keys.write_key, **viewed(1, "p1", userId="u1")},
            {"writeKey": b_keys.write_key, **viewed(2, "p2", userId="u1")},
            {"writeKey": "wk_unknown", **viewed(3, "p3", userId="u1")},
        ],
    )
    rejected = []
    result = events_import(path=path, chunk=1, on_rejected=rejected.append)
    assert (result.stored, result.rejected) == (2, 1)
    assert [(r.line, r.field) for r in rejected] == [(3, "writeKey")]
    assert Profile.objects.get(project=a, user_id="u1").recent_viewed == ["p1"]
    assert Profile.objects.get(project=b, user_id="u1").recent_viewed == ["p2"]
