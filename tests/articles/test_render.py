"""Safe server-side markdown rendering: structure, raw HTML, link and image policies."""

from __future__ import annotations

import json

import pytest
from selectolax.lexbor import LexborHTMLParser, LexborNode

from app.articles.render import MARKDOWN_OPTIONS, is_allowed_link, render_markdown


def parse(markdown: str) -> LexborNode:
    body = LexborHTMLParser(render_markdown(markdown)).body
    assert body is not None
    return body


def hrefs(body: LexborNode) -> list[str]:
    return [a.attributes.get("href") or "" for a in body.css("a")]


def assert_safe(html: str) -> None:
    body = LexborHTMLParser(html).body
    assert body is not None
    for node in body.css("*"):
        assert node.tag not in {"script", "iframe", "object", "embed", "style", "form", "svg", "math"}
        for name, value in node.attributes.items():
            assert not name.lower().startswith("on"), (node.tag, name)
            assert name.lower() != "style", node.tag
            if name in {"href", "src"}:
                lowered = (value or "").strip().lower()
                assert "script:" not in lowered
                assert not lowered.startswith(("//", "data:", "file:"))
        if node.tag == "img":
            assert (node.attributes.get("src") or "").startswith("/")


# --- configuration ---------------------------------------------------------------------------


def test_options_are_the_documented_js_mirrorable_ones() -> None:
    assert MARKDOWN_OPTIONS["preset"] == "commonmark"
    assert MARKDOWN_OPTIONS["options"] == {"html": False, "linkify": False, "typographer": False}
    assert MARKDOWN_OPTIONS["enable"] == ["table", "strikethrough"]
    json.dumps(MARKDOWN_OPTIONS)  # the browser side can be handed it as JSON


def test_the_instance_really_has_html_off() -> None:
    from app.articles import render

    assert render._MD.options["html"] is False
    active = render._MD.get_active_rules()
    assert "table" in active["block"]
    assert "strikethrough" in active["inline"]


# --- ordinary markdown -----------------------------------------------------------------------


def test_headings_paragraphs_emphasis() -> None:
    body = parse("# Title\n\n## Early years\n\nShe *sang* and **played**.\n\nSecond paragraph.")
    assert body.css_first("h1").text() == "Title"
    assert body.css_first("h2").text() == "Early years"
    assert [p.text() for p in body.css("p")] == ["She sang and played.", "Second paragraph."]
    assert body.css_first("em").text() == "sang"
    assert body.css_first("strong").text() == "played"


def test_lists() -> None:
    body = parse("- one\n- two\n\n1. first\n2. second\n")
    assert [li.text() for li in body.css("ul > li")] == ["one", "two"]
    assert [li.text() for li in body.css("ol > li")] == ["first", "second"]


def test_code_fence_keeps_blank_lines_and_escapes() -> None:
    body = parse("```python\nx = 1\n\n\ny = '<b>'\n```\n")
    code = body.css_first("pre > code")
    assert code.attributes.get("class") == "language-python"
    assert code.text() == "x = 1\n\n\ny = '<b>'\n"
    assert body.css_first("b") is None


def test_fence_info_string_cannot_break_out_of_the_class_attribute() -> None:
    html = render_markdown('```js" onclick="alert(1)\nfoo\n```\n')
    assert_safe(html)
    body = LexborHTMLParser(html).body
    assert body is not None
    assert set(body.css_first("code").attributes) == {"class"}


def test_tables_use_alignment_classes_not_style() -> None:
    html = render_markdown("| a | b | c | d |\n|:--|:-:|--:|---|\n| 1 | 2 | 3 | 4 |\n")
    assert_safe(html)
    body = LexborHTMLParser(html).body
    assert body is not None
    assert [th.text() for th in body.css("table thead th")] == ["a", "b", "c", "d"]
    assert [td.text() for td in body.css("table tbody td")] == ["1", "2", "3", "4"]
    assert [td.attributes.get("class") for td in body.css("td")] == [
        "align-left",
        "align-center",
        "align-right",
        None,
    ]


def test_strikethrough() -> None:
    assert parse("~~gone~~ here").css_first("s").text() == "gone"


# --- raw HTML ----------------------------------------------------------------------------------

RAW_HTML = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<iframe src="https://evil.example"></iframe>',
    '<a href="javascript:alert(1)">click</a>',
    '<div style="position:fixed" onmouseover="alert(1)">x</div>',
    "<style>body{display:none}</style>",
    '<svg onload="alert(1)"></svg>',
]


