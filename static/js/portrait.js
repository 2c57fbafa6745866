// Upgrades the portrait area of an artist page (and the no-JavaScript job page) to the live stream:
// Generate streams the portrait as it is written, Stop leaves, Retry starts again, Regenerate (token)
// writes a new version. The page works without this script; everything here is an enhancement.

import { IncrementalRenderer } from "./markdown.js";
import { PortraitStream } from "./stream.js";
import { TableOfContents } from "./toc.js";

const TOKEN_KEY = "atelier.apiToken";
// Words as the server counts them (app/kit/text.py count_words, Python's `[^\W_]+`): runs of letters or
// digits. The page shows this one count, in the progress line and (at the end) in the status.
const WORDS = /[\p{L}\p{N}]+/gu;
const WORD_AT_END = /[\p{L}\p{N}]+$/u;
// How close to the end of the page (in CSS pixels) counts as "at the end", where the page follows the text.
const FOLLOW_SLACK_PX = 48;

/** A message a person can act on, for each error code of the stream. */
function describeError(code, retryAfter) {
  const when = retryAfter ? ` You can try again in ${formatSeconds(retryAfter)}.` : "";
  switch (code) {
    case "rate_limited":
      return `You have asked for many new portraits in a short time.${when || " Please wait a little."}`;
    case "upstream_unavailable":
      return `The writing service is failing, so new portraits are paused.${when}`;
    case "upstream_rate_limited":
      return `The writing service is busy right now.${when}`;
    case "upstream_auth":
      return "The writing service refused Atelier's credentials: the service is misconfigured. Please tell its administrator.";
    case "upstream_timeout":
      return "The writing service took too long to answer. Try again in a moment.";
    case "upstream_connection":
    case "connection_lost":
      return "The connection to the writing service was lost before the portrait was finished.";
    case "upstream_bad_response":
      return "The writing service sent something Atelier could not use.";
    case "cancelled":
      return "The portrait was cancelled before it was finished.";
    case "unauthorized":
      return "That API token was refused.";
    default:
      return "Something went wrong while writing the portrait.";
  }
}

/** A count as the server writes it ("3,000"), whatever the browser's locale. */
function formatCount(n) {
  return Number(n).toLocaleString("en");
}

function formatSeconds(seconds) {
  const s = Math.max(1, Math.round(seconds));
  return s < 90 ? `${s} second${s === 1 ? "" : "s"}` : `${Math.round(s / 60)} minutes`;
}

class PortraitPanel {
  /** @param {HTMLElement} root the `#portrait` section */
  constructor(root) {
    this.root = root;
    this.form = root.querySelector(".portrait-form");
    this.body = root.querySelector(".portrait-body");
    this.status = root.querySelector(".portrait-status");
    this.live = root.querySelector(".portrait-live");
    this.meta = root.querySelector(".portrait-live .portrait-meta");
    this.progress = root.querySelector(".portrait-progress");
    this.toc = new TableOfContents(root.querySelector(".portrait-toc"), this.body);
    this.buttons = {
      generate: root.querySelector(".generate-button"),
      regenerate: root.querySelector(".regenerate-button"),
      stop: root.querySelector(".stop-button"),
      retry: root.querySelector(".retry-button"),
      show: root.querySelector(".show-button"),
    };
    this.stream = null;
    this.streamId = "";
    this.renderer = null;
    this.wordCount = 0;
    this.lastRequest = null;
    this.sectionLine = "";
  }

