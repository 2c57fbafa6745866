"""Browser rendering benchmark: static/js/markdown.js's IncrementalRenderer against a naive renderer.

    .venv/bin/python bench/render.py                    # about 110 s: 3 x 33 s of real-time streaming
    .venv/bin/python bench/render.py --chars 5000       # a shorter smoke run
    .venv/bin/python bench/render.py --modes idle,incremental,incremental-every-2nd-frame,naive

In headless Chromium (Debian's, /usr/bin/chromium), the same ~20,000-character markdown portrait is
streamed into a page at 100 tokens/s (a token is a word with the whitespace after it), in real time: a
`setInterval` in the page delivers the tokens that are due, one `append` (or one naive re-render) per token.
The renderers run one after the other in the same run, each on a fresh page (after a warm-up that compiles
both code paths):

- `idle`: the same page, timer and frame recorder, rendering nothing: what the harness itself costs;
- `incremental`: `IncrementalRenderer.append(token)`; the DOM is updated once per animation frame;
  `finish()` at the end;
- `incremental-every-2nd-frame` (not run by default): the same, flushing on every second frame;
- `naive`: `container.innerHTML = md.render(sourceSoFar)` on every token (same markdown-it instance).

Measured, from the first token to two frames after the last one (and finish()):

- main-thread time from the Chrome DevTools Protocol (`Performance.getMetrics`, deltas): ScriptDuration
  (JavaScript, including the DOM calls it makes, e.g. parsing an innerHTML string), RecalcStyleDuration,
  LayoutDuration and TaskDuration (all main-thread work);
- the page's own measure of its callbacks (timer ticks and animation-frame flushes), as a cross-check;
- frames: the main-thread tasks in a Chrome trace (the scheduler's RunTask events: a frame cannot be
  produced while a task runs, so no task over 16 ms means rendering never held a frame up past 16 ms),
  and the intervals between `requestAnimationFrame` callbacks (~16.7 ms at 60 Hz; longer = dropped
  frames).

Results: a markdown table on stdout, and JSON + markdown in bench/results/ (git-ignored). Only Playwright
(a dev dependency) and the standard library; the page is served by Playwright's router from the
repository's static/ folder, no Atelier server is needed.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser.support import CHROMIUM, CHROMIUM_ARGS  # noqa: E402  (after the path is set)

STATIC = ROOT / "static"
RESULTS = Path(__file__).resolve().parent / "results"
ORIGIN = "http://atelier.test"
PAGE = """<!doctype html>
<html lang="en"><meta charset="utf-8"><title>render bench</title>
<link rel="stylesheet" href="/static/atelier.css">
<script src="/static/vendor/markdown-it-14.1.0.min.js"></script>
<body><main><div id="out" class="portrait-body markdown-body"></div></main></body></html>
"""
# Only the scheduler's task events: cheap to record, unlike the DevTools timeline categories, which would
# slow down every DOM call being measured.
TRACE_CATEGORIES = ["toplevel", "blink.user_timing"]
TASK_EVENTS = {"ThreadControllerImpl::RunTask", "RunTask"}

# Runs in the page, after WARM_UP. Delivers `tokens` at `rate` per second from a 10 ms interval (every token that is due,
# one call each), records animation-frame timestamps, and times its own callbacks.
WARM_UP = """async (sample) => {
  const { createMarkdown, IncrementalRenderer } = await import("/static/js/markdown.js");
  const md = createMarkdown();
  // Compile and optimize both code paths before measuring (a page would have done so by the second
  // portrait), then start from an empty container.
  const scratch = document.createElement("div");
  for (let i = 0; i < 5; i++) {
    scratch.innerHTML = md.render(sample);
    const renderer = new IncrementalRenderer(scratch, { md, schedule: () => {} });
    for (let j = 0; j < sample.length; j += 7) {
      renderer.append(sample.slice(j, j + 7));
      renderer.flushNow();
    }
    renderer.finish();
  }
  window.bench = { md, IncrementalRenderer };
}"""

DRIVER = """async ({ tokens, mode, rate }) => {
  const { md, IncrementalRenderer } = window.bench;
  const container = document.getElementById("out");
  const nextFrame = () => new Promise((resolve) => requestAnimationFrame(resolve));
  await nextFrame();
  await nextFrame();

  let callbacks = 0; // ms spent in this driver's callbacks (delivery + flushes)
  let longestCallback = 0;
  const timed = (fn) => {
    const start = performance.now();
    fn();
    const spent = performance.now() - start;
    callbacks += spent;
    longestCallback = Math.max(longestCallback, spent);
  };
  let renderer = null;
  let source = "";
  let deliver;
  if (mode.startsWith("incremental")) {
    // "incremental-every-2nd-frame": the same renderer, flushing on every second animation frame
    const frame = (cb) => requestAnimationFrame(() => timed(cb));
    const schedule = mode === "incremental" ? frame : (cb) => requestAnimationFrame(() => frame(cb));
    renderer = new IncrementalRenderer(container, { md, schedule });
    deliver = (token) => renderer.append(token);
  } else if (mode === "idle") {
    container.replaceChildren();
    deliver = (token) => {
      source += token;
    };
  } else {
    container.replaceChildren();
    deliver = (token) => {
      source += token;
      container.innerHTML = md.render(source);
    };
  }

  const frames = [];
  let framesOn = true;
  const frame = (t) => {
    frames.push(t);
    if (framesOn) requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);

  performance.mark("render-bench:start");
  const started = performance.now();
  await new Promise((resolve) => {
    let next = 0;
    const timer = setInterval(() => {
      timed(() => {
        const due = Math.min(tokens.length, Math.floor(((performance.now() - started) * rate) / 1000) + 1);
        while (next < due) deliver(tokens[next++]);
      });
      if (next >= tokens.length) {
        clearInterval(timer);
        resolve();
      }
    }, 1000 / rate);
  });
  const streamed = performance.now() - started;
  const streamedFrames = frames.length;
  performance.mark("render-bench:streamed");
  let finishMs = 0;
  if (renderer) {
    const start = performance.now();
    renderer.finish();
    finishMs = performance.now() - start;
  }
  await nextFrame();
  await nextFrame();
  framesOn = false;
  performance.mark("render-bench:end");

  const intervals = frames.slice(1).map((t, i) => t - frames[i]);
  return {
    streamedIntervals: streamedFrames - 1,
    streamedMs: streamed,
    finishMs,
    callbacksMs: callbacks,
    longestCallbackMs: longestCallback,
    frameIntervals: intervals,
    html: container.innerHTML,
    stats: renderer ? { ...renderer.stats } : null,
  };
}"""

WORDS = (
    "light colour canvas gesture studio gallery portrait landscape memory silence rhythm texture surface "
    "line shadow figure composition palette brush pigment stroke movement horizon window city river "
    "garden archive letter exhibition critic collector museum century season voice music poem body "
    "paper ink charcoal bronze marble glass thread wool clay oil watercolour fresco print series"
).split()
GLUE = "the of and in with from into a an its their by for on at as that which while through".split()
NAMES = ["Lisbon", "Paris", "Kyoto", "Oaxaca", "Bergen", "Dakar", "Montréal", "Trieste", "Rotterdam"]
TITLES = ["Blue Hour", "Salt and Stone", "Nocturne", "The Long Table", "Threshold", "Field Notes"]


def sentence(rng: random.Random) -> str:
    words = []
    for i in range(rng.randint(9, 22)):
        word = rng.choice(WORDS) if i % 2 else rng.choice(GLUE)
        roll = rng.random()
        if roll < 0.03:
            word = f"**{word}**"
        elif roll < 0.06:
            word = f"*{word}*"
        elif roll < 0.075:
            word = f"[{word}](https://example.com/{word})"
        elif roll < 0.085:
            word = f"`{word}`"
        elif roll < 0.1:
            word = rng.choice(NAMES)
        words.append(word)
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice([".", ".", ".", ";", ", in " + rng.choice(NAMES) + "."])


def paragraph(rng: random.Random) -> str:
    return " ".join(sentence(rng) for _ in range(rng.randint(3, 6)))


def portrait(chars: int, seed: int = 2024) -> str:
    """A realistic model-written portrait: headings, paragraphs, lists, a code fence, a table, a quote."""
    rng = random.Random(seed)
    blocks = ["# Ana Duarte\n", paragraph(rng) + "\n", paragraph(rng) + "\n"]
    sections = ["Early years", "Studio practice", "Major works", "Materials", "Reception", "Legacy"]
    for n in range(10_000):
        blocks.append(f"## {sections[n % len(sections)]}{'' if n < len(sections) else f' ({n // 6 + 1})'}\n")
        blocks.append(paragraph(rng) + "\n")
        kind = n % 4
        if kind == 0:
            items = [f"- {sentence(rng)}" for _ in range(rng.randint(4, 7))]
            items.insert(2, f"  - {sentence(rng)}\n  - {sentence(rng)}")
            blocks.append("\n".join(items) + "\n")
        elif kind == 1:
            rows = [
                f"| {1990 + i * 3} | *{rng.choice(TITLES)}* | {rng.choice(WORDS)} on {rng.choice(WORDS)} |"
                for i in range(6)
            ]
            blocks.append("| Year | Title | Medium |\n|---:|:---|:---:|\n" + "\n".join(rows) + "\n")
        elif kind == 2:
            blocks.append(
                "```text\n" + "\n".join(sentence(rng) for _ in range(3)) + "\n\n" + sentence(rng) + "\n```\n"
            )
        else:
            blocks.append(f"> {sentence(rng)}\n> {sentence(rng)}\n")
            blocks.append("\n".join(f"{i}. {sentence(rng)}" for i in range(1, 5)) + "\n")
        blocks.append(paragraph(rng) + "\n")
        if sum(len(b) + 1 for b in blocks) >= chars:
            break
    text = "\n".join(blocks)
    # stop at the last block boundary at or before `chars`, so the document is complete
    cut = text.rfind("\n\n", 0, chars + 1)
    return text[: cut + 1] if cut > 0 else text


def tokenize(text: str) -> list[str]:
    """Words with the whitespace after them (leading whitespace goes with the first word)."""
    tokens = re.findall(r"\S+\s*", text)
    lead = text[: len(text) - len(text.lstrip())]
    if tokens:
        tokens[0] = lead + tokens[0]
    assert "".join(tokens) == text
    return tokens


def serve(route: Any) -> None:
    path = urlparse(route.request.url).path
    if path == "/":
        route.fulfill(body=PAGE, content_type="text/html; charset=utf-8")
        return
    file = (STATIC / path.removeprefix("/static/")).resolve()
    if path.startswith("/static/") and file.is_relative_to(STATIC) and file.is_file():
        types = {".js": "text/javascript", ".css": "text/css"}
        route.fulfill(path=str(file), content_type=types.get(file.suffix, "application/octet-stream"))
    else:
        route.fulfill(status=404, body="not found")


def main_thread_tasks(trace: Any) -> tuple[list[float], list[float]]:
    """Durations (ms) of the tasks on the page's renderer main thread (the scheduler's RunTask events):
    while the tokens streamed, and from then until two frames after finish()."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    marks = {e["name"]: e for e in events if e.get("name", "").startswith("render-bench:")}
    thread = (marks["render-bench:start"]["pid"], marks["render-bench:start"]["tid"])
    start, streamed, end = (marks[f"render-bench:{name}"]["ts"] for name in ("start", "streamed", "end"))
    streaming: list[float] = []
    after: list[float] = []
    for e in events:
        if (e.get("pid"), e.get("tid")) != thread or e.get("ph") != "X" or e.get("name") not in TASK_EVENTS:
            continue
        if start <= e["ts"] < streamed:
            streaming.append(e.get("dur", 0) / 1000)
        elif streamed <= e["ts"] < end:
            after.append(e.get("dur", 0) / 1000)
    return streaming, after