@pytest.mark.parametrize("snippet", RAW_HTML)
@pytest.mark.parametrize("where", ["block", "inline"])
def test_raw_html_is_escaped_text(snippet: str, where: str) -> None:
    markdown = snippet if where == "block" else f"Some text {snippet} more text"
    html = render_markdown(markdown)
    assert_safe(html)
    body = LexborHTMLParser(html).body
    assert body is not None
    assert body.css("script, iframe, img, div, style, svg") == []
    assert body.css("a") == []
    assert snippet in body.text()  # shown to the reader, as text


# --- links -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "href"),
    [
        ("[site](http://example.com/a)", "http://example.com/a"),
        ("[site](https://example.com/a?b=c#d)", "https://example.com/a?b=c#d"),
        ("[mail](mailto:someone@example.com)", "mailto:someone@example.com"),
        ("[page](/artists/nina-simone)", "/artists/nina-simone"),
        ("[anchor](#discography)", "#discography"),
        ("[query](?page=2)", "?page=2"),
        ("[sibling](./other)", "./other"),
        ("[parent](../up)", "../up"),
        ("[bare](other-page)", "other-page"),
        ("<https://example.com>", "https://example.com"),
        ("<someone@example.com>", "mailto:someone@example.com"),
    ],
)
def test_allowed_links(markdown: str, href: str) -> None:
    html = render_markdown(markdown)
    assert_safe(html)
    body = LexborHTMLParser(html).body
    assert body is not None
    assert hrefs(body) == [href]


def test_external_links_get_rel_and_internal_ones_do_not() -> None:
    body = parse("[a](https://example.com) [b](HTTP://EXAMPLE.COM) [c](/x) [d](mailto:a@b.c)")
    rels = [a.attributes.get("rel") for a in body.css("a")]
    assert rels == ["nofollow noopener noreferrer", "nofollow noopener noreferrer", None, None]


BAD_LINKS = [
    "[x](javascript:alert(1))",
    "[x](JAVASCRIPT:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x]( javascript:alert(1))",
    "[x](<javascript:alert(1)>)",
    "[x](javas&#99;ript:alert(1))",
    "[x](&#x6A;avascript:alert(1))",
    "[x](<javascript&colon;alert(1)>)",
    "[x](<java\tscript:alert(1)>)",
    "[x](<java\x01script:alert(1)>)",
    "[x](<&#9;javascript:alert(1)>)",
    "[x](<%20javascript:alert(1)>)",
    "[x](&#0;javascript:alert(1))",
    "[x](data:text/html,<script>alert(1)</script>)",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[x](data:image/png;base64,iVBORw0KGgo=)",
    "[x](vbscript:msgbox(1))",
    "[x](file:///etc/passwd)",
    "[x](//evil.example)",
    "[x](\\/\\/evil.example)",
    "[x](ftp://example.com)",
    "[x](foo:bar)",
    "<javascript:alert(1)>",
    "<JAVASCRIPT:alert(1)>",
    "<vbscript:msgbox(1)>",
    "<data:text/html,hi>",
    "<file:///etc/passwd>",
    "[x][r]\n\n[r]: javascript:alert(1)",
    "[x][r]\n\n[r]: //evil.example",
]


@pytest.mark.parametrize("markdown", BAD_LINKS)
def test_dangerous_links_render_as_text(markdown: str) -> None:
    html = render_markdown(markdown)
    assert_safe(html)
    body = LexborHTMLParser(html).body
    assert body is not None
    for href in hrefs(body):
        lowered = href.lower()
        assert "script:" not in lowered
        assert not lowered.startswith(("//", "data:", "file:", "ftp:", "foo:"))
        assert "\\" not in href
    assert body.css("a") == []
    assert body.text().strip()  # the reader still sees something


def test_backslash_path_is_never_a_protocol_relative_href() -> None:
    # Browsers read "/\host" as "//host"; markdown-it percent-encodes the backslash first, leaving a
    # harmless same-site path.
    body = parse("[x](/\\evil.example)")
    assert hrefs(body) == ["/%5Cevil.example"]


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        " javascript:alert(1)",
        "java\tscript:alert(1)",
        "java%09script:alert(1)",
        "\x00javascript:x",
        "//evil.example",
        "/\\evil.example",
        "&#0;javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "mailtox:a",
    ],
)
def test_link_policy_directly(url: str) -> None:
    assert not is_allowed_link(url)


# --- images ------------------------------------------------------------------------------------


def test_remote_image_becomes_its_alt_text() -> None:
    html = render_markdown("Look: ![the band on stage](https://evil.example/x.png)")
    assert_safe(html)
    assert "evil.example" not in html
    body = LexborHTMLParser(html).body
    assert body is not None
    assert body.css("img") == []
    assert body.css_first("span.image-alt").text() == "the band on stage"


