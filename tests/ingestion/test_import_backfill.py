"""`import_events` on PostgreSQL: the set-based store (ingestion.backfill) has
the effects of the workers' pipeline (messages_store) on the same chunks."""

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command

from crm.models import AnonymousId, Device, Event, Profile
from ingestion import hooks
from ingestion.models import DeadLetter, EventNameMapping
from ingestion.selectors import event_name_mappings_cache_clear
from ingestion.services import events_import

pytestmark = [pytest.mark.django_db]

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def line(n, **fields):
    """A message n minutes after T0 with its own id (unless given)."""
    return {"messageId": f"m{n}", "timestamp": (T0 + timedelta(minutes=n)).isoformat(), **fields}


def viewed(n, product, **ids):
    return line(n, type="track", event="Product Viewed", properties={"product_id": product}, **ids)


def device_context(device, token="", locale="en-GB"):
    return {
        "device": {"id": device, "type": "ios", "token": token},
        "os": {"name": "iOS", "version": "17.1"},
        "app": {"version": "2.0"},
        "locale": locale,
        "timezone": "Europe/Paris",
    }


# Every identity case of profiles_resolve, in chunks of 6 lines: plain and new
# identities, first logins, merges, a shared device, an alias, repeated ids,
# traits, devices with and without a token, and a line out of time order.
HISTORY = [
    # chunk 1: new users and anonymous visitors only
    viewed(1, "p1", userId="u1", anonymousId="a1", context=device_context("d1", token="tok1")),
    viewed(2, "p2", anonymousId="a2"),
    line(3, type="identify", userId="u3", traits={"email": "u3@x.io", "gender": "m"}),
    viewed(4, "p3", userId="u1", anonymousId="a1", context=device_context("d1")),
    line(5, type="page", name="Home", category="Shop", anonymousId="a5"),
    line(0, type="track", event="Order Completed", userId="u1",
         properties={"products": [{"product_id": "p9"}, {"product_id": "p1"}]}),
    # chunk 2: known users, a first login, a merge into a known user, a repeated id
    viewed(10, "p4", userId="u1", anonymousId="a1"),
    viewed(11, "p5", userId="u2", anonymousId="a2", context=device_context("d2", locale="fr-FR")),
    viewed(12, "p6", anonymousId="a6"),
    viewed(13, "p7", userId="u3", anonymousId="a6"),
    viewed(14, "p8", userId="u1", anonymousId="a1", messageId="m10"),
    line(15, type="track", event="Added", userId="u3", properties={"product_id": "p10"}),
    # chunk 3: a shared device, an alias, a group, a new device of a known user
    viewed(20, "p11", userId="u4", anonymousId="a1"),
    line(21, type="alias", userId="u3", previousId="a5"),
    line(22, type="group", userId="u2", groupId="g1", traits={"plan": "pro"}),
    viewed(23, "p12", userId="u2", anonymousId="a23", context=device_context("d1", token="tok2")),
    viewed(24, "p2", anonymousId="a2"),
    line(25, type="identify", userId="u2", traits={"name": "Bo", "birthday": "1990-04-01"}),
    # chunk 4: plain lines next to a first login that shares nothing with them
    viewed(30, "p13", userId="u1", anonymousId="a1"),
    viewed(31, "p14", anonymousId="a31"),
    viewed(32, "p15", userId="u5", anonymousId="a31"),
    viewed(33, "p16", userId="u2"),
    viewed(34, "p17", anonymousId="a2"),
    {"type": "track", "event": "No time", "userId": "u6"},
]  # fmt: skip


def write(path, lines):
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def snapshot(project):
    """What an import leaves behind, by natural keys (primary keys differ)."""

    def who(profile_id):
        p = Profile.objects.get(pk=profile_id)
        anons = sorted(AnonymousId.objects.filter(profile=p).values_list("anonymous_id", flat=True))
        return p.user_id or f"anon:{','.join(anons)}"

    profiles = {}
    for p in Profile.objects.filter(project=project):
        profiles[who(p.pk)] = {
            "anonymous_ids": sorted(p.anonymous_ids.values_list("anonymous_id", flat=True)),
            "traits": p.traits,
            "demographics": (p.email, p.gender, p.name, p.birth_date, p.locale, p.timezone),
            "recent": (p.recent_viewed, p.recent_purchased),
            "seen": (p.first_seen, p.last_seen),
        }
    events = {
        e.message_id: (who(e.profile_id), e.type, e.name, e.properties, e.context, e.timestamp)
        for e in Event.objects.filter(project=project)
    }
    devices = {
        d.device_id: (who(d.profile_id), d.platform, d.push_token, d.app_version, d.os_version, d.last_seen)
        for d in Device.objects.filter(project=project)
    }
    return {"profiles": profiles, "events": events, "devices": devices}