  install() {
    this.form.addEventListener("submit", (event) => {
      if (event.submitter === this.buttons.show) return; // a plain navigation to another version
      event.preventDefault();
      this.start({ refresh: false });
    });
    this.buttons.stop.addEventListener("click", () => this.stopReading());
    this.buttons.retry.addEventListener("click", () => this.start(this.lastRequest ?? { refresh: false }));
    this.buttons.regenerate.hidden = this.root.dataset.stored !== "1";
    this.buttons.regenerate.addEventListener("click", () => this.regenerate());
    this.toc.adopt(); // a stored planned portrait's contents, rendered by the server
    const jobStream = this.root.closest("[data-job-stream]")?.dataset.jobStream;
    if (jobStream) {
      // the script shows the progress from here on; the server's count (as of the page's load) goes
      this.root.closest("[data-job-stream]").querySelector(".job-progress")?.setAttribute("hidden", "");
      this.follow(jobStream); // the job page: follow the job live instead of refreshing
    } else if (this.root.dataset.runningJob && this.root.dataset.stored !== "1") {
      this.start({ refresh: false }); // someone is writing it right now: join them
    }
  }

  streamUrl({ refresh }) {
    const params = new URLSearchParams(new FormData(this.form));
    if (refresh) params.set("refresh", "true");
    const base = this.root.dataset.streamUrl.split("?")[0];
    return `${base}?${params}`;
  }

  start(request) {
    this.lastRequest = request;
    const headers = {};
    if (request.refresh) headers.Authorization = `Bearer ${sessionStorage.getItem(TOKEN_KEY)}`;
    this.follow(this.streamUrl(request), headers);
  }