def run(browser: Any, mode: str, tokens: list[str], rate: float) -> dict[str, Any]:
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    page.route(f"{ORIGIN}/**", serve)
    page.goto(f"{ORIGIN}/")
    cdp = context.new_cdp_session(page)
    cdp.send("Performance.enable")

    def metrics() -> dict[str, float]:
        return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}

    page.evaluate(WARM_UP, portrait(3_000, seed=1))
    browser.start_tracing(page=page, categories=TRACE_CATEGORIES)
    before = metrics()
    result: dict[str, Any] = page.evaluate(DRIVER, {"tokens": tokens, "mode": mode, "rate": rate})
    after = metrics()
    trace = json.loads(browser.stop_tracing())
    context.close()

    delta = {
        name: (after[name] - before[name]) * 1000
        for name in ("ScriptDuration", "RecalcStyleDuration", "LayoutDuration", "TaskDuration")
    }
    intervals = result.pop("frameIntervals")
    streaming = intervals[: result.pop("streamedIntervals")]
    tasks, tasks_at_end = main_thread_tasks(trace)
    return {
        "mode": mode,
        "script_ms": delta["ScriptDuration"],
        "style_ms": delta["RecalcStyleDuration"],
        "layout_ms": delta["LayoutDuration"],
        "task_ms": delta["TaskDuration"],
        "tasks": len(tasks),
        "longest_task_ms": max(tasks),
        "tasks_over_16ms": sum(1 for t in tasks if t > 16),
        "longest_task_at_end_ms": max(tasks_at_end),
        "frames": len(streaming),
        "frame_p50_ms": statistics.median(streaming),
        "frame_max_ms": max(streaming),
        "frames_over_20ms": sum(1 for i in streaming if i > 20),
        "frame_max_at_end_ms": max(intervals[len(streaming) :]),
        **result,
    }


