"""Property-based fuzzing: generated hostile input (NULs, lone surrogates where
JSON can carry them, huge and odd numbers, Unicode digits, deep nesting, long
strings, wrong types, forged cursors and keys) sent to the collectors, every API
endpoint (the recommendation fast path included) and the console's changelists.

What must hold: no answer is a 5xx, and every message a collector accepted (a
200, and not listed as rejected) is stored as an event or set aside as a dead
letter.

Bounded for CI by FUZZ below: a fixed number of examples per endpoint, no
deadline, derandomized (the same inputs on every run, so a failure reproduces).
`FUZZ_EXAMPLES=2000 pytest tests/test_fuzz.py` searches deeper. Each example
runs in a savepoint rolled back afterwards: one failure cannot poison the
test's transaction and mislead the shrinking.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import models, transaction
from django.test import Client
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from campaigns.models import Campaign
from catalog.csvfile import ProductIn
from catalog.models import CatalogUpload
from catalog.services import catalog_import_run, catalog_upload_create, catalog_upload_start, products_upsert
from config.celery import app
from crm import services
from crm.admin_base import ConsoleAdmin
from crm.models import Event
from delivery.receipts import sendgrid_webhook_url, twilio_status_url
from delivery.tracking import click_url, open_url
from ingestion.models import DeadLetter
from ingestion.spec import MESSAGE_TYPES
from tests.conftest import basic_header, wsgi_call
from tests.recommendations.serving_data import catalog_write, user_write, version_write

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "30")),
    deadline=None,
    derandomize=True,
    database=None,  # derandomized: nothing to replay, and no .hypothesis/ folder left behind
    print_blob=False,
    # The fixtures (project, clients) are made once per test, on purpose: each
    # example runs in its own savepoint (_example below).
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- Strategies --------------------------------------------------------------------------


class Raw:
    """JSON text put verbatim into a body: what json.dumps cannot write
    (1e999, a 5,000-digit integer, nesting past the recursion limit)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:30]!r}{'…' if len(self.text) > 30 else ''})"


def dumps(value: Any) -> bytes:
    raws: list[str] = []

    def placeholder(obj: Any) -> str:
        if not isinstance(obj, Raw):
            raise TypeError(obj)
        raws.append(obj.text)
        return f"\x01raw{len(raws) - 1}\x01"

    text = json.dumps(value, default=placeholder, allow_nan=True)  # NaN, Infinity: not JSON, but sent
    for index, raw in enumerate(raws):
        text = text.replace(f'"\\u0001raw{index}\\u0001"', raw)
    return text.encode("utf-8", "surrogatepass")


ODD_TEXT = [
    "", " ", "\x00", "a\x00b", "²", "٣", "１２", "1e999999", "-1", "-0", "NaN", "Infinity", "9" * 5000, "0x10",
    "1_000", "true", "null", "[]", "{}", "%00", "'; DROP TABLE x; --", "\u202e", "😀", "\ufeff", "\r\n", "a" * 10_000,
    "prop.", "2026-01-01", "..", "/", "\\", "<script>",
]  # fmt: skip
ODD_NUMBERS = [0, -0.0, 1e308, 5e-324, 2**63 - 1, 2**63, -(2**63) - 1, 10**30, float("inf"), float("nan")]
RAW_JSON = ["1e999", "-1e999", "1" + "0" * 5000, "1e-999", "123456789012345678901234567890"]


def texts(*, nul: bool = True, surrogates: bool = False) -> st.SearchStrategy[str]:
    alphabet = st.characters(
        exclude_categories=() if surrogates else ("Cs",), exclude_characters=() if nul else ("\x00",)
    )
    odd = [t for t in ODD_TEXT if nul or "\x00" not in t]
    return st.one_of(st.sampled_from(odd), st.text(alphabet, max_size=40))


def scalars(*, nul: bool = True, surrogates: bool = False) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from(ODD_NUMBERS),
        st.sampled_from(RAW_JSON).map(Raw),
        texts(nul=nul, surrogates=surrogates),
    )


