"""The Liquid environment of every campaign template (python-liquid), one for all
channels, and how a template is rendered as HTML or as plain text.

One environment, `autoescape=True`: an HTML field (email html, in-app html)
escapes every value it outputs, so a product named `<b>` or a trait holding
markup cannot inject HTML. A plain-text field (subject, email text, SMS, push,
webhook values) must not: "Fish & Chips" in an SMS is not "Fish &amp; Chips".
python-liquid decides at output time from the render context's `autoescape`
flag (liquid.builtin.output reads `context.autoescape`, which RenderContext
copies from the environment), so template_render(..., html=False) renders the
same compiled template with that flag off. No second environment: the same
filters, tags and limits for every field, and one compile cache.

Its own module so that the models (which validate a template on save) and the
channels (which render one per message) both import it without importing each
other."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from io import StringIO
from typing import Any

from liquid import Environment
from liquid.filter import with_context
from liquid.template import BoundTemplate


class _CampaignEnvironment(Environment):
    # A runaway loop is that message's template error, not a stuck worker. No
    # output_stream_limit: python-liquid then writes through a Python-level
    # buffer that encodes every write to count bytes (15 % of an email's render
    # was measured there); the loop limit bounds the output anyway.
    loop_iteration_limit = 100_000


_env = _CampaignEnvironment(autoescape=True)

# The key under which a render context may carry a product lookup (a callable:
# product id -> the product's dict, or None), for the `product` filter.
PRODUCT_LOOKUP = "_product_lookup"


@with_context
def _product_filter(value: Any, *, context: Any) -> Any:
    """`{% assign p = "sku-1" | product %}{{ p.name }}`: a catalog product by id
    (campaigns.sending.context puts the chunk's lookup in the context); nil
    when the id is not an active product of the project."""
    lookup = context.resolve(PRODUCT_LOOKUP, default=None)
    if lookup is None or value is None:
        return None
    return lookup(str(value))


_env.filters["product"] = _product_filter


@lru_cache(maxsize=1024)
def template_compile(source: str) -> BoundTemplate:
    """The compiled template of `source`; a Liquid syntax error raises
    liquid.exceptions.LiquidError (a subclass per kind)."""
    return _env.from_string(source)


def template_render(source: str, context: Mapping[str, Any], *, html: bool) -> str:
    """`source` rendered with `context`; values escaped for HTML when `html`,
    output as they are otherwise. Raises what Liquid raises (syntax or render
    errors, the limits above)."""
    template = template_compile(source)
    render_context = template.context_class(template, globals=template.make_globals(context))
    render_context.autoescape = html
    buffer = StringIO()
    template.render_with_context(render_context, buffer)
    return buffer.getvalue()
