"""The local provider server's checks and error shapes, over HTTP, and its console outbox."""

from __future__ import annotations

import base64
import json
import uuid
from urllib.parse import urlencode

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from localproviders.models import OutboxMessage

SENDGRID = "/_local/sendgrid/v3/mail/send"
SID = "AC" + "1" * 32


@pytest.fixture
def on(settings, db):  # noqa: ANN001, ANN201
    settings.LOCAL_PROVIDERS = True
    return Client()


def _mail(personalizations: int = 1, **extra: object) -> dict:
    return {
        "from": {"email": "shop@example.com"},
        "content": [{"type": "text/plain", "value": "hi"}],
        "personalizations": [{"to": [{"email": f"u{n}@example.com"}], "subject": "S"} for n in range(personalizations)],
        **extra,
    }


def _post_form(client: Client, path: str, form: dict, **headers: str):  # noqa: ANN202
    # As google-auth and twilio send them: application/x-www-form-urlencoded.
    return client.post(path, data=urlencode(form), content_type="application/x-www-form-urlencoded", headers=headers)


def _post_json(client: Client, path: str, body: object, **headers: str):  # noqa: ANN202
    return client.post(path, data=json.dumps(body), content_type="application/json", headers=headers)


def test_every_path_is_404_when_local_providers_are_off(settings):
    settings.LOCAL_PROVIDERS = False
    client = Client()
    for path in (SENDGRID, "/_local/google/token", "/_local/fcm/v1/projects/p/messages:send",
                 f"/_local/twilio/2010-04-01/Accounts/{SID}/Messages.json", "/_local/webhooks/x"):  # fmt: skip
        assert client.post(path, data="{}", content_type="application/json").status_code == 404
        assert client.get(path).status_code == 404


def test_the_providers_take_post_only(on):
    assert on.get(SENDGRID).status_code == 405
    assert on.get("/_local/webhooks/x").status_code == 405


def test_sendgrid_refuses_a_missing_or_malformed_api_key_with_its_401(on):
    for headers in ({}, {"Authorization": "Bearer abc"}):
        response = _post_json(on, SENDGRID, _mail(), **headers)
        assert response.status_code == 401
        assert response.json() == {
            "errors": [
                {"field": None, "message": "The provided authorization grant is invalid, expired, or revoked",
                 "help": None}
            ]
        }  # fmt: skip


def test_sendgrid_takes_at_most_1000_personalizations(on):
    response = _post_json(on, SENDGRID, _mail(1001), Authorization="Bearer SG.x")

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"field": "personalizations", "message": "The personalizations field must have no more than 1000 items.",
         "help": None}
    ]  # fmt: skip


def test_sendgrid_names_each_missing_or_bad_field(on):
    mail = {
        "from": {"email": "nope"},
        "content": [{"type": "text/html", "value": ""}],
        "personalizations": [{"to": [{"email": "ok@example.com"}, {"email": "bad"}]}, {"subject": "x"}],
    }

    response = _post_json(on, SENDGRID, mail, Authorization="Bearer SG.x")

    assert response.status_code == 400
    assert [error["field"] for error in response.json()["errors"]] == [
        "from.email",
        "content.0.value",
        "personalizations.0.to.1.email",
        "personalizations.0.subject",
        "personalizations.1.to",
    ]
    assert not OutboxMessage.objects.exists()


def test_sendgrid_refuses_a_body_that_is_not_json(on):
    response = on.post(SENDGRID, data="{", content_type="application/json", headers={"Authorization": "Bearer SG.x"})

    assert (response.status_code, response.json()["errors"][0]["message"]) == (400, "Bad Request")


def test_the_token_endpoint_refuses_another_grant_and_a_broken_assertion(on):
    response = _post_form(on, "/_local/google/token", {"grant_type": "client_credentials"})
    assert (response.status_code, response.json()["error"]) == (400, "unsupported_grant_type")

    grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    response = _post_form(on, "/_local/google/token", {"grant_type": grant, "assertion": "a.b"})
    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


