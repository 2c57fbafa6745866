"""static/js/markdown.js in real headless Chromium: parity with the server's renderer, incremental rendering.

The page is served by Playwright's router on a made-up origin (no Atelier needed), with the same
`script-src 'self'` policy as Atelier's pages: the vendored markdown-it is a classic script, the module is
imported from the page's own origin.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from playwright.sync_api import Browser, Page, Route

from app.articles.render import render_markdown
from tests.articles.test_render import BAD_LINKS, RAW_HTML

pytestmark = pytest.mark.browser

STATIC = Path(__file__).resolve().parent.parent.parent / "static"
ORIGIN = "http://atelier.test"
PAGE = """<!doctype html>
<html lang="en"><meta charset="utf-8"><title>markdown.js</title>
<script src="/static/vendor/markdown-it-14.1.0.min.js"></script>
<body><div id="out"></div></body></html>
"""

# Test helpers, run in the page (evaluation from the test is not subject to the page's CSP).
HARNESS = """async () => {
  const M = await import("/static/js/markdown.js");
  const md = M.createMarkdown();
  const out = document.getElementById("out");
  const fresh = () => {
    const div = document.createElement("div");
    out.replaceChildren(div);
    return div;
  };
  // As the DOM serializes it ("<br />" becomes "<br>"), to compare with a container's innerHTML.
  const normalize = (html) => {
    const div = document.createElement("div");
    div.innerHTML = html;
    return { html: div.innerHTML, text: div.textContent };
  };
  const fullOf = (src) => normalize(md.render(src));

  // Stream `chunks` (append + flushNow each); watch that committed nodes are never touched.
  const stream = (chunks, verify = true) => {
    const container = fresh();
    const renderer = new M.IncrementalRenderer(container, { md, schedule: () => {} });
    const committed = []; // [{node, html}]
    const violations = [];
    const observer = new MutationObserver(() => {});
    observer.observe(container, { subtree: true, childList: true, characterData: true, attributes: true });
    const check = (records) => {
      for (const record of records) {
        for (const { node } of committed) {
          if (node === record.target || node.contains(record.target)) {
            violations.push(`${record.type} in a committed block`);
          }
        }
        for (const removed of record.removedNodes) {
          if (committed.some((c) => c.node === removed)) violations.push("a committed block was removed");
        }
      }
    };
    const states = [];
    for (const chunk of chunks) {
      renderer.append(chunk);
      renderer.flushNow();
      check(observer.takeRecords());
      states.push(container.textContent);
      // the DOM, patched in place, is exactly what the renderer's HTML parses to
      if (verify && container.innerHTML !== normalize(renderer.html).html) {
        violations.push(`DOM != HTML after ${renderer.source.length} chars`);
      }
      const count = renderer.committedNodeCount;
      if (count < committed.length) violations.push("fewer committed nodes than before");
      committed.forEach((c, i) => {
        if (container.childNodes[i] !== c.node) violations.push(`committed node ${i} replaced`);
        else if ((c.node.outerHTML ?? c.node.data) !== c.html) violations.push(`committed node ${i} changed`);
      });
      for (let i = committed.length; i < count; i++) {
        const node = container.childNodes[i];
        committed.push({ node, html: node.outerHTML ?? node.data });
      }
    }
    observer.disconnect();
    const before = { html: container.innerHTML, text: container.textContent };
    renderer.finish();
    return {
      before,
      after: container.innerHTML,
      full: fullOf(renderer.source),
      states,
      violations,
      committedNodes: committed.length,
      committedHtml: committed.map((c) => c.html).join(""),
      stats: { ...renderer.stats },
    };
  };
  // Stream `chunks` into two renderers, with and without the plain-text fast path: after every flush
  // both must hold the same HTML and the same DOM.
  const twin = (chunks) => {
    const make = (fastPath) => {
      const container = fresh().appendChild(document.createElement("div"));
      return { container, renderer: new M.IncrementalRenderer(container, { md, schedule: () => {}, fastPath }) };
    };
    const fast = make(true);
    const slow = make(false);
    const mismatches = [];
    for (const chunk of chunks) {
      for (const { renderer } of [fast, slow]) {
        renderer.append(chunk);
        renderer.flushNow();
      }
      if (fast.renderer.html !== slow.renderer.html || fast.container.innerHTML !== slow.container.innerHTML) {
        mismatches.push({ source: fast.renderer.source, fast: fast.container.innerHTML, slow: slow.container.innerHTML });
      }
    }
    return { mismatches: mismatches.slice(0, 3), stats: fast.renderer.stats };
  };
  window.T = { M, md, stream, twin, fresh, normalize };
}"""

DOCUMENTS: dict[str, str] = {
    "headings": (
        "# H1\n\n## H2 with *emphasis*\n\n### H3 `code`\n\n#### H4\n\n##### H5\n\n###### H6\n\n"
        "####### not a heading\n\n#hashtag\n\n# Closed #\n"
    ),
    "setext and breaks": (
        "Title\n=====\n\nSubtitle\n--------\n\nline one  \nline two\\\nline three\nsoft break\n\n"
        "A paragraph\nover two lines\n===\n"
    ),
    "nested lists": (
        "- a\n- b\n  - b1\n  - b2\n    1. deep\n    2. deeper\n- c\n\n* other list\n+ third list\n\n"
        "- item with a paragraph\n\n  and a second one\n\n  > and a quote\n"
    ),
    "loose and tight lists": (
        "- tight 1\n- tight 2\n\n---\n\n- loose 1\n\n- loose 2\n\n  continued\n\nAfter.\n\n1. a\n\n2. b\n\n"
        "Para\n\n1. x\n2. y\n\n2\n\n- z\n"
    ),
    "ordered lists with start": "3. three\n4. four\n\n7) seven\n8) eight\n\n1. one\n1. one again\n\n010. ten\n",
    "code": (
        "```python\ndef f(x):\n\n    return x  # **not bold**\n```\n\n~~~ js extra words\nlet a = `b`;\n\n\n~~~\n\n"
        "````\n```\nnested\n```\n````\n\n    indented code\n\n    still code\n\nInline `co*de*` and `` `tick` ``.\n"
    ),
    "tables": (
        "| Left | Center | Right | None |\n|:-----|:------:|------:|------|\n"
        "| a | **b** | `c` | [d](/d) |\n| 1 | 2 | 3 |\n| x \\| y | ~~s~~ | *e* | |\n\n"
        "| single |\n|---|\n\nnot | a table\n"
    ),
    "strikethrough and emphasis": (
        "~~gone~~ ~single~ ~~~three~~~\n\n*a* _b_ **c** __d__ ***e*** ___f___\n\n"
        "foo*bar*baz foo_bar_baz snake_case_name 5 * 3 = 15\n\n"
        "*(*foo*)* **foo*bar** *foo**bar**baz* **a** b** c\n\n\\*not emphasis\\* \\_nor this\\_\n"
    ),
    "blockquotes": (
        "> quote\n> continued\nlazy\n\n> nested\n>> deeper\n>\n> - list in quote\n> - item\n\n"
        "> ```\n> code in quote\n> ```\n"
    ),
    "links": (
        '[site](https://example.com/a?b=c#d "Title") [rel](/artists/x) [anchor](#top) '
        "[mail](mailto:a@b.c) <https://example.com> <a@b.c> [up](../x) [HTTP](HTTP://EXAMPLE.COM)\n\n"
        "[js](javascript:alert(1)) [proto](//evil.example) [data](data:text/html,x) [vb](VBScript:x) "
        "[ent](&#x6A;avascript:x) [bs](/\\evil) [tab](<java\tscript:x>) [ftp](ftp://x.example)\n\n"
        "[ref link][r] [collapsed][] [r] [missing][nope]\n\n"
        '[r]: https://example.org "ref title"\n[collapsed]: /local\n'
    ),
    "images": (
        "![local](/static/logo.png) ![remote](https://evil.example/x.png) ![proto](//evil.example/a.png) "
        '![rel](images/b.png) ![with `code` and *em*](/x.png "t") ![js](javascript:x)\n\n'
        "[![cover](https://evil.example/c.png)](https://example.com) "
        '![a" onerror="alert(1)](/static/x.png)\n'
    ),
    "raw html": (
        '<script>alert(1)</script>\n\n<div style="color:red">block</div>\n\n'
        'Inline <b onclick="x">bold</b>, <img src=x onerror=alert(1)> and <!-- comment -->.\n\n'
        "<style>body{display:none}</style>\n"
    ),
    "entities": (
        "&copy; &amp; &lt;tag&gt; &#169; &#xA9; &nbsp;|&nbsp; &notanentity; &notit; &#0; AT&T "
        "&quot;q&quot; &Auml;\n\n`&copy;` in code\n"
    ),
    "portrait": (
        "# Björk\n\nBjörk Guðmundsdóttir — *Homogenic* 🎻, **Vespertine**, 『ユリイカ』.\n\n"
        "## Discography\n\n| Year | Album | Note |\n|---:|:---|:-:|\n| 1993 | *Debut* | first |\n"
        "| 1997 | **Homogenic** | strings |\n\n## Highlights\n\n1. **Voice**: wide range.\n"
        "2. *Instruments*:\n   - celesta\n   - music box\n3. Collaborations with [Mark Bell](https://example.com/mb).\n\n"
        "> I don't believe in nationalities.\n\n```text\nJóga\n\nBachelorette\n```\n\nThe end.\n"
    ),
    "blocks interrupting": (
        "Text right before a list:\n- item\n\nText before a fence:\n```\ncode\n```\n"
        "Text before a table:\n| a |\n|---|\n| b |\n\nParagraph\n***\nhr above\n\nLast line\n> quote\n"
    ),
    "hostile": "\n\n".join(
        [
            "# Portrait <img src=x onerror=alert(1)>",
            *RAW_HTML,
            *BAD_LINKS,
            "![x](https://evil.example/x.png) ![y](/ok.png)",
            "| a |\n|:-:|\n| <b onclick=x>b</b> |",
            "```html\n<script>alert(1)</script>\n```",
        ]
    )
    + "\n",
}
# Reference definitions are resolved at finish() only: before it these may show the source of a link.
HAS_REFERENCES = {"links", "hostile"}
EXTRA_PARITY = [
    *BAD_LINKS,
    *RAW_HTML,
    "",
    "[x](http://[::1]/a) <http://[::1]:80/b>",
    "[x](http://bücher.de/ä) <mailto:ä@bücher.de>",
    "![a `code` b](/x.png) ![a `code` b](http://x/y.png)",
    "[ẞ]\n\n[SS]: /u",
]


def serve(route: Route) -> None:
    path = urlparse(route.request.url).path
    if path == "/":
        route.fulfill(
            body=PAGE,
            content_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": "default-src 'self'; script-src 'self'"},
        )
        return
    file = (STATIC / path.removeprefix("/static/")).resolve()
    if path.startswith("/static/") and file.is_relative_to(STATIC) and file.is_file():
        route.fulfill(path=str(file), content_type="text/javascript; charset=utf-8")
    else:
        route.fulfill(status=404, body="not found")


@pytest.fixture(scope="module")
def md_page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.route(f"{ORIGIN}/**", serve)
    page.goto(f"{ORIGIN}/")
    page.evaluate(HARNESS)
    try:
        yield page
    finally:
        context.close()
    assert errors == []


def chunked(text: str, rng: random.Random, largest: int) -> list[str]:
    """Random-sized pieces. Python indexes code points, so a surrogate pair is never split."""
    chunks, i = [], 0
    while i < len(text):
        size = rng.randint(1, largest)
        chunks.append(text[i : i + size])
        i += size
    return chunks


def stream(page: Page, chunks: list[str], verify: bool = True) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate("([chunks, verify]) => T.stream(chunks, verify)", [chunks, verify])
    return result


def server_html(page: Page, document: str) -> str:
    """The server's HTML for `document`, as the browser's DOM serializes it."""
    html: str = page.evaluate("html => T.normalize(html).html", render_markdown(document))
    return html


# --- parity with the server ----------------------------------------------------------------------


def test_browser_renders_exactly_like_the_server(md_page: Page) -> None:
    documents = [*DOCUMENTS.values(), *EXTRA_PARITY]
    rendered = md_page.evaluate("docs => docs.map((d) => T.md.render(d))", documents)
    mismatches = [
        (doc, js, render_markdown(doc))
        for doc, js in zip(documents, rendered, strict=True)
        if js != render_markdown(doc)
    ]
    assert mismatches == []


def test_every_html5_entity_decodes_like_the_server(md_page: Page) -> None:
    import html.entities

    names = sorted(name.rstrip(";") for name in html.entities.html5)
    # complete names, and each followed by letters (the JS library would decode a legacy prefix)
    document = " ".join(f"&{name}; &{name}x;" for name in names)
    assert md_page.evaluate("d => T.md.render(d)", document) == render_markdown(document)


# --- incremental rendering -----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DOCUMENTS))
def test_streaming_in_random_chunks_ends_as_the_full_render(md_page: Page, name: str) -> None:
    document = DOCUMENTS[name]
    rng = random.Random(name)
    for largest in (3, 40):
        result = stream(md_page, chunked(document, rng, largest))
        assert result["violations"] == []
        assert result["after"] == result["full"]["html"] == server_html(md_page, document)
        if name not in HAS_REFERENCES:
            # before finish() already: the same text (and here, the same HTML)
            assert result["before"]["text"] == result["full"]["text"]
            assert result["before"]["html"] == result["full"]["html"]


def test_committed_blocks_are_never_touched(md_page: Page) -> None:
    document = "\n\n".join(DOCUMENTS[name] for name in ("portrait", "code", "nested lists", "tables"))
    result = stream(md_page, chunked(document, random.Random(7), 4))
    assert result["violations"] == []
    assert result["committedNodes"] > 30  # most of the document was committed along the way
    assert result["before"]["html"] == server_html(md_page, document)


# Pieces that make blocks interact: lazy lines, fences in list items and quotes, setext underlines,
# tables interrupting paragraphs, lists that may continue.
PIECES = [
    *["# Head *x*\n", "Para **bold** text\n", "more text\n", "\n", "\n\n", "- item\n", "- item **b**\n"],
    *["1. one\n", "2. two\n", "2\n", "  indented\n", "    code\n", "```js\n", "```\n", "~~~\n", "> quote\n"],
    *["lazy\n", "| a | b |\n", "|---|:-:|\n", "| c | d |\n", "***\n", "---\n", "===\n", "*em\n", "end*\n"],
    *["Text [link](/x) and ![i](/i.png)\n", "`code\n", "span`\n", "* star\n", "+ plus\n", "3) paren\n"],
    *["\t- tab item\n", "- ```\n", "  ```\n", "  code in item\n", "> ```\n", "> x\n", ">\n", "- \n", "-\n"],
    *["10. ten\n", "**multi\nline**\n", "<div>\n", "Foo\n---\n", "    ```\n", "````\n", "a | b\n- | -\n"],
    *["\\\n", "&amp;\n", "  - nested\n", "    - deeper\n"],
]


def test_random_documents_commit_only_what_is_final(md_page: Page) -> None:
    rng = random.Random(2024)
    for _ in range(150):
        document = "".join(rng.choices(PIECES, k=rng.randint(3, 25)))
        result = stream(md_page, chunked(document, rng, rng.choice([1, 3, 10, 50])))
        assert result["violations"] == [], document
        assert result["full"]["html"].startswith(result["committedHtml"]), document
        assert result["after"] == result["full"]["html"] == server_html(md_page, document), document


def test_a_list_is_not_committed_while_the_next_paragraph_could_join_it(md_page: Page) -> None:
    result = stream(md_page, ["1. a\n", "\n", "2", ". b\n", "\nAfter.\n"])
    assert result["violations"] == []
    assert result["before"]["html"] == server_html(md_page, "1. a\n\n2. b\n\nAfter.\n")
    result = stream(md_page, ["- a\n", "- b\n\n", "- c\n"])  # the list turns loose
    assert result["violations"] == []
    assert result["before"]["html"] == server_html(md_page, "- a\n- b\n\n- c\n")


def test_appends_in_one_frame_make_one_update(md_page: Page) -> None:
    flushes = md_page.evaluate(
        """async () => {
          const renderer = new T.M.IncrementalRenderer(T.fresh());
          for (const word of "one **two** three four five".split(" ")) renderer.append(word + " ");
          const before = renderer.stats.flushes;
          await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
          return [before, renderer.stats.flushes, document.querySelector("#out strong")?.textContent];
        }"""
    )
    assert flushes == [0, 1, "two"]


def test_finish_reset_and_appending_after_finish(md_page: Page) -> None:
    result = md_page.evaluate(
        """() => {
          const container = T.fresh();
          const renderer = new T.M.IncrementalRenderer(container, { schedule: () => {} });
          renderer.append("[a][r]\\n\\n[r]: /x\\n");
          renderer.flushNow();
          renderer.finish();
          const finished = container.innerHTML;
          renderer.append("\\nmore **text**\\n");
          renderer.flushNow();
          const resumed = container.innerHTML;
          renderer.reset();
          return [finished, resumed, container.innerHTML, renderer.source];
        }"""
    )
    assert result[0] == server_html(md_page, "[a][r]\n\n[r]: /x\n")
    assert result[1].endswith("<p>more <strong>text</strong></p>\n")
    assert result[2:] == ["", ""]


# Block and inline contexts that plain words may follow, and the words themselves (with the spaces,
# quotes, digits and punctuation that plain text may hold).
PLAIN_CONTEXTS = [
    *[
        "Para ",
        "- item ",
        "* star item ",
        "1. one ",
        "> quote ",
        "  lazy ",
        "\n",
        "\n\n",
        "text  \n",
        "hard\\\n",
    ],
    *[
        "**bold** ",
        "*em* ",
        "_u_",
        "__b__. ",
        "a_b ",
        "[link](/x) ",
        "`code` ",
        "&amp; ",
        "# Head ",
        "| a | b |\n",
    ],
    *["```\n", "```\n", "    code ", "- ", "10) ", "x ", "\t", "~~s~~ ", "*", "!", "<", "Foo\n---\n"],
]
PLAIN_WORDS = [
    "word ",
    "more words ",
    "and, then; ",
    "'quoted' ",
    '"double" ',
    "(aside) ",
    "1999 ",
    "  ",
    "x",
]


def test_the_plain_text_fast_path_renders_what_a_parse_renders(md_page: Page) -> None:
    rng = random.Random(99)
    plain_appends = 0
    for _ in range(120):
        parts = []
        for _ in range(rng.randint(4, 30)):
            parts.append(rng.choice(PLAIN_CONTEXTS) if rng.random() < 0.3 else rng.choice(PLAIN_WORDS))
        document = "".join(parts)
        result = md_page.evaluate("chunks => T.twin(chunks)", chunked(document, rng, rng.choice([1, 4, 12])))
        assert result["mismatches"] == [], document
        plain_appends += result["stats"]["plainAppends"]
    assert plain_appends > 500  # the fast path was taken, and often


def test_plain_words_in_a_paragraph_skip_the_parse(md_page: Page) -> None:
    words = ["The ", "portrait ", "opens ", "in ", "Lisbon, ", "1998: ", '"a ', 'city" ', "of ", "light. "]
    chunks = ["Intro\n\n", *words, "**Bold** ", *words, "\n\n- item ", *words]
    result = stream(md_page, chunks)
    assert result["violations"] == []
    assert result["before"]["html"] == result["after"] == server_html(md_page, "".join(chunks))
    # after the first word of each run, the rest are appended without a parse
    assert result["stats"]["plainAppends"] >= 3 * (len(words) - 2)


def test_finish_leaves_the_dom_alone_when_it_already_shows_the_full_render(md_page: Page) -> None:
    result = md_page.evaluate(
        """([source, last, withReference]) => {
          const finishing = (source, last) => {
            const container = T.fresh();
            const renderer = new T.M.IncrementalRenderer(container, { schedule: () => {} });
            for (const word of source.split(/(?<= )/)) {
              renderer.append(word);
              renderer.flushNow();
            }
            renderer.append(last);  // the last words, not flushed yet: as when `done` follows them
            const nodes = [...container.childNodes];
            const removed = [];
            const observer = new MutationObserver(() => {});
            observer.observe(container, { subtree: true, childList: true });
            renderer.finish();
            for (const record of observer.takeRecords()) removed.push(...record.removedNodes);
            observer.disconnect();
            const kept = nodes.filter((node) => node.parentNode === container).length;
            return { kept, before: nodes.length, removed: removed.length, html: container.innerHTML };
          };
          return [
            finishing(source, last),
            finishing(withReference, ""),
          ];
        }""",
        [
            DOCUMENTS["portrait"].rstrip("\n"),
            " and the last words.",
            "See [it][s].\n\n[s]: https://example.org\n",
        ],
    )
    complete, late_reference = result
    # the last words joined the last paragraph; not one node was replaced
    assert complete["removed"] == 0 and complete["kept"] == complete["before"] > 10
    assert complete["html"] == server_html(
        md_page, DOCUMENTS["portrait"].rstrip("\n") + " and the last words."
    )
    # a late reference definition changes earlier text: then the container is rewritten
    assert late_reference["removed"] > 0 and 'href="https://example.org"' in late_reference["html"]


def test_cost_is_linear_in_the_length(md_page: Page) -> None:
    rng = random.Random(20_000)
    words = "the portrait of an artist is written word by word with care and some *emphasis* too".split()
    parts: list[str] = []
    while sum(map(len, parts)) < 20_000:
        kind = rng.random()
        if kind < 0.1:
            parts.append(f"## Section {len(parts)}\n\n")
        elif kind < 0.2:
            parts.append("".join(f"- item {' '.join(rng.choices(words, k=6))}\n" for _ in range(4)) + "\n")
        else:
            parts.append(" ".join(rng.choices(words, k=rng.randint(30, 60))).capitalize() + ".\n\n")
    ratios = []
    for length in (10_000, 20_000):
        document = "".join(parts)[:length]
        chunks = [document[i : i + 5] for i in range(0, len(document), 5)]
        result = stream(md_page, chunks, verify=False)
        assert result["after"] == server_html(md_page, document)
        assert result["stats"]["flushes"] == len(chunks)
        ratios.append(result["stats"]["parsedChars"] / len(document))
    # Re-parsing everything on each flush would parse ~2,000x the 20,000 characters (and twice as many
    # times the document at twice the length); each flush parses the open block only (~25x here, with
    # paragraphs of 30 to 60 words), the same multiple whatever the length.
    assert ratios[1] < 30, ratios
    assert ratios[1] < 1.2 * ratios[0], ratios


# --- repairing the unfinished tail ---------------------------------------------------------------

REPAIRS = [
    ("**bold", "**bold**"),
    ("*it", "*it*"),
    ("__x", "__x__"),
    ("_x", "_x_"),
    ("~~x", "~~x~~"),
    ("`code", "`code`"),
    ("``co`de", "``co`de``"),
    ("text **", "text "),
    ("text `", "text "),
    ("**bold*", "**bold**"),
    ("**bold\n", "**bold**\n"),
    ("**bold ", "**bold** "),
    ("*a **b", "*a **b***"),
    ("**a `b", "**a `b`**"),
    ("a [link](http://exa", "a link"),
    ("a [link", "a link"),
    ("a [link]", "a link"),
    ("[**bold](ht", "**bold**"),
    ("a [x](/y) **b", "a [x](/y) **b**"),
    ("![alt](http://x", ""),
    ("x ![al", "x "),
    ("a &am", "a "),
    ("a <https://ex", "a "),
    ("trailing \\", "trailing "),
    ("```js\nconst a", "```js\nconst a\n```"),
    ("```js\nconst a\n", "```js\nconst a\n```"),
    ("~~~\ncode\n~~", "~~~\ncode\n~~~"),
    ("- ```\n  code", "- ```\n  code\n  ```"),
    ("> ```\n> x", "> ```\n> x\n> ```"),
    ("```\n**not closed", "```\n**not closed\n```"),
    ("# Title *x\nmore **y", "# Title *x\nmore **y**"),
    ("| **a | b", "| **a | b"),
    ("| a | **b", "| a | **b**"),
    ("**a**\n\nnew *para", "**a**\n\nnew *para*"),
    # complete text is left alone
    ("**a** *b* `c` [d](/e) ~~f~~ _g_\n", None),
    ("5 * 3 = 15 and a_b_c and 2*3*4x\n", None),
    ("```\nx\n```\n", None),
    ("[literal] brackets\n", None),
    ("", None),
]


def test_repair_tail(md_page: Page) -> None:
    sources = [source for source, _ in REPAIRS]
    repaired = md_page.evaluate("sources => sources.map(T.M.repairTail)", sources)
    expected = [source if want is None else want for source, want in REPAIRS]
    assert list(zip(sources, repaired, strict=True)) == list(zip(sources, expected, strict=True))


@pytest.mark.parametrize(
    ("document", "never"),
    [
        ("Some **bold text** and *italic* and `code` and ~~strike~~ and __strong__ _em_ end.\n", "*`~_"),
        ("See [the site](http://example.com/page) and [home](/) now.\n", "[]()"),
        ("Look ![alt text](https://x.example/a.png) here ![local](/a.png).\n", "[]()!"),
        ("```python\ndef f():\n    return 1\n```\n\nAfter the fence.\n", "`"),
        ("~~~\ncode\n~~~\n", "~"),
        ("**bold with [a link](/x) inside** and *more*.\n", "*[]()"),
        ("- **Item** one\n- *two* and `three`\n\n1. [x](/x)\n", "*`[]"),
        ("| **a** | b |\n|---|---|\n| `c` | [d](/d) |\n", "*`[]"),
        ("> A **quoted** [link](/q).\n", "*[]"),
    ],
)
def test_intermediate_states_never_show_raw_syntax(md_page: Page, document: str, never: str) -> None:
    result = stream(md_page, list(document))  # one character at a time
    assert result["after"] == server_html(md_page, document)
    for state in result["states"]:
        assert not any(character in state for character in never), state