def json_values(*, nul: bool = True, surrogates: bool = True, deep: bool = True) -> st.SearchStrategy[Any]:
    leaves = scalars(nul=nul, surrogates=surrogates)
    if deep:
        # Nesting past any limit: 40 levels (crm.storable), 1,100 (Python's parser).
        leaves = st.one_of(leaves, st.sampled_from([40, 300, 1100]).map(lambda n: Raw("[" * n + "]" * n)))
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(texts(nul=nul, surrogates=surrogates), children, max_size=4),
        ),
        max_leaves=12,
    )


def mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], per_ten: int = 7) -> st.SearchStrategy[Any]:
    """`common` in about per_ten examples out of ten (st.one_of picks its branches alike)."""
    return st.integers(0, 9).flatmap(lambda n: common if n < per_ten else rare)


def as_header(text: str) -> str:
    """A header value as WSGI hands it: the bytes sent (UTF-8 here), decoded as latin-1."""
    return text.encode("utf-8", "surrogatepass").decode("latin-1")


def query_strings(keys: list[str]) -> st.SearchStrategy[str]:
    """Raw query strings: known parameters and hostile ones, hostile values, UTF-8
    percent-encoded or raw bytes that are not UTF-8 at all."""
    key = st.one_of(st.sampled_from(keys), texts())
    value = st.one_of(
        texts().map(lambda t: quote(t, safe="")),
        st.binary(max_size=12).map(lambda b: quote(b, safe="")),
        st.binary(max_size=24).map(lambda b: base64.b64encode(b).decode()),  # forged cursors
        st.text("por=0123456789&-abc", max_size=24).map(lambda t: quote(base64.b64encode(t.encode()).decode())),
    )
    pair = st.tuples(key.map(lambda k: quote(k, safe="")), value).map("=".join)
    return st.lists(pair, max_size=6).map("&".join)


# --- Fixtures ----------------------------------------------------------------------------


@pytest.fixture
def shop(project_a, settings, tmp_path):  # noqa: ANN001, ANN201
    settings.MEDIA_ROOT = tmp_path
    project, keys = project_a
    catalog_write(project.pk)
    version_write(project.pk)
    user_write(project.pk, "u1", viewed=["p3", "p1"])
    services.profile_upsert(project_id=project.pk, user_id="alice", traits={"email": "alice@x.io"})
    products_upsert(project_id=project.pk, products=[ProductIn("P1", "Shirt", ["Clothes"])])
    upload = catalog_upload_create(
        project_id=project.pk, file=ContentFile(b"id,price\nA,1\nB,x\n", name="c.csv"), source="cli", start=False
    )
    catalog_upload_start(upload_id=upload.pk, enqueue=False)
    catalog_import_run(upload_id=upload.pk)  # one rejected row: an error file to download
    return project, keys


@pytest.fixture
def eager() -> Iterator[None]:
    saved = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = saved


@pytest.fixture
def superuser_client(db: None) -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", "root@x.io", "pw-root-123"))
    return client


class _Rollback(Exception):
    pass


def _example(check: Any) -> None:
    """Run one example in a savepoint that is always rolled back."""
    try:
        with transaction.atomic():
            check()
            raise _Rollback
    except _Rollback:
        pass
    finally:
        services.write_caches_clear()  # ids of rolled-back profiles must not be reused


def _assert_not_5xx(status: int, what: str, body: bytes = b"") -> None:
    event(f"status {status}")  # the spread of answers: pytest --hypothesis-show-statistics
    assert status < 500, f"{what} answered {status}: {body[:500]!r}"


# --- Collectors --------------------------------------------------------------------------

# The classes of input an audit found failing (NUL characters, times outside the
# calendar or far in the future, deep nesting) are all in: the collectors now
# refuse or set aside each of them (tests/ingestion/test_hostile_input.py).
COLLECTOR_NUL = True
COLLECTOR_JSON = json_values(nul=COLLECTOR_NUL, surrogates=True, deep=True)
COLLECTOR_TEXT = texts(nul=COLLECTOR_NUL, surrogates=True)
COLLECTOR_TIMES = st.one_of(
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "9999-12-31T23:59:30Z"]),
    st.sampled_from(["", "yesterday", "2026-13-45T00:00:00Z", "2026-01-01", "2026-01-01T00:00:00+25:00"]),
    st.one_of(st.none(), st.integers(), st.booleans(), st.lists(st.integers(), max_size=2)),
)