def table(rows: list[dict[str, Any]], doc_chars: int, tokens: int, rate: float) -> str:
    by_mode = {r["mode"]: r for r in rows}
    idle = by_mode.get("idle")
    naive = by_mode.get("naive")

    def net(r: dict[str, Any]) -> float:
        return float(r["script_ms"] - (idle["script_ms"] if idle else 0))

    lines = [
        f"{doc_chars:,} characters, {tokens:,} tokens at {rate:g} tokens/s (real time), headless Chromium.",
        "Main-thread time while streaming and finishing (CDP Performance.getMetrics deltas); `idle` runs the",
        "same page, timer and frame recorder but renders nothing: the harness's own cost.",
        "",
        "| renderer | scripting | vs naive | scripting − idle | vs naive (− idle) | style + layout | all tasks "
        "| longest task streaming | tasks > 16 ms | longest task at finish | rAF interval p50 / max "
        "| intervals > 20 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        raw = f"{100 * r['script_ms'] / naive['script_ms']:.1f} %" if naive else ""
        versus = f"{100 * net(r) / net(naive):.1f} %" if naive and r is not idle else ""
        lines.append(
            f"| {r['mode']} | {r['script_ms']:,.0f} ms | {raw} | {net(r) if r is not idle else 0:,.0f} ms | {versus} "
            f"| {r['style_ms'] + r['layout_ms']:,.0f} ms | {r['task_ms']:,.0f} ms "
            f"| {r['longest_task_ms']:.1f} ms | {r['tasks_over_16ms']} of {r['tasks']:,} "
            f"| {r['longest_task_at_end_ms']:.1f} ms "
            f"| {r['frame_p50_ms']:.1f} / {r['frame_max_ms']:.1f} ms | {r['frames_over_20ms']} of {r['frames']} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chars", type=int, default=20_000, help="portrait length (default 20,000)")
    parser.add_argument("--rate", type=float, default=100, help="tokens per second (default 100)")
    parser.add_argument("--modes", default="idle,incremental,naive")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    document = portrait(args.chars)
    tokens = tokenize(document)
    print(
        f"portrait: {len(document):,} chars, {len(tokens):,} tokens, ~{len(tokens) / args.rate:.0f} s per renderer",
        file=sys.stderr,
    )
    rows = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        print(f"chromium {browser.version}", file=sys.stderr)
        try:
            for mode in args.modes.split(","):
                print(f"streaming into {mode}...", file=sys.stderr)
                rows.append(run(browser, mode, tokens, args.rate))
        finally:
            browser.close()

    htmls = {r.pop("html") for r in rows if r["mode"] != "idle"}
    report = table(rows, len(document), len(tokens), args.rate)
    print(report)
    if len(htmls) != 1:
        print("\nWARNING: the renderers ended with different HTML", file=sys.stderr)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"render-{stamp}.md").write_text(report + "\n")
    (RESULTS / f"render-{stamp}.json").write_text(
        json.dumps({"chars": len(document), "tokens": len(tokens), "rate": args.rate, "rows": rows}, indent=2)
    )
    return 0 if len(htmls) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