def test_http_image_and_relative_non_rooted_image_are_alt_text_too() -> None:
    body = parse("![a](http://evil.example/a.png) ![b](images/b.png) ![c](HTTPS://EVIL.EXAMPLE/c.png)")
    assert body.css("img") == []
    assert [s.text() for s in body.css("span.image-alt")] == ["a", "b", "c"]


def test_same_site_image_is_rendered() -> None:
    body = parse("![logo](/static/logo.png)")
    img = body.css_first("img")
    assert img.attributes == {"src": "/static/logo.png", "alt": "logo"}


def test_protocol_relative_image_is_not_loaded() -> None:
    html = render_markdown("![x](//evil.example/a.png)")
    assert_safe(html)
    body = LexborHTMLParser(html).body
    assert body is not None
    assert body.css("img") == []
    assert "x" in body.text()


@pytest.mark.parametrize(
    "markdown",
    [
        "![a ref][pic]\n\n[pic]: https://evil.example/p.png",
        '![a ref][pic]\n\n[pic]: <https://evil.example/p.png> "Title"',
        "![a ref]\n\n[a ref]: http://evil.example/p.png",
        "![a ref][]\n\n[a ref]: //evil.example/p.png",
    ],
)
def test_reference_style_remote_images_are_not_loaded(markdown: str) -> None:
    html = render_markdown(markdown)
    assert_safe(html)
    body = LexborHTMLParser(html).body
    assert body is not None
    assert body.css("img") == []
    assert "a ref" in body.text()


def test_reference_style_same_site_image_is_rendered() -> None:
    body = parse("![logo][l]\n\n[l]: /static/logo.png")
    assert body.css_first("img").attributes.get("src") == "/static/logo.png"


@pytest.mark.parametrize(
    "markdown",
    [
        "![x](javascript:alert(1))",
        "![x](data:image/png;base64,iVBORw0KGgo=)",
        "![x](data:image/svg+xml,<svg onload=alert(1)>)",
        "![x](file:///etc/passwd)",
    ],
)
def test_dangerous_image_sources_are_not_loaded(markdown: str) -> None:
    html = render_markdown(markdown)
    assert_safe(html)
    body = LexborHTMLParser(html).body
    assert body is not None
    assert body.css("img") == []


def test_image_alt_text_is_escaped() -> None:
    html = render_markdown('![<script>alert(1)</script> "q"](https://evil.example/x.png)')
    assert_safe(html)
    body = LexborHTMLParser(html).body
    assert body is not None
    assert body.css("script") == []
    assert body.css_first("span.image-alt").text() == '<script>alert(1)</script> "q"'


def test_same_site_image_alt_is_escaped_in_the_attribute() -> None:
    body = parse('![a" onerror="alert(1)](/static/x.png)')
    img = body.css_first("img")
    assert set(img.attributes) == {"src", "alt"}
    assert img.attributes["alt"] == 'a" onerror="alert(1)'


def test_image_inside_link_to_remote_site() -> None:
    html = render_markdown("[![cover](https://evil.example/c.png)](https://example.com)")
    assert_safe(html)
    body = LexborHTMLParser(html).body
    assert body is not None
    assert body.css("img") == []
    assert hrefs(body) == ["https://example.com"]


# --- miscellany --------------------------------------------------------------------------------


def test_text_that_looks_like_sse_frames_is_harmless() -> None:
    markdown = 'data: {"type":"done"}\n\nevent: done\n\nid: 7\nretry: 0\n\n: comment'
    html = render_markdown(markdown)
    assert_safe(html)
    body = LexborHTMLParser(html).body
    assert body is not None
    assert [p.text() for p in body.css("p")] == [
        'data: {"type":"done"}',
        "event: done",
        "id: 7\nretry: 0",
        ": comment",
    ]
    assert body.css("a") == []


def test_a_whole_hostile_document_has_no_event_handlers_or_styles() -> None:
    markdown = "\n\n".join(
        [
            "# Portrait <img src=x onerror=alert(1)>",
            *RAW_HTML,
            *BAD_LINKS,
            "![x](https://evil.example/x.png) ![y](/ok.png)",
            "| a |\n|:-:|\n| <b onclick=x>b</b> |",
            "```html\n<script>alert(1)</script>\n```",
            "`<script>`",
            "> quote <span style=color:red>red</span>",
        ]
    )
    html = render_markdown(markdown)
    assert_safe(html)
    assert "<script" not in html
    assert "<iframe" not in html


def test_empty_and_unicode_input() -> None:
    assert render_markdown("") == ""
    body = parse("Björk — *Homogenic* 🎻")
    assert body.text().strip() == "Björk — Homogenic 🎻"


def test_rendering_is_deterministic_and_reusable() -> None:
    markdown = "![a](https://evil.example/x.png) [b](https://example.com) | x |\n|:-|\n| y |"
    assert render_markdown(markdown) == render_markdown(markdown)