def _ids() -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(["u1", "alice", "a-1"]), COLLECTOR_TEXT, COLLECTOR_JSON)


def _objects() -> st.SearchStrategy[Any]:
    return st.one_of(st.dictionaries(COLLECTOR_TEXT, COLLECTOR_JSON, max_size=5), COLLECTOR_JSON)


_IN_RANGE_TIMES = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)).map(
    lambda d: d.isoformat() + "Z"
)
# Anything in any field: mostly refused, which is what the checks are for.
HOSTILE_MESSAGE = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(st.sampled_from(MESSAGE_TYPES), COLLECTOR_TEXT, COLLECTOR_JSON),
        "userId": _ids(),
        "anonymousId": _ids(),
        "event": st.one_of(st.sampled_from(["Product Viewed", "Order Completed", "App Launched"]), COLLECTOR_TEXT),
        "name": COLLECTOR_TEXT,
        "category": COLLECTOR_TEXT,
        "previousId": _ids(),
        "groupId": _ids(),
        "properties": _objects(),
        "traits": _objects(),
        "context": _objects(),
        "integrations": _objects(),
        "timestamp": COLLECTOR_TIMES,
        "originalTimestamp": COLLECTOR_TIMES,
        "sentAt": COLLECTOR_TIMES,
    },
)
# A message the collectors accept, with hostile contents: what reaches the store.
ACCEPTED_MESSAGE = st.fixed_dictionaries(
    {
        "type": st.sampled_from(MESSAGE_TYPES),
        "userId": st.sampled_from(["u1", "alice", "zoë"]),
        "anonymousId": st.sampled_from(["a-1", "a-2"]),
        "event": st.sampled_from(["Product Viewed", "Order Completed", "App Launched", "Signed Up"]),
        "name": st.sampled_from(["Home", "Cart"]),
        "groupId": st.just("g-1"),
        "previousId": st.just("a-old"),
    },
    optional={
        "properties": st.dictionaries(COLLECTOR_TEXT, COLLECTOR_JSON, max_size=5),
        "traits": st.dictionaries(COLLECTOR_TEXT, COLLECTOR_JSON, max_size=5),
        "context": st.dictionaries(COLLECTOR_TEXT, COLLECTOR_JSON, max_size=5),
        "timestamp": _IN_RANGE_TIMES,
    },
)
MESSAGE = mostly(ACCEPTED_MESSAGE, HOSTILE_MESSAGE, per_ten=5)
_message_numbers = itertools.count()


def _numbered(message: dict[str, Any]) -> dict[str, Any]:
    # A known, unique id, so the check below can find what was stored.
    return {**message, "messageId": f"fz-{next(_message_numbers)}"}


def _stored_or_dead_lettered(project_id: int, message_id: str) -> bool:
    return (
        Event.objects.filter(project_id=project_id, message_id=message_id).exists()
        or DeadLetter.objects.filter(project_id=project_id, message_id=message_id).exists()
    )


@pytest.mark.usefixtures("eager")
@pytest.mark.parametrize("kind", [*MESSAGE_TYPES, "batch"])
@FUZZ
@given(data=st.data())
def test_collectors_never_fail_and_store_what_they_accept(shop, kind, data):
    project, keys = shop
    client = Client()
    if kind == "batch":
        messages = [_numbered(m) for m in data.draw(st.lists(MESSAGE, min_size=1, max_size=5), "batch")]
        body: Any = {"batch": messages, **data.draw(st.fixed_dictionaries({}, optional={"sentAt": COLLECTOR_TIMES}))}
    else:
        messages = [_numbered(data.draw(MESSAGE, "message"))]
        body = messages[0]

    def check() -> None:
        response = client.generic(
            "POST", f"/v1/{kind}", dumps(body), content_type="application/json",
            HTTP_AUTHORIZATION=basic_header(keys.write_key),
        )  # fmt: skip
        _assert_not_5xx(response.status_code, f"/v1/{kind}", response.content)
        if response.status_code != 200:
            return
        rejected = {r["index"] for r in response.json().get("rejected", [])}
        for index, message in enumerate(messages):
            if index not in rejected:
                assert _stored_or_dead_lettered(project.pk, message["messageId"]), (index, message)

    _example(check)