def test_set_based_import_leaves_what_the_worker_pipeline_leaves(tmp_path, project_a, project_b):
    (a, _), (b, _) = project_a, project_b
    for project in (a, b):
        EventNameMapping.objects.create(project=project, source_name="Added", canonical_name="Product Added")
    event_name_mappings_cache_clear()
    path = write(tmp_path / "history.ndjson", HISTORY)
    seen = []

    def hook(project_id, events):
        seen.append((project_id, [(e.message_id, e.name) for e in events]))

    hooks.stored_hook_register(hook)
    try:
        fast = events_import(path=path, project_id=a.pk, chunk=6, set_based=True)
        slow = events_import(path=path, project_id=b.pk, chunk=6, set_based=False)
    finally:
        hooks.stored_hook_unregister(hook)
    assert (fast.stored, fast.duplicates, fast.rejected) == (slow.stored, slow.duplicates, slow.rejected) == (23, 1, 0)
    fast_view, slow_view = snapshot(a), snapshot(b)
    # Events without a time of their own are dated by the import.
    for view in (fast_view, slow_view):
        no_time = next(k for k, v in view["events"].items() if v[2] == "No time")
        view["events"]["no time"] = view["events"].pop(no_time)[:5]
        view["profiles"]["u6"].pop("seen")
    assert fast_view == slow_view
    # Spot checks of what both paths did.
    assert set(fast_view["profiles"]) == {"u1", "u2", "u3", "u4", "u5", "u6"}
    assert fast_view["profiles"]["u1"]["recent"] == (["p13", "p4", "p3", "p1"], ["p1", "p9"])
    assert fast_view["profiles"]["u3"]["anonymous_ids"] == ["a5", "a6"]
    assert fast_view["devices"]["d1"][:3] == ("u2", "ios", "tok2")

    # The hooks saw the same inserted events, chunk by chunk, with mapped names.
    def chunks_of(project):
        # The line without a time got a random id in each import.
        return [
            [("gen" if mid.startswith("gen-") else mid, name) for mid, name in events]
            for pid, events in seen
            if pid == project.pk
        ]

    hook_a, hook_b = chunks_of(a), chunks_of(b)
    assert hook_a == hook_b
    assert ("m15", "Product Added") in hook_a[1]


def test_importing_twice_stores_nothing_twice_and_runs_no_side_effect_again(tmp_path, project_a):
    project, _ = project_a
    path = write(tmp_path / "history.ndjson", HISTORY)
    events_import(path=path, project_id=project.pk, chunk=6, set_based=True)
    before = snapshot(project)
    seen = []

    def hook(project_id, events):
        seen.extend(e.name for e in events)

    hooks.stored_hook_register(hook)
    try:
        again = events_import(path=path, project_id=project.pk, chunk=6, set_based=True)
    finally:
        hooks.stored_hook_unregister(hook)
    assert seen == ["No time"]
    # Only the line without a time gets a new (random) id: no time, nothing to derive it from.
    assert (again.stored, again.duplicates) == (1, 23)
    after = snapshot(project)
    assert after["devices"] == before["devices"]
    assert {k: v["recent"] for k, v in after["profiles"].items()} == {
        k: v["recent"] for k, v in before["profiles"].items()
    }
    assert Event.objects.filter(project=project).count() == 24


def test_a_chunk_with_a_bad_message_is_stored_around_it_and_the_message_dead_lettered(tmp_path, project_a):
    project, _ = project_a
    path = write(
        tmp_path / "nul.ndjson",
        [viewed(1, "p1", userId="u1"), viewed(2, "p\u0000", userId="u2"), viewed(3, "p3", userId="u3")],
    )
    result = events_import(path=path, project_id=project.pk, set_based=True)
    assert (result.stored, result.dead_lettered) == (2, 1)
    assert sorted(Event.objects.filter(project=project).values_list("message_id", flat=True)) == ["m1", "m3"]
    assert DeadLetter.objects.get(project=project).message_id == "m2"
    assert Profile.objects.get(project=project, user_id="u3").recent_viewed == ["p3"]


@pytest.mark.django_db(transaction=True)
def test_command_stores_chunks_on_a_writer_thread_with_its_own_connection(tmp_path, project_a):
    project, _ = project_a
    lines = [
        viewed(i, f"p{i % 7}", userId=f"u{i % 5}", anonymousId=f"a{i % 5}", context=device_context(f"d{i % 5}"))
        for i in range(200)
    ]
    path = write(tmp_path / "history.ndjson", lines)
    path.write_text(path.read_text() + "{broken\n")
    seen = []
    hooks.stored_hook_register(lambda pid, events: seen.extend(e.message_id for e in events))
    try:
        out, err = io.StringIO(), io.StringIO()
        call_command("import_events", str(path), "--project", str(project.pk), "--chunk", "30", "--no-progress",
                     stdout=out, stderr=err)  # fmt: skip
        again = io.StringIO()
        call_command("import_events", str(path), "--project", str(project.pk), "--chunk", "30", "--no-progress",
                     stdout=again, stderr=io.StringIO())  # fmt: skip
    finally:
        hooks._stored_hooks.clear()
    result = json.loads(out.getvalue())
    assert {k: result[k] for k in ("lines", "stored", "duplicates", "rejected", "rejected_lines")} == {
        "lines": 201,
        "stored": 200,
        "duplicates": 0,
        "rejected": 1,
        "rejected_lines": [201],
    }
    assert err.getvalue().splitlines() == ["line 201: line: malformed JSON"]
    assert (json.loads(again.getvalue())["stored"], json.loads(again.getvalue())["duplicates"]) == (0, 200)
    assert sorted(seen) == sorted(f"m{i}" for i in range(200))
    assert Profile.objects.filter(project=project).count() == 5
    assert Device.objects.filter(project=project).count() == 5
    u1 = Profile.objects.get(project=project, user_id="u1")
    # Newest first: events 196, 191, 186, ... of u1 viewed p0, p2, p4, ...
    assert u1.recent_viewed == ["p0", "p2", "p4", "p6", "p1", "p3", "p5"]
    assert u1.last_seen == T0 + timedelta(minutes=196)