def test_the_token_endpoint_issues_a_token_fcm_accepts(on):
    claims = {"iss": "sa@p.iam.gserviceaccount.com", "aud": "http://testserver/_local/google/token",
              "scope": "https://www.googleapis.com/auth/firebase.messaging", "exp": 4_000_000_000}  # fmt: skip
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"

    response = _post_form(on, "/_local/google/token", {"grant_type": grant, "assertion": f"e30.{payload}.sig"})

    assert response.status_code == 200
    answer = response.json()
    assert (answer["token_type"], answer["expires_in"]) == ("Bearer", 3599)
    # An FCM call with it gets past authentication to the message's checks.
    response = _post_json(on, "/_local/fcm/v1/projects/p/messages:send", {"message": {"token": "x"}},
                          Authorization=f"Bearer {answer['access_token']}")  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"]["details"][0] == {
        "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
        "errorCode": "INVALID_ARGUMENT",
    }


def test_fcm_refuses_a_token_it_did_not_issue_in_the_googleapis_format(on):
    response = _post_json(on, "/_local/fcm/v1/projects/p/messages:send", {"message": {"token": "t" * 30}},
                          Authorization="Bearer forged")  # fmt: skip

    assert response.status_code == 401
    assert response.json()["error"]["status"] == "UNAUTHENTICATED"
    assert response.json()["error"]["code"] == 401


def _twilio(client: Client, form: dict, user: str = SID, password: str = "tok"):  # noqa: ANN202
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return _post_form(client, f"/_local/twilio/2010-04-01/Accounts/{SID}/Messages.json", form,
                      Authorization=f"Basic {auth}")  # fmt: skip


@pytest.mark.parametrize(
    ("form", "user", "status", "code"),
    [
        ({"To": "+14155550101", "From": "+15005550006", "Body": "x"}, "AC" + "2" * 32, 401, 20003),
        ({"From": "+15005550006", "Body": "x"}, SID, 400, 21604),
        ({"To": "+0123", "From": "+15005550006", "Body": "x"}, SID, 400, 21211),
        ({"To": "+14155550101", "Body": "x"}, SID, 400, 21603),
        ({"To": "+14155550101", "From": "shop", "Body": "x"}, SID, 400, 21212),
        ({"To": "+14155550101", "From": "+15005550006"}, SID, 400, 21602),
        ({"To": "+14155550101", "From": "+15005550006", "Body": "x" * 1601}, SID, 400, 21617),
    ],
)
def test_twilio_answers_its_error_codes(on, form, user, status, code):
    response = _twilio(on, form, user=user)

    assert response.status_code == status
    assert response.json()["code"] == code
    assert response.json()["more_info"] == f"https://www.twilio.com/docs/errors/{code}"


def _outbox_row(**fields: object) -> OutboxMessage:
    return OutboxMessage.objects.create(
        provider=fields.pop("provider", "sendgrid"), call_id=uuid.uuid4(), recipient=fields.pop("recipient", "a@x.io"),
        subject=fields.pop("subject", "Hello"), body="Hi", **fields,
    )  # fmt: skip


def test_the_console_lists_the_outbox_to_superusers_read_only(db):
    rows = [_outbox_row(), _outbox_row(provider="fcm", recipient="tok-1", subject="Push title")]
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", "root@x.io", "pw-root-123"))

    page = client.get("/admin/localproviders/outboxmessage/")

    assert page.status_code == 200
    assert [row.pk for row in page.context["cl"].result_list] == [rows[1].pk, rows[0].pk]
    assert b"Push title" in page.content and b"a@x.io" in page.content
    detail = client.get(f"/admin/localproviders/outboxmessage/{rows[0].pk}/change/")
    assert detail.status_code == 200
    assert b'name="recipient"' not in detail.content  # read-only: no form inputs
    assert client.get("/admin/localproviders/outboxmessage/add/").status_code == 403
    response = client.post(f"/admin/localproviders/outboxmessage/{rows[0].pk}/change/", {"recipient": "changed"})
    assert response.status_code == 403
    assert OutboxMessage.objects.get(pk=rows[0].pk).recipient == "a@x.io"


def test_the_outbox_is_hidden_from_a_marketer(marketer_a):
    _outbox_row()
    client = Client()
    client.force_login(marketer_a)

    assert client.get("/admin/localproviders/outboxmessage/").status_code == 403
    assert b"localproviders" not in client.get("/admin/").content