@pytest.mark.usefixtures("eager")
@FUZZ
@given(
    kind=st.sampled_from([*MESSAGE_TYPES, "batch"]),
    header=st.one_of(st.none(), COLLECTOR_TEXT.map(as_header), texts(nul=COLLECTOR_NUL).map(basic_header)),
    body_key=st.one_of(st.none(), COLLECTOR_JSON),
    message=MESSAGE,
)
def test_collectors_with_a_bad_write_key_store_nothing(shop, kind, header, body_key, message):
    project, _keys = shop
    message = _numbered(message)
    body: dict[str, Any] = {"batch": [message]} if kind == "batch" else dict(message)
    if body_key is not None:
        body["writeKey"] = body_key
    extra = {"HTTP_AUTHORIZATION": header} if header is not None else {}

    def check() -> None:
        response = Client().generic("POST", f"/v1/{kind}", dumps(body), content_type="application/json", **extra)
        _assert_not_5xx(response.status_code, f"/v1/{kind}", response.content)
        assert response.status_code in (400, 401, 413), response.content
        assert not _stored_or_dead_lettered(project.pk, message["messageId"])

    _example(check)


# --- APIs --------------------------------------------------------------------------------

API_PARAMS = [
    "limit", "cursor", "email", "category", "in_stock", "is_active", "min_price", "max_price", "exclude",
    "prop.brand", "prop.year", "prop.", "page_size", "format",
]  # fmt: skip
API_ENDPOINTS = [
    ("GET", "/api/v1/profiles"),
    ("GET", "/api/v1/profiles/{id}"),
    ("GET", "/api/v1/profiles/{id}/events"),
    ("PATCH", "/api/v1/profiles/{id}"),
    ("GET", "/api/v1/products"),
    ("GET", "/api/v1/products/{id}"),
    ("POST", "/api/v1/catalog/uploads"),
    ("GET", "/api/v1/catalog/uploads/{upload}"),
    ("GET", "/api/v1/catalog/uploads/{upload}/errors"),
    ("GET", "/api/v1/users/{id}/recommendations"),
    ("GET", "/api/v1/products/{id}/similar"),
    ("GET", "/api/v1/trending"),
    ("GET", "/api/v1/segments"),
    ("GET", "/api/v1/segments/{id}"),
    ("GET", "/api/v1/segments/{id}/members"),
    ("GET", "/api/v1/users/{id}/segments"),
    ("GET", "/api/v1/campaigns/{campaign}/report"),
]
PATH_IDS = mostly(
    st.sampled_from(["alice", "u1", "p1", "P1"]),
    st.one_of(
        texts().filter(lambda t: t not in ("", ".", "..")).map(lambda t: quote(t, safe="")),
        st.binary(min_size=1, max_size=8).map(lambda b: quote(b, safe="")),
    ),
    per_ten=5,
)
UPLOAD_IDS = st.one_of(st.integers(min_value=0, max_value=2**70).map(str), texts().map(lambda t: quote(t, safe="")))
PATCH_BODIES = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "traits": st.one_of(st.dictionaries(texts(surrogates=True), json_values(), max_size=4), json_values()),
            "email_subscribed": json_values(deep=False),
            "push_subscribed": json_values(deep=False),
        },
    ),
    json_values(),
)


def _authorizations(keys: Any) -> st.SearchStrategy[str | None]:
    return mostly(
        st.just(f"Bearer {keys.secret_key}"),  # the parameters are what is fuzzed
        st.one_of(
            st.just(f"Bearer {keys.write_key}"),
            texts().map(as_header),
            texts().map(lambda t: as_header(f"Bearer {t}")),
            st.none(),
        ),
    )


