"""The ingest pipeline (ingestion.store): identities, traits, recent items,
devices, mappings, redelivery and dead letters."""

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from crm.models import AnonymousId, Device, Event, EventNameMapping, Profile
from ingestion import hooks, store
from ingestion.models import DeadLetter
from ingestion.spec import message_normalize
from ingestion.store import StoreResult, dead_letters_retry, messages_store

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)


def msgs(project_id, *raws):
    """Normalise as the collector does; each message one second after the previous."""
    return [
        message_normalize(
            {"timestamp": (T0 + timedelta(seconds=i)).isoformat(), "messageId": f"m{i}", **raw},
            project_id=project_id,
            received_at=T0 + timedelta(minutes=1),
        )
        for i, raw in enumerate(raws)
    ]


def viewed(product, **ids):
    return {"type": "track", "event": "Product Viewed", "properties": {"product_id": product}, **ids}


def test_track_and_identify_build_one_profile_with_traits_and_demographics(project_a):
    project, _ = project_a
    result = messages_store(
        project_id=project.pk,
        messages=msgs(
            project.pk,
            {"type": "identify", "userId": "u1", "traits": {"email": "ada@x.io", "plan": "free", "gender": "F"}},
            {"type": "track", "userId": "u1", "event": "Signed Up"},
            {"type": "identify", "userId": "u1", "traits": {"plan": "pro", "address": {"city": "Leeds"}}},
        ),
    )
    assert result == StoreResult(stored=3, duplicates=0, dead_lettered=0)
    profile = Profile.objects.get(project=project)
    assert profile.user_id == "u1"
    assert profile.traits == {"email": "ada@x.io", "plan": "pro", "gender": "F", "address": {"city": "Leeds"}}
    assert (profile.email, profile.gender, profile.city) == ("ada@x.io", "female", "Leeds")
    # Seconds apart: last_seen moves in steps of a minute (crm.services.LAST_SEEN_STEP).
    assert (profile.first_seen, profile.last_seen) == (T0, T0)
    later = msgs(project.pk, {"type": "track", "userId": "u1", "event": "Came Back", "messageId": "later"})
    later[0]["timestamp"] = (T0 + timedelta(minutes=3)).isoformat()
    messages_store(project_id=project.pk, messages=later)
    profile.refresh_from_db()
    assert profile.last_seen == T0 + timedelta(minutes=3)
    assert Event.objects.filter(profile=profile).count() == 4


def test_anonymous_activity_then_login_is_one_profile(project_a):
    project, _ = project_a
    messages_store(project_id=project.pk, messages=msgs(project.pk, viewed("p1", anonymousId="anon-1")))
    anonymous = Profile.objects.get(project=project)
    assert anonymous.user_id is None
    messages_store(
        project_id=project.pk,
        messages=msgs(project.pk, {"type": "identify", "userId": "u1", "anonymousId": "anon-1", "messageId": "login"}),
    )
    profile = Profile.objects.get(project=project)  # still one profile: the first login identified it
    assert (profile.pk, profile.user_id, profile.recent_viewed) == (anonymous.pk, "u1", ["p1"])


def test_anonymous_activity_of_a_known_user_is_merged_into_their_profile(project_a):
    project, _ = project_a
    messages_store(
        project_id=project.pk, messages=msgs(project.pk, {"type": "identify", "userId": "u1", "messageId": "a"})
    )
    known = Profile.objects.get(project=project, user_id="u1")
    messages_store(
        project_id=project.pk,
        messages=msgs(
            project.pk,
            viewed("p1", anonymousId="anon-2", messageId="b"),
            viewed("p2", anonymousId="anon-2", userId="u1", messageId="c"),
        ),
    )
    assert list(Profile.objects.filter(project=project).values_list("pk", flat=True)) == [known.pk]
    known.refresh_from_db()
    assert known.recent_viewed == ["p2", "p1"]
    assert Event.objects.filter(project=project, profile=known).count() == 3
    assert AnonymousId.objects.get(anonymous_id="anon-2").profile_id == known.pk


