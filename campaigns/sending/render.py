"""A variant's channel templates rendered into the delivery service's content.

Per channel (Variant.content holds Liquid templates for these fields):
- email {subject, html, text, from_email, from_name, reply_to} -> the same, plus
  unsubscribe_url (the signed link; the channel sets List-Unsubscribe from it);
- push {title, body, image, deeplink, data} (data: an object of text templates);
- sms {text};
- webhook {url, body}: `body` is a JSON template, rendered as text then parsed
  (a body that is not JSON after rendering is a template error);
- in_app {html}.
HTML fields (email html, in-app html) are rendered with HTML escaping, every
other field as plain text (campaigns.templating.template_render).

A failure is a RenderError naming the field; the fan-out records it as that
message's `template_error` skip, and the other messages of the chunk go.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from campaigns.templating import template_render

# field -> rendered as HTML?; the first group's fields are the channel's.
CHANNEL_FIELDS: dict[str, dict[str, bool]] = {
    "email": {
        "subject": False,
        "html": True,
        "text": False,
        "from_email": False,
        "from_name": False,
        "reply_to": False,
    },
    "push": {"title": False, "body": False, "image": False, "deeplink": False},
    "sms": {"text": False},
    "webhook": {"url": False},
    "in_app": {"html": True},
}
# What a channel's content must have (after rendering: a field that renders
# empty is missing too): each entry is a set of fields of which one is needed.
REQUIRED: dict[str, list[tuple[str, ...]]] = {
    "email": [("subject",), ("html", "text")],
    "push": [("title", "body")],
    "sms": [("text",)],
    "webhook": [("url",)],
    "in_app": [("html",)],
}


class RenderError(Exception):
    """A variant's template failed for one profile; `field` names which."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _render(field: str, source: Any, context: Mapping[str, Any], *, html: bool) -> str:
    if source in (None, ""):
        return ""
    if not isinstance(source, str):
        raise RenderError(field, "must be a template (text)")
    try:
        return template_render(source, context, html=html)
    except Exception as exc:  # noqa: BLE001 - any Liquid error is this message's template error
        raise RenderError(field, _first_line(exc)) from exc


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


def variant_render(*, channel: str, content: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """The delivery content of `channel` from the variant's `content` templates
    and one profile's `context`; raises RenderError naming the field."""
    fields = CHANNEL_FIELDS.get(channel)
    if fields is None:
        raise RenderError("channel", f"{channel!r} is not a channel")
    out: dict[str, Any] = {}
    for field, html in fields.items():
        value = _render(field, content.get(field), context, html=html)
        if value:
            out[field] = value
    if channel == "push":
        data = content.get("data") or {}
        if not isinstance(data, dict):
            raise RenderError("data", "must be an object of key -> text template")
        rendered = {str(k): _render(f"data.{k}", v, context, html=False) for k, v in data.items()}
        if rendered:
            out["data"] = rendered
    elif channel == "webhook":
        body = content.get("body")
        if body not in (None, ""):
            text = _render("body", body if isinstance(body, str) else json.dumps(body), context, html=False)
            try:
                out["body"] = json.loads(text)
            except ValueError as exc:
                raise RenderError("body", f"not JSON after rendering: {exc}") from None
    elif channel == "email" and context.get("unsubscribe_url"):
        out["unsubscribe_url"] = context["unsubscribe_url"]
    for group in REQUIRED[channel]:
        if not any(out.get(f) for f in group):
            raise RenderError(group[0], "renders empty" if any(content.get(f) for f in group) else "is required")
    return out


# GSM 03.38: the basic set, and the extension set whose characters take two septets.
_GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = set("^{}\\[~]|€\f")


def sms_segments(text: str) -> int:
    """How many SMS segments `text` takes: GSM-7 (160 septets, 153 per part of a
    longer message; extension characters count two), else UCS-2 (70, 67 per
    part; characters outside the BMP count two UTF-16 units). 0 for ""."""
    if not text:
        return 0
    if all(c in _GSM7_BASIC or c in _GSM7_EXTENDED for c in text):
        units = sum(2 if c in _GSM7_EXTENDED else 1 for c in text)
        single, part = 160, 153
    else:
        units = sum(2 if ord(c) > 0xFFFF else 1 for c in text)
        single, part = 70, 67
    if units <= single:
        return 1
    return -(-units // part)


def profile_render(
    *,
    project_id: int,
    channel: str,
    content: Mapping[str, Any],
    recommendations: Any,
    profile_id: int,
    event: Mapping[str, Any] | None = None,
    product_id: str | None = None,
) -> dict[str, Any]:
    """One variant rendered for one profile with the same context a send builds
    (the console's preview, the in-app answer): the delivery content, or
    RenderError (field "profile" when the id is not a profile of the project)."""
    from campaigns.sending.context import context_spec, contexts_build

    try:
        spec = context_spec(content=content, recommendations=recommendations)
    except ValueError as exc:
        raise RenderError("recommendations", str(exc).partition(": ")[2] or str(exc)) from None
    contexts = contexts_build(
        project_id=project_id,
        channel=channel,
        profile_ids=[profile_id],
        spec_of={profile_id: spec},
        event=event,
        product_id=product_id,
    )
    if profile_id not in contexts:
        raise RenderError("profile", f"{profile_id} is not a profile of project {project_id}")
    return variant_render(channel=channel, content=content, context=contexts[profile_id])
