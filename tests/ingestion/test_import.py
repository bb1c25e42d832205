"""`manage.py import_events`: the same validation and pipeline as the collectors."""

import gzip
import io
import json

import pytest
from django.core.management import CommandError, call_command

from crm.models import Event, Profile

pytestmark = pytest.mark.django_db


def write_lines(path, lines, compress=False):
    data = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines).encode() + b"\n"
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("import_events", *map(str, args), "--no-progress", stdout=out, stderr=err)
    return json.loads(out.getvalue()), err.getvalue().splitlines()


@pytest.mark.parametrize("compress", [False, True])
def test_import_stores_valid_lines_and_reports_rejected_ones_by_line_number(tmp_path, project_a, compress):
    project, _ = project_a
    path = write_lines(
        tmp_path / ("events.ndjson.gz" if compress else "events.ndjson"),
        [
            {"type": "identify", "userId": "u1", "traits": {"email": "u1@x.io"}, "messageId": "i1",
             "timestamp": "2024-05-01T10:00:00Z"},
            {"type": "track", "userId": "u1", "event": "Product Viewed", "properties": {"product_id": "p1"},
             "messageId": "t1", "timestamp": "2024-05-01T10:01:00Z"},
            "",
            {"type": "track", "event": "no ids"},
            "{broken json",
            {"type": "track", "userId": "u1", "event": "Order Completed", "messageId": "t2",
             "properties": {"products": [{"product_id": "p1"}]}, "timestamp": "2024-05-01T10:02:00Z"},
        ],
        compress=compress,
    )  # fmt: skip
    result, errors = run(path, "--project", project.pk)
    assert errors == ["line 4: userId: userId or anonymousId is required", "line 5: line: malformed JSON"]
    assert {k: result[k] for k in ("lines", "rejected", "stored", "duplicates", "rejected_lines")} == {
        "lines": 6,
        "rejected": 2,
        "stored": 3,
        "duplicates": 0,
        "rejected_lines": [4, 5],
    }
    profile = Profile.objects.get(project=project, user_id="u1")
    assert (profile.email, profile.recent_viewed, profile.recent_purchased) == ("u1@x.io", ["p1"], ["p1"])
    # History keeps its own times (no sentAt: nothing to correct).
    assert str(Event.objects.get(message_id="t1").timestamp) == "2024-05-01 10:01:00+00:00"
    # Importing the same file again stores nothing twice.
    again, _ = run(path, "--project", project.pk)
    assert (again["stored"], again["duplicates"]) == (0, 3)
    assert Event.objects.filter(project=project).count() == 3


def test_import_chooses_the_project_by_each_lines_write_key(tmp_path, project_a, project_b):
    (a, a_keys), (b, b_keys) = project_a, project_b
    path = write_lines(
        tmp_path / "mixed.ndjson",
        [
            {"writeKey": a_keys.write_key, "type": "track", "userId": "u", "event": "x", "messageId": "1"},
            {"writeKey": b_keys.write_key, "type": "track", "userId": "u", "event": "x", "messageId": "2"},
            {"writeKey": "wk_unknown", "type": "track", "userId": "u", "event": "x", "messageId": "3"},
            {"type": "track", "userId": "u", "event": "x", "messageId": "4"},
        ],
    )
    result, errors = run(path, "--chunk", 1)
    assert errors == [
        "line 3: writeKey: unknown or missing writeKey (or pass --project)",
        "line 4: writeKey: unknown or missing writeKey (or pass --project)",
    ]
    assert (result["stored"], result["rejected"]) == (2, 2)
    assert list(Event.objects.filter(project=a).values_list("message_id", flat=True)) == ["1"]
    assert list(Event.objects.filter(project=b).values_list("message_id", flat=True)) == ["2"]


def test_import_corrects_skew_against_the_lines_own_receive_time(tmp_path, project_a):
    project, _ = project_a
    path = write_lines(
        tmp_path / "export.ndjson",
        [{"type": "track", "userId": "u", "event": "x", "messageId": "e1", "timestamp": "2023-01-01T12:00:00Z",
          "sentAt": "2023-01-01T12:00:30Z", "receivedAt": "2023-01-01T10:00:40Z"}],
    )  # fmt: skip
    run(path, "--project", project.pk)
    event = Event.objects.get(message_id="e1")
    assert str(event.timestamp) == "2023-01-01 10:00:10+00:00"
    assert str(event.received_at) == "2023-01-01 10:00:40+00:00"


def test_import_refuses_a_missing_file_or_project(tmp_path, project_a):
    with pytest.raises(CommandError, match="is not a file"):
        run(tmp_path / "nope.ndjson", "--project", project_a[0].pk)
    path = write_lines(tmp_path / "x.ndjson", [{"type": "track", "userId": "u", "event": "x"}])
    with pytest.raises(CommandError, match="project 999999 does not exist"):
        run(path, "--project", 999_999)
    assert Event.objects.count() == 0