def test_alias_merges_the_anonymous_profile_into_the_identified_one_events_included(project_a):
    project, _ = project_a
    messages_store(
        project_id=project.pk,
        messages=msgs(
            project.pk,
            viewed("p1", anonymousId="anon-9", messageId="v1"),
            {"type": "identify", "userId": "u9", "traits": {"plan": "pro"}, "messageId": "i1"},
        ),
    )
    anonymous = Profile.objects.get(project=project, user_id__isnull=True)
    identified = Profile.objects.get(project=project, user_id="u9")
    messages_store(
        project_id=project.pk,
        messages=msgs(project.pk, {"type": "alias", "userId": "u9", "previousId": "anon-9", "messageId": "al"}),
    )
    assert not Profile.objects.filter(pk=anonymous.pk).exists()
    identified.refresh_from_db()
    assert identified.recent_viewed == ["p1"]
    assert sorted(Event.objects.filter(profile=identified).values_list("message_id", flat=True)) == ["al", "i1", "v1"]
    alias = Event.objects.get(message_id="al")
    assert (alias.type, alias.properties) == ("alias", {"previousId": "anon-9"})
    # Later events of the old anonymous id land on the identified profile.
    messages_store(project_id=project.pk, messages=msgs(project.pk, viewed("p7", anonymousId="anon-9", messageId="v2")))
    identified.refresh_from_db()
    assert identified.recent_viewed == ["p7", "p1"]


def test_alias_of_an_unknown_previous_id_links_it(project_a):
    project, _ = project_a
    messages_store(
        project_id=project.pk,
        messages=msgs(
            project.pk,
            {"type": "alias", "userId": "u1", "previousId": "old-anon"},
            viewed("p3", anonymousId="old-anon"),
        ),
    )
    profile = Profile.objects.get(project=project)
    assert (profile.user_id, profile.recent_viewed) == ("u1", ["p3"])


def test_ecommerce_events_update_recent_items_newest_first(project_a):
    project, _ = project_a
    messages_store(
        project_id=project.pk,
        messages=msgs(
            project.pk,
            viewed("p1", userId="u1"),
            viewed(2, userId="u1"),
            {"type": "track", "userId": "u1", "event": "Product Added", "properties": {"product_id": "p3"}},
            viewed("p1", userId="u1"),
            {
                "type": "track",
                "userId": "u1",
                "event": "Order Completed",
                "properties": {"products": [{"product_id": "p3"}, {"product_id": "p4"}, {"sku": "no id"}]},
            },
            {"type": "track", "userId": "u1", "event": "Signed Up", "properties": {"product_id": "ignored"}},
            {"type": "page", "userId": "u1", "name": "Product Viewed", "properties": {"product_id": "not-a-track"}},
        ),
    )
    profile = Profile.objects.get(project=project)
    assert profile.recent_viewed == ["p1", "p3", "2"]
    assert profile.recent_purchased == ["p4", "p3"]


def test_recent_lists_keep_ten_items(project_a):
    project, _ = project_a
    messages_store(project_id=project.pk, messages=msgs(project.pk, *[viewed(f"p{i}", userId="u1") for i in range(14)]))
    assert Profile.objects.get(project=project).recent_viewed == [f"p{i}" for i in range(13, 3, -1)]


def test_a_project_maps_its_own_event_names(project_a, project_b):
    project, _ = project_a
    EventNameMapping.objects.create(project=project, source_name="Item Seen", canonical_name="Product Viewed")
    EventNameMapping.objects.create(project=project, source_name="Purchase", canonical_name="Order Completed")
    raws = [
        {"type": "track", "userId": "u1", "event": "Item Seen", "properties": {"product_id": "p1"}},
        {"type": "track", "userId": "u1", "event": "Purchase", "properties": {"products": [{"product_id": "p2"}]}},
    ]
    messages_store(project_id=project.pk, messages=msgs(project.pk, *raws))
    messages_store(project_id=project_b[0].pk, messages=msgs(project_b[0].pk, *raws))
    profile = Profile.objects.get(project=project)
    assert (profile.recent_viewed, profile.recent_purchased) == (["p1"], ["p2"])
    # The events keep the names they were sent with.
    assert sorted(Event.objects.filter(project=project).values_list("name", flat=True)) == ["Item Seen", "Purchase"]
    # Another project's mapping does not apply.
    other = Profile.objects.get(project=project_b[0])
    assert (other.recent_viewed, other.recent_purchased) == ([], [])


def test_context_updates_the_device_and_the_profile(project_a):
    project, _ = project_a
    context = {
        "device": {"id": "idfv-1", "type": "ios", "token": "apns-token", "model": "iPhone15,2"},
        "os": {"name": "iOS", "version": "17.4"},
        "app": {"version": "3.1.0", "build": "310"},
        "locale": "fr-FR",
        "timezone": "Europe/Paris",
    }
    messages_store(
        project_id=project.pk,
        messages=msgs(
            project.pk,
            {"type": "track", "userId": "u1", "event": "App Opened", "context": context},
            # A later call without a token keeps the known token.
            {"type": "screen", "userId": "u1", "name": "Home", "context": {**context, "device": {"id": "idfv-1"}}},
        ),
    )
    device = Device.objects.get(project=project)
    profile = Profile.objects.get(project=project)
    assert (device.device_id, device.platform, device.push_token, device.os_name, device.os_version) == (
        "idfv-1",
        "ios",
        "apns-token",
        "iOS",
        "17.4",
    )
    assert (device.app_version, device.profile_id, device.last_seen) == ("3.1.0", profile.pk, T0 + timedelta(seconds=1))
    assert (profile.locale, profile.timezone) == ("fr-FR", "Europe/Paris")
    assert Event.objects.get(type="track").context == context


