"""`import_events` of a history: every identity case, the exact effects, chunk by
chunk through the workers' store (ingestion.store), and a re-import."""

import io
import json
from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from crm.models import AnonymousId, Device, Event, EventNameMapping, Profile
from crm.selectors import event_name_mappings_cache_clear
from ingestion import hooks
from ingestion.importer import events_import
from ingestion.models import DeadLetter

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


def at(minute):
    return T0 + timedelta(minutes=minute)


def test_a_history_import_leaves_exactly_these_profiles_events_and_devices(tmp_path, project_a):
    project, _ = project_a
    EventNameMapping.objects.create(project=project, source_name="Added", canonical_name="Product Added")
    event_name_mappings_cache_clear()
    path = write(tmp_path / "history.ndjson", HISTORY)
    seen = []

    def hook(project_id, events):
        seen.append([(e.message_id, e.profile_id, e.type, e.name, e.properties, e.timestamp) for e in events])

    hooks.stored_hook_register(hook)
    try:
        before = timezone.now()
        result = events_import(path=path, project_id=project.pk, chunk=6)
        after = timezone.now()
    finally:
        hooks.stored_hook_unregister(hook)
    assert (result.lines, result.stored, result.duplicates, result.rejected, result.dead_lettered) == (24, 23, 1, 0, 0)
    view = snapshot(project)
    # The line without a time is dated by the import (and gets a random id).
    no_time = next(k for k, v in view["events"].items() if v[2] == "No time")
    assert no_time.startswith("gen-")
    stamped = view["events"].pop(no_time)
    assert stamped[:5] == ("u6", "track", "No time", {}, {}) and before <= stamped[5] <= after
    assert view["profiles"]["u6"].pop("seen") == (stamped[5], stamped[5])

    nothing = ("", "", "", None, "", "")
    assert view["profiles"] == {
        # Two views and an order; the repeated m10 moved nothing; a1 stays u1's (u4 shares the device).
        "u1": {"anonymous_ids": ["a1"], "traits": {}, "demographics": ("", "", "", None, "en-GB", "Europe/Paris"),
               "recent": (["p13", "p4", "p3", "p1"], ["p1", "p9"]), "seen": (at(0), at(30))},
        # a2's first login (line 11) made the anonymous profile u2's; a group's traits stay on the event.
        "u2": {"anonymous_ids": ["a2", "a23"], "traits": {"birthday": "1990-04-01", "name": "Bo"},
               "demographics": ("", "", "Bo", date(1990, 4, 1), "en-GB", "Europe/Paris"),
               "recent": (["p17", "p16", "p2", "p12", "p5"], []), "seen": (at(2), at(34))},
        # a6 merged into the known u3, a5 by the alias; "Added" is mapped onto Product Added.
        "u3": {"anonymous_ids": ["a5", "a6"], "traits": {"email": "u3@x.io", "gender": "m"},
               "demographics": ("u3@x.io", "male", "", None, "", ""),
               "recent": (["p10", "p7", "p6"], []), "seen": (at(3), at(21))},
        "u4": {"anonymous_ids": [], "traits": {}, "demographics": nothing, "recent": (["p11"], []),
               "seen": (at(20), at(20))},
        "u5": {"anonymous_ids": ["a31"], "traits": {}, "demographics": nothing, "recent": (["p15", "p14"], []),
               "seen": (at(31), at(32))},
        "u6": {"anonymous_ids": [], "traits": {}, "demographics": nothing, "recent": ([], [])},
    }  # fmt: skip

    def ctx(device, token, locale="en-GB"):
        return {"device": {"id": device, "type": "ios", "token": token}, "os": {"name": "iOS", "version": "17.1"},
                "app": {"version": "2.0"}, "locale": locale, "timezone": "Europe/Paris"}  # fmt: skip

    viewed_on = {"m1": ("u1", "p1", ctx("d1", "tok1")), "m2": ("u2", "p2", {}), "m4": ("u1", "p3", ctx("d1", "")),
                 "m10": ("u1", "p4", {}), "m11": ("u2", "p5", ctx("d2", "", "fr-FR")), "m12": ("u3", "p6", {}),
                 "m13": ("u3", "p7", {}), "m20": ("u4", "p11", {}), "m23": ("u2", "p12", ctx("d1", "tok2")),
                 "m24": ("u2", "p2", {}), "m30": ("u1", "p13", {}), "m31": ("u5", "p14", {}),
                 "m32": ("u5", "p15", {}), "m33": ("u2", "p16", {}), "m34": ("u2", "p17", {})}  # fmt: skip
    assert view["events"] == {
        **{mid: (who, "track", "Product Viewed", {"product_id": product}, context, at(int(mid[1:])))
           for mid, (who, product, context) in viewed_on.items()},
        "m0": ("u1", "track", "Order Completed", {"products": [{"product_id": "p9"}, {"product_id": "p1"}]}, {},
               at(0)),
        "m3": ("u3", "identify", "identify", {"email": "u3@x.io", "gender": "m"}, {}, at(3)),
        # The anonymous visitor a5's page moved with the alias onto u3's profile.
        "m5": ("u3", "page", "Home", {"category": "Shop"}, {}, at(5)),
        "m15": ("u3", "track", "Added", {"product_id": "p10"}, {}, at(15)),
        "m21": ("u3", "alias", "alias", {"previousId": "a5"}, {}, at(21)),
        "m22": ("u2", "group", "group", {"groupId": "g1", "traits": {"plan": "pro"}}, {}, at(22)),
        "m25": ("u2", "identify", "identify", {"birthday": "1990-04-01", "name": "Bo"}, {}, at(25)),
    }  # fmt: skip
    # d1's latest event is u2's (line 23, with a new token); d2 never had a token.
    assert view["devices"] == {
        "d1": ("u2", "ios", "tok2", "2.0", "17.1", at(23)),
        "d2": ("u2", "ios", "", "2.0", "17.1", at(11)),
    }

    # The hooks saw each chunk's inserted events once, in line order, with
    # mapped names, on the profile the event was stored on at that moment.
    assert [[(mid, name) for mid, _pid, _type, name, _props, _ts in chunk] for chunk in seen] == [
        [("m1", "Product Viewed"), ("m2", "Product Viewed"), ("m3", "identify"), ("m4", "Product Viewed"),
         ("m5", "Home"), ("m0", "Order Completed")],
        [("m10", "Product Viewed"), ("m11", "Product Viewed"), ("m12", "Product Viewed"),
         ("m13", "Product Viewed"), ("m15", "Product Added")],
        [("m20", "Product Viewed"), ("m21", "alias"), ("m22", "group"), ("m23", "Product Viewed"),
         ("m24", "Product Viewed"), ("m25", "identify")],
        [("m30", "Product Viewed"), ("m31", "Product Viewed"), ("m32", "Product Viewed"),
         ("m33", "Product Viewed"), ("m34", "Product Viewed"), (no_time, "No time")],
    ]  # fmt: skip
    u1 = Profile.objects.get(project=project, user_id="u1").pk
    assert seen[0][5] == ("m0", u1, "track", "Order Completed",
                          {"products": [{"product_id": "p9"}, {"product_id": "p1"}]}, at(0))  # fmt: skip
    assert seen[3][0][1] == u1


def test_importing_twice_stores_nothing_twice_and_runs_no_side_effect_again(tmp_path, project_a):
    project, _ = project_a
    path = write(tmp_path / "history.ndjson", HISTORY)
    events_import(path=path, project_id=project.pk, chunk=6)
    before = snapshot(project)
    seen = []

    def hook(project_id, events):
        seen.extend(e.name for e in events)

    hooks.stored_hook_register(hook)
    try:
        again = events_import(path=path, project_id=project.pk, chunk=6)
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
    result = events_import(path=path, project_id=project.pk)
    assert (result.stored, result.dead_lettered) == (2, 1)
    assert sorted(Event.objects.filter(project=project).values_list("message_id", flat=True)) == ["m1", "m3"]
    assert DeadLetter.objects.get(project=project).message_id == "m2"
    assert Profile.objects.get(project=project, user_id="u3").recent_viewed == ["p3"]


@pytest.mark.django_db(transaction=True)
def test_command_parses_in_a_second_process_and_stores_every_chunk_once(tmp_path, project_a):
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
