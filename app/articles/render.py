"""Safe server-side rendering of model-written markdown.

Model text is untrusted, so the HTML comes from markdown-it (markdown-it-py) configured to be boring:

* raw HTML is OFF (``html: False``): ``<script>`` in the markdown is shown as text, never emitted;
* links may only point at ``http:``, ``https:``, ``mailto:`` or a relative URL; anything else
  (``javascript:``, ``data:``, ``vbscript:``, ``file:``, protocol-relative ``//host`` ...) is
  refused by :meth:`_SafeMarkdownIt.validateLink`, and markdown-it then leaves the source as text;
* images are only loaded from the site itself (``/path``): a remote image becomes its alt text,
  because an image URL chosen by the model would tell a stranger who reads what;
* ``http(s)`` links get ``rel="nofollow noopener noreferrer"``;
* table alignment is a ``class="align-…"`` instead of markdown-it's ``style="text-align:…"``, so the
  output carries no ``style`` attribute (and survives a CSP without ``'unsafe-inline'``).

The browser renders the live stream with markdown-it 14.1.0 (JavaScript). :data:`MARKDOWN_OPTIONS`
describes everything that side must mirror so both renderings are identical::

    const md = markdownit("commonmark", {html: false, linkify: false, typographer: false})
      .enable(["table", "strikethrough"]);
    md.validateLink = url => /* MARKDOWN_OPTIONS.link_policy */;
    md.renderer.rules.image = ...;    // MARKDOWN_OPTIONS.image_policy
    md.renderer.rules.link_open = ...; // MARKDOWN_OPTIONS.external_link_rel
    md.renderer.rules.th_open = md.renderer.rules.td_open = ...; // MARKDOWN_OPTIONS.table_alignment

Rendering is pure (the rules only touch the tokens of the current parse), so the one module-level
instance is shared safely between threads and tasks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

__all__ = ["MARKDOWN_OPTIONS", "RENDERER_VERSION", "is_allowed_link", "is_same_site_image", "render_markdown"]

# The version of what `render_markdown` outputs. A stored article keeps the HTML rendered when it was stored,
# with this number. Bump it whenever the renderer's output changes (a safety fix, a new rule, a markdown-it
# upgrade that renders differently): `atelier migrate` then re-renders every stored article of another
# version (ArticleService.refresh_renderings), and until it has, reads render those in memory rather than
# serve HTML of another renderer.
RENDERER_VERSION: Final = 1

PRESET: Final = "commonmark"
OPTIONS: Final[dict[str, bool]] = {"html": False, "linkify": False, "typographer": False}
ENABLED_RULES: Final[tuple[str, ...]] = ("table", "strikethrough")
EXTERNAL_LINK_REL: Final = "nofollow noopener noreferrer"
IMAGE_ALT_CLASS: Final = "image-alt"
ALLOWED_SCHEMES: Final[tuple[str, ...]] = ("http:", "https:", "mailto:")
_ALIGNMENTS: Final = frozenset({"left", "center", "right"})

# Whitespace, C0/C1 control characters and backslashes never occur in a URL that markdown-it has
# normalized (it percent-encodes them); if one shows up, refuse rather than reason about how a
# browser would read it (browsers drop tabs and newlines and read "\" as "/"). markdown-it also
# decodes valid character references first, so a leftover "&#" is an invalid one (e.g. "&#0;"):
# refuse that too.
_SUSPICIOUS: Final = re.compile(r"[\x00-\x20\x7f-\x9f\\]|&#")
# The part of a URL before its first "/", "?" or "#": a ":" there means a scheme (or something a
# browser might read as one).
_FIRST_SEGMENT: Final = re.compile(r"^[^/?#]*")

MARKDOWN_OPTIONS: Final[dict[str, Any]] = {
    "library": "markdown-it (JS 14.1.0) / markdown-it-py",
    "preset": PRESET,
    "options": dict(OPTIONS),
    "enable": list(ENABLED_RULES),
    "link_policy": {
        "description": (
            "validateLink(url) receives the normalized URL (entities decoded, percent-encoded). "
            "Refuse it if refuse_regex matches (whitespace, a control character, a backslash or a "
            'leftover "&#"). Accept it if, '
            "lower-cased, it starts with one of allowed_prefixes. Otherwise refuse it if it starts "
            'with "//" (protocol-relative) or has a ":" before its first "/", "?" or "#" (a scheme); '
            "accept everything else (relative URLs: /x, #x, ?x, ./x, ../x, x). A refused link stays "
            "plain text (markdown-it's behaviour when validateLink returns false)."
        ),
        "allowed_prefixes": list(ALLOWED_SCHEMES),
        "refuse_regex": _SUSPICIOUS.pattern,
    },
    "image_policy": {
        "description": (
            'Render <img> only when src starts with "/" but not "//" (same site). Any other image '
            "renders as its alt text, HTML-escaped, in a span with class image_alt_class; the src is "
            "never emitted."
        ),
        "image_alt_class": IMAGE_ALT_CLASS,
    },
    "external_link_rel": {
        "description": 'link_open whose href starts (lower-cased) with "http:" or "https:" gets this rel.',
        "rel": EXTERNAL_LINK_REL,
    },
    "table_alignment": {
        "description": (
            'th_open/td_open: replace style="text-align:X" with class="align-X" (X in left, center, '
            "right); no style attribute is ever emitted."
        ),
        "class_prefix": "align-",
    },
    "raw_html_tokens": "html_block / html_inline (never produced with html: false) render escaped.",
}


def is_allowed_link(url: str) -> bool:
    """The link policy: http(s), mailto and relative URLs only. ``url`` is markdown-it-normalized."""
    if _SUSPICIOUS.search(url):
        return False
    if url.lower().startswith(ALLOWED_SCHEMES):
        return True
    if url.startswith("//"):
        return False
    first_segment = _FIRST_SEGMENT.match(url)
    return first_segment is not None and ":" not in first_segment.group(0)


def is_same_site_image(src: str) -> bool:
    """Images load only from this site: an absolute path, not protocol-relative."""
    return src.startswith("/") and not src.startswith("//") and is_allowed_link(src)


def _is_external(href: str) -> bool:
    return href.lower().startswith(("http:", "https:"))


class _SafeMarkdownIt(MarkdownIt):
    def validateLink(self, url: str) -> bool:
        return is_allowed_link(url)


def _render_image(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    token = tokens[idx]
    alt = self.renderInlineAsText(token.children, options, env) if token.children else ""
    src = token.attrGet("src")
    if isinstance(src, str) and is_same_site_image(src):
        token.attrSet("alt", alt)
        return self.renderToken(tokens, idx, options, env)
    return f'<span class="{IMAGE_ALT_CLASS}">{escapeHtml(alt)}</span>'


def _render_link_open(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    token = tokens[idx]
    href = token.attrGet("href")
    if isinstance(href, str) and _is_external(href):
        token.attrSet("rel", EXTERNAL_LINK_REL)
    return self.renderToken(tokens, idx, options, env)


def _render_table_cell_open(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    token = tokens[idx]
    style = token.attrs.pop("style", None)
    if style is not None:
        align = str(style).removeprefix("text-align:")
        if align in _ALIGNMENTS:
            token.attrJoin("class", f"align-{align}")
    return self.renderToken(tokens, idx, options, env)


def _render_raw_html(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    # Unreachable with html=False; kept so a configuration slip can never emit raw HTML.
    return escapeHtml(tokens[idx].content)


def _build() -> MarkdownIt:
    md = _SafeMarkdownIt(PRESET, OPTIONS).enable(list(ENABLED_RULES))
    # markdown-it-py's "commonmark" preset turns html on; make sure our override took.
    if md.options["html"] is not False or md.options["linkify"] or md.options["typographer"]:
        raise RuntimeError("markdown renderer is not configured safely")
    md.add_render_rule("image", _render_image)
    md.add_render_rule("link_open", _render_link_open)
    md.add_render_rule("th_open", _render_table_cell_open)
    md.add_render_rule("td_open", _render_table_cell_open)
    md.add_render_rule("html_block", _render_raw_html)
    md.add_render_rule("html_inline", _render_raw_html)
    return md


_MD: Final = _build()


def render_markdown(markdown: str) -> str:
    """Render untrusted markdown to safe HTML (see the module docstring for the rules)."""
    html: str = _MD.render(markdown)
    return html