def test_redelivery_stores_nothing_twice_and_applies_nothing_twice(project_a):
    project, _ = project_a
    first = msgs(project.pk, viewed("p1", userId="u1", messageId="a"), viewed("p2", userId="u1", messageId="b"))
    later = msgs(project.pk, viewed("p1", userId="u1", messageId="c"))
    later[0]["timestamp"] = (T0 + timedelta(minutes=5)).isoformat()
    messages_store(project_id=project.pk, messages=first)
    messages_store(project_id=project.pk, messages=later)
    assert Profile.objects.get(project=project).recent_viewed == ["p1", "p2"]
    # The first message is delivered again (a worker died before acknowledging it).
    assert messages_store(project_id=project.pk, messages=first) == StoreResult(stored=0, duplicates=2)
    # Re-applying it would have moved p2 back in front.
    assert Profile.objects.get(project=project).recent_viewed == ["p1", "p2"]
    assert Event.objects.filter(project=project).count() == 3


def test_a_repeated_message_id_in_one_batch_is_stored_and_applied_once(project_a):
    project, _ = project_a
    batch = msgs(project.pk, viewed("p1", userId="u1", messageId="x"), viewed("p2", userId="u1", messageId="x"))
    assert messages_store(project_id=project.pk, messages=batch) == StoreResult(stored=1, duplicates=1)
    assert Profile.objects.get(project=project).recent_viewed == ["p1"]


def test_a_message_that_cannot_be_stored_is_dead_lettered_and_the_rest_are_stored(project_a):
    project, _ = project_a
    # PostgreSQL's jsonb refuses the NUL character: valid JSON, unstorable.
    batch = msgs(
        project.pk,
        viewed("p1", userId="u1", messageId="good-1"),
        {"type": "track", "userId": "u1", "event": "Bad", "properties": {"note": "a\u0000b"}, "messageId": "bad"},
        viewed("p2", userId="u1", messageId="good-2"),
    )
    result = messages_store(project_id=project.pk, messages=batch)
    assert result == StoreResult(stored=2, duplicates=0, dead_lettered=1)
    assert sorted(Event.objects.values_list("message_id", flat=True)) == ["good-1", "good-2"]
    letter = DeadLetter.objects.get()
    # The message exactly as it was queued, as JSON text (the NUL escaped).
    assert (letter.project_id, letter.message_id, orjson.loads(letter.message)) == (project.pk, "bad", batch[1])
    assert "\\u0000 cannot be converted to text" in letter.error
    assert letter.traceback.startswith("Traceback")
    assert letter.received_at == T0 + timedelta(minutes=1)
    assert Profile.objects.get(project=project).recent_viewed == ["p2", "p1"]

    # Fixed (here: by editing the stored message), it can be processed again.
    letter.message = letter.message.replace('"a\\u0000b"', '"ab"')
    letter.save()
    assert dead_letters_retry(dead_letter_ids=[letter.pk]) == StoreResult(stored=1)
    assert DeadLetter.objects.count() == 0
    assert Event.objects.get(message_id="bad").properties == {"note": "ab"}


def test_messages_of_a_deleted_project_are_dropped(project_a):
    project, _ = project_a
    project_id = project.pk + 1000  # deleted after its messages were queued
    batch = msgs(project_id, viewed("p1", userId="u1"))
    assert messages_store(project_id=project_id, messages=batch) == StoreResult()
    assert Event.objects.count() == 0 and DeadLetter.objects.count() == 0


def chunks_spied(monkeypatch):
    """The sizes of the chunks the store's one transaction is run with, in order."""
    sizes = []
    real = store._chunk_store

    def spy(*, project_id, messages, mappings):
        sizes.append(len(messages))
        return real(project_id=project_id, messages=messages, mappings=mappings)

    monkeypatch.setattr(store, "_chunk_store", spy)
    return sizes