  regenerate() {
    let token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) {
      token = window.prompt("Regenerating a stored portrait needs an API token. Token:") ?? "";
      if (!token.trim()) return;
      sessionStorage.setItem(TOKEN_KEY, token.trim()); // kept for this tab only, sent as a header only
    }
    this.start({ refresh: true });
  }

  follow(url, headers = {}) {
    this.stream?.stop();
    // A new read starts at the stream's first event, even when it rejoins the job just left (Stop, then
    // Generate within the grace): its metadata must start the text afresh. Reconnections after a dropped
    // connection happen inside PortraitStream, from the last event id, and never come through here.
    this.streamId = "";
    this.setBusy(true);
    this.say("Connecting…");
    this.stream = new PortraitStream(
      url,
      {
        onEvent: (data, id) => this.onEvent(data, id),
        onReconnecting: () => this.say("Connection lost; reconnecting where we left off…"),
        onFailure: (failure) => {
          if (failure.code === "unauthorized") sessionStorage.removeItem(TOKEN_KEY);
          this.showError(failure.code, null, failure.message);
        },
      },
      { headers },
    );
    this.stream.run();
  }

  onEvent(data, id) {
    const streamId = id.slice(0, id.lastIndexOf(":"));
    switch (data.type) {
      case "metadata":
        return this.onMetadata(data, streamId);
      case "text":
        this.renderer.append(data.delta);
        this.countWords(data.delta);
        return;
      case "outline":
        this.toc.show(data.sections ?? []);
        return;
      case "section":
        return this.onSection(data);
      case "continued":
        // a seam: the text goes on as one; only the status says so, briefly
        this.say(`${this.sectionLine || "Writing the portrait"} (continuing…)`);
        return;
      case "done":
        return this.onDone(data);
      case "error":
        return this.showError(data.code, data.retry_after);
    }
  }

  onMetadata(data, streamId) {
    if (streamId !== this.streamId || !this.renderer) {
      // a new stream (not a resumed one): start the text afresh
      this.streamId = streamId;
      this.body.replaceChildren();
      this.renderer = new IncrementalRenderer(this.body, { schedule: (flush) => this.scheduleFlush(flush) });
      this.wordCount = 0;
      this.wordTail = "";
      this.sectionLine = "";
      this.toc.clear();
    }
    this.live.hidden = false;
    this.progress.max = data.target_words;
    this.progress.value = 0;
    const who = data.writer === "demo" ? "the demo writer (not a language model)" : data.model;
    const source = data.cached ? "Stored portrait" : "Writing now";
    this.metaText = `${source} · ${who} · ${data.language} · ${data.length}`;
    this.targetText = formatCount(data.target_words);
    this.cached = data.cached;
    this.progress.hidden = false;
    this.drawProgress();
    this.say(data.cached ? "Loading the stored portrait…" : "Writing the portrait…");
  }

  onSection(data) {
    this.renderer.flushNow(); // the headings so far belong to the sections before this one
    this.toc.start(data.index);
    const count = this.toc.entries.length;
    const of = count ? ` of ${count}` : "";
    this.sectionLine = `Writing section ${data.index + 1}${of}: ${data.title}`;
    if (!this.cached) this.say(`${this.sectionLine}…`); // announced politely, once a section
  }

  /**
   * One DOM update per animation frame; a reader who is at the end of the page stays there as the
   * portrait grows, and one who scrolled anywhere else is left alone.
   */
  scheduleFlush(flush) {
    requestAnimationFrame(() => {
      const page = document.scrollingElement;
      const following = page.scrollHeight - page.clientHeight - page.scrollTop <= FOLLOW_SLACK_PX;
      flush();
      this.toc.link();
      if (following && page.scrollHeight - page.clientHeight > page.scrollTop) {
        page.scrollTop = page.scrollHeight;
      }
    });
  }

  countWords(delta) {
    // Count whole words only: the last run may continue in the next delta.
    const text = this.wordTail + delta;
    const match = text.match(WORD_AT_END);
    this.wordTail = match ? match[0] : "";
    const complete = match ? text.slice(0, match.index) : text;
    this.wordCount += (complete.match(WORDS) ?? []).length;
    if (!this.progressScheduled) {
      // at most one progress update per frame, however fast the text comes
      this.progressScheduled = true;
      requestAnimationFrame(() => {
        this.progressScheduled = false;
        this.drawProgress();
      });
    }
  }

  /** The one place the word count is shown while writing: the bar and its line. */
  drawProgress(finished = false) {
    this.progress.value = Math.min(this.wordCount, this.progress.max);
    const words = formatCount(this.wordCount);
    const count = finished ? `${words} words` : `${words} of about ${this.targetText} words`;
    this.meta.textContent = `${this.metaText} · ${count}`;
  }

  onDone(data) {
    this.renderer.finish();
    this.toc.finish();
    this.wordCount = data.words; // the server's count of the whole text (the live one leaves out a last, unfinished word)
    this.metaText = this.metaText.replace("Writing now", "Written");
    this.drawProgress(true);
    const seconds = (data.duration_ms / 1000).toFixed(1);
    let message = `Done: ${formatCount(data.words)} words in ${seconds} s.`;
    if (data.truncated) message += " The writer's length limit cut it short.";
    this.say(message);
    this.setBusy(false);
    this.root.dataset.stored = "1";
    if (this.buttons.generate) this.buttons.generate.hidden = true;
    this.buttons.regenerate.hidden = false;
    const artistUrl = this.root.closest("[data-artist-url]")?.dataset.artistUrl;
    if (artistUrl) history.replaceState(null, "", artistUrl);
  }

  showError(code, retryAfter, fallback) {
    this.renderer?.finish();
    this.toc.link();
    const message = code === "http_error" && fallback ? fallback : describeError(code, retryAfter);
    this.progress.hidden = true;
    if (this.metaText) this.meta.textContent = `${this.metaText.replace("Writing now", "Not finished")}`;
    this.say(message);
    this.setBusy(false);
    this.buttons.retry.hidden = false;
    this.buttons.retry.focus();
  }

  stopReading() {
    this.stream?.stop();
    this.renderer?.finish();
    this.toc.link();
    this.setBusy(false);
    this.say("Stopped. What was written so far stays here; Generate starts again.");
  }

  setBusy(busy) {
    this.root.setAttribute("aria-busy", busy ? "true" : "false");
    this.buttons.stop.hidden = !busy;
    this.buttons.retry.hidden = true;
    this.form.hidden = false;
    for (const button of [this.buttons.generate, this.buttons.regenerate, this.buttons.show]) {
      if (button) button.disabled = busy;
    }
  }

  say(message) {
    this.status.textContent = message;
  }
}

const root = document.getElementById("portrait");
if (root) new PortraitPanel(root).install();