@pytest.mark.parametrize(("method", "template"), API_ENDPOINTS)
@FUZZ
@given(data=st.data())
def test_api_endpoints_never_fail(shop, method, template, data):
    project, keys = shop
    upload = CatalogUpload.objects.get(project=project)
    campaign, _ = Campaign.objects.get_or_create(project=project, name="Fuzzed", channel="email")
    path = template.format(
        id=data.draw(PATH_IDS, "id"),
        upload=data.draw(mostly(st.just(str(upload.pk)), UPLOAD_IDS, 5), "upload"),
        campaign=data.draw(mostly(st.just(str(campaign.pk)), UPLOAD_IDS, 5), "campaign"),
    )
    query = data.draw(query_strings(API_PARAMS), "query")
    auth = data.draw(_authorizations(keys), "authorization")
    headers = {"HTTP_AUTHORIZATION": auth} if auth is not None else {}
    if method == "PATCH":
        payload, content_type = dumps(data.draw(PATCH_BODIES, "body")), "application/json"
    elif method == "POST":
        mode = data.draw(st.one_of(st.sampled_from(["upsert", "replace"]), texts(nul=True)), "mode")
        content = data.draw(st.one_of(st.just(b"id,price\nA,1\n"), st.binary(max_size=200)), "file")
        payload = None
    url = f"{path}?{query}"

    def check() -> None:
        client = Client(**headers)
        if method == "GET":
            response = client.get(url)
        elif method == "PATCH":
            response = client.generic("PATCH", url, payload, content_type=content_type)
        else:
            response = client.post(url, {"mode": mode, "file": SimpleUploadedFile("c.csv", content)})
        body = b"".join(response.streaming_content) if response.streaming else response.content  # the errors CSV
        _assert_not_5xx(response.status_code, f"{method} {url}", body)
        if response.status_code == 400:
            assert isinstance(response.json(), dict), response.content

    _example(check)


# The recipients' and providers' endpoints: no key, a signed token in the path.
PUBLIC_ENDPOINTS = ["/t/o/{token}", "/t/c/{token}", "/u/{token}", "/hooks/sendgrid/{token}", "/hooks/twilio/{token}"]


def _public_tokens(project_id: int) -> st.SearchStrategy[str]:
    """Tokens signed here (for a message that does not exist, or the project's
    receipt hooks), the same with a character changed, and anything at all."""
    signed = [
        open_url(project_id=project_id, message_id=1).rsplit("/", 1)[1],
        click_url(project_id=project_id, message_id=1, url="https://shop.example/").rsplit("/", 1)[1],
        sendgrid_webhook_url(project_id=project_id).rsplit("/", 1)[1],
        twilio_status_url(project_id=project_id, message_id=1).rsplit("/", 1)[1],
    ]
    tampered = st.tuples(st.sampled_from(signed), st.integers(min_value=0, max_value=40), texts()).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :]
    )
    return mostly(
        st.sampled_from(signed),
        st.one_of(tampered, texts(), st.binary(min_size=1, max_size=40).map(lambda b: b.decode("latin-1"))),
        per_ten=3,
    ).map(lambda t: quote(t, safe="") or "x")


@pytest.mark.parametrize("template", PUBLIC_ENDPOINTS)
@FUZZ
@given(data=st.data())
def test_public_endpoints_never_fail(shop, template, data):
    """Tracking links, the unsubscribe page and the receipt webhooks answer
    tampered tokens, hostile bodies and forged signature headers with a 4xx
    (or their normal answer), never a 5xx."""
    project, _keys = shop
    path = template.format(token=data.draw(_public_tokens(project.pk), "token"))
    method = data.draw(st.sampled_from(["GET", "POST"]), "method")
    body = data.draw(
        st.one_of(
            json_values(nul=True, surrogates=True, deep=True).map(dumps),
            st.binary(max_size=300),
            st.just(b"List-Unsubscribe=One-Click"),
        ),
        "body",
    )
    content_type = data.draw(
        st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain"]), "content type"
    )
    headers = {
        "HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE": data.draw(texts().map(as_header), "sendgrid signature"),
        "HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP": data.draw(texts().map(as_header), "sendgrid timestamp"),
        "HTTP_X_TWILIO_SIGNATURE": data.draw(texts().map(as_header), "twilio signature"),
    }

    def check() -> None:
        client = Client(**headers)
        if method == "GET":
            response = client.get(path)
        else:
            response = client.generic("POST", path, body, content_type=content_type)
        _assert_not_5xx(response.status_code, f"{method} {path}", response.content)
        if response.status_code in (301, 302, 303, 307, 308):
            # Only a signed click link redirects, and only to the URL it signed.
            assert response["Location"] == "https://shop.example/", response["Location"]

    _example(check)