def test_a_chunk_with_one_bad_message_stores_the_others_one_by_one_and_dead_letters_only_it(project_a, monkeypatch):
    project, _ = project_a
    sizes = chunks_spied(monkeypatch)
    stored = []
    hook = lambda project_id, events: stored.append([e.message_id for e in events])  # noqa: E731
    hooks.stored_hook_register(hook)
    try:
        result = store.chunk_store(
            project_id=project.pk,
            messages=msgs(
                project.pk,
                viewed("p1", userId="u1", messageId="good-1"),
                viewed("p\u0000", userId="u2", messageId="bad"),
                viewed("p3", userId="u3", messageId="good-3"),
            ),
        )
    finally:
        hooks.stored_hook_unregister(hook)
    assert result == StoreResult(stored=2, duplicates=0, dead_lettered=1)
    # The whole chunk first (rolled back), then each message as a chunk of one.
    assert sizes == [3, 1, 1, 1]
    assert stored == [["good-1"], ["good-3"]]
    assert sorted(Event.objects.values_list("message_id", flat=True)) == ["good-1", "good-3"]
    assert list(DeadLetter.objects.values_list("project_id", "message_id")) == [(project.pk, "bad")]
    assert dict(Profile.objects.values_list("user_id", "recent_viewed")) == {"u1": ["p1"], "u3": ["p3"]}


def test_a_large_chunk_that_fails_is_stored_again_in_the_workers_chunk_size_first(project_a, monkeypatch):
    project, _ = project_a
    monkeypatch.setattr(store, "BULK_CHUNK", 2)
    sizes = chunks_spied(monkeypatch)
    batch = msgs(project.pk, *[viewed(f"p{i}", userId="u1") for i in range(5)])
    batch[3]["properties"]["note"] = "\u0000"
    assert store.chunk_store(project_id=project.pk, messages=batch) == StoreResult(stored=4, dead_lettered=1)
    # 5 -> chunks of 2: [m0, m1] stored, [m2, m3] fails and goes one by one, [m4] stored.
    assert sizes == [5, 2, 2, 1, 1, 1]
    assert DeadLetter.objects.get().message_id == "m3"
    assert Profile.objects.get().recent_viewed == ["p4", "p2", "p1", "p0"]


def test_dead_letters_retry_stores_a_fixed_letter_with_its_effects_and_deletes_it(project_a):
    project, _ = project_a
    fixed, still_bad = msgs(
        project.pk, viewed("p1", userId="u1", messageId="fixed"), viewed("p2", userId="u1", messageId="still-bad")
    )
    still_bad["timestamp"] = "not a time"  # not fixed: fails again
    letters = [
        store.dead_letter_record(project_id=project.pk, message=message, error=ValueError("was broken"))
        for message in (fixed, still_bad)
    ]
    assert dead_letters_retry(dead_letter_ids=[letter.pk for letter in letters]) == StoreResult(
        stored=1, dead_lettered=1
    )
    # Both old letters are gone; the one that failed again has a new letter with its new error.
    assert not DeadLetter.objects.filter(pk__in=[letter.pk for letter in letters]).exists()
    again = DeadLetter.objects.get()
    assert (again.message_id, again.error) == ("still-bad", "ValueError: Invalid isoformat string: 'not a time'")
    event = Event.objects.get()
    profile = Profile.objects.get(project=project, user_id="u1")
    assert (event.message_id, event.profile_id, event.timestamp) == ("fixed", profile.pk, T0)
    assert (profile.recent_viewed, profile.first_seen) == (["p1"], T0)


def test_stored_event_hooks_get_a_savepoint_unless_they_say_they_do_no_database_work(
    project_a, settings, django_assert_num_queries
):
    from django.db import transaction

    project, _ = project_a
    settings.INGEST_STORED_EVENT_HOOKS = []  # only the hooks registered below
    hooks._configured.cache_clear()
    raised = []

    def failing(project_id, events):  # noqa: ANN001, ANN202
        raised.append(len(events))
        raise RuntimeError("a hook's bug")

    def quiet(project_id, events):  # noqa: ANN001, ANN202
        raised.append(-len(events))
        raise RuntimeError("a hook's bug, outside any database work")

    quiet.savepoint = False
    event = hooks.StoredEvent(
        profile_id=1, type="track", name="Product Viewed", properties={}, timestamp=datetime.now(UTC), message_id="m"
    )
    # SAVEPOINT, ROLLBACK TO SAVEPOINT and RELEASE SAVEPOINT; or nothing.
    for hook, queries in ((failing, 3), (quiet, 0)):
        hooks.stored_hook_register(hook)
        try:
            # In the ingest batch's transaction (entered before counting starts).
            with transaction.atomic(), django_assert_num_queries(queries):
                hooks.events_stored(project.pk, [event])  # logged, not raised
        finally:
            hooks.stored_hook_unregister(hook)
            hooks._configured.cache_clear()
    assert raised == [1, -1]