@FUZZ
@given(data=st.data())
def test_the_recommendation_fast_path_never_fails(shop, data):
    _project, keys = shop
    segment = data.draw(st.one_of(st.sampled_from([b"u1", b"alice"]), st.binary(min_size=1, max_size=12)), "user")
    path = "/api/v1/users/" + segment.replace(b"/", b"_").decode("latin-1") + "/recommendations"
    query = data.draw(query_strings(API_PARAMS), "query")
    auth = data.draw(_authorizations(keys), "authorization")

    def check() -> None:
        headers = {"HTTP_AUTHORIZATION": auth} if auth is not None else {}
        status, _headers, body = wsgi_call(path, query=query, **headers)
        _assert_not_5xx(status, f"fast path {path}?{query}", body)
        if status == 400:
            assert "field" in json.loads(body), body

    _example(check)


# --- Console -----------------------------------------------------------------------------

# Every admin of the project: ConsoleAdmin is their base (crm.admin_base).
CONSOLE_ADMINS = sorted(
    ((model._meta.label_lower, model_admin) for model, model_admin in admin.site._registry.items()
     if isinstance(model_admin, ConsoleAdmin)),
    key=lambda pair: pair[0],
)  # fmt: skip
LOOKUPS = ["", "__exact", "__iexact", "__gte", "__lt", "__in", "__isnull", "__year", "__month", "__contains", "__id"]
CONSOLE_PARAMS = ["q", "o", "p", "e", "all", "_facets", "_to_field", "_popup", "project__id__exact"]


def _changelist_keys(model: type[models.Model], model_admin: ConsoleAdmin) -> list[str]:
    fields = [f.name for f in model._meta.get_fields() if getattr(f, "concrete", False)]
    filters = [getattr(f, "parameter_name", None) for f in model_admin.list_filter]
    return sorted({*(f + lookup for f in fields for lookup in LOOKUPS), *filter(None, filters), *CONSOLE_PARAMS})


@pytest.fixture
def console_clients(shop, superuser_client, marketer_a) -> dict[str, Client]:
    marketer = Client()
    marketer.force_login(marketer_a)
    return {"superuser": superuser_client, "marketer": marketer}


@pytest.mark.parametrize(("label", "model_admin"), CONSOLE_ADMINS, ids=[label for label, _ in CONSOLE_ADMINS])
# Twenty changelists, one base class (crm.admin_base.ConsoleAdmin): fewer examples each.
@settings(FUZZ, max_examples=max(FUZZ.max_examples // 4, 10))
@given(data=st.data())
def test_console_changelists_never_fail(console_clients, label, model_admin, data):
    model = model_admin.model
    url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
    query = data.draw(query_strings(_changelist_keys(model, model_admin)), "query")
    client = console_clients[data.draw(st.sampled_from(sorted(console_clients)), "who")]

    def check() -> None:
        response = client.get(f"{url}?{query}")
        _assert_not_5xx(response.status_code, f"{url}?{query}", response.content)
        if response.status_code == 302:
            assert response["Location"] == f"{url}?e=1", response["Location"]  # Django's answer to a bad filter

    _example(check)


def _autocomplete_sources() -> list[tuple[str, str, str]]:
    sources = []
    for model, _admin in admin.site._registry.items():
        for field in model._meta.get_fields():
            remote = getattr(getattr(field, "remote_field", None), "model", None)
            if field.concrete and remote in admin.site._registry:
                sources.append((model._meta.app_label, model._meta.model_name, field.name))
    return sorted(sources)


@FUZZ
@given(data=st.data())
def test_console_autocomplete_never_fails(console_clients, data):
    app_label, model_name, field_name = data.draw(
        st.one_of(st.sampled_from(_autocomplete_sources()), st.tuples(texts(), texts(), texts())), "source"
    )
    query = {"app_label": app_label, "model_name": model_name, "field_name": field_name}
    query["term"] = data.draw(texts(), "term")
    query.update(data.draw(st.fixed_dictionaries({}, optional={"page": texts()}), "page"))
    client = console_clients[data.draw(st.sampled_from(sorted(console_clients)), "who")]

    def check() -> None:
        response = client.get("/admin/autocomplete/", query)
        _assert_not_5xx(response.status_code, f"autocomplete {query!r}", response.content)

    _example(check)
