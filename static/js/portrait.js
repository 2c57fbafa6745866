// Upgrades the portrait area of an artist page (and the no-JavaScript job page) to the live stream:
// Generate streams the portrait as it is written, Stop leaves, Retry starts again, Regenerate (token)
// writes a new version. The page works without this script; everything here is an enhancement.

import { IncrementalRenderer } from "./markdown.js";
import { PortraitStream } from "./stream.js";

const TOKEN_KEY = "atelier.apiToken";
const WORDS = /[\p{L}\p{N}]+/gu;
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
    const jobStream = this.root.closest("[data-job-stream]")?.dataset.jobStream;
    if (jobStream) {
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
    }
    this.live.hidden = false;
    this.progress.max = data.target_words;
    this.progress.value = 0;
    const who = data.writer === "demo" ? "the demo writer (not a language model)" : data.model;
    const source = data.cached ? "Stored portrait" : "Writing now";
    this.metaText = `${source} · ${who} · ${data.language} · ${data.length}`;
    this.progress.hidden = false;
    this.drawProgress();
    this.say(data.cached ? "Loading the stored portrait…" : "Writing the portrait…");
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
      if (following && page.scrollHeight - page.clientHeight > page.scrollTop) {
        page.scrollTop = page.scrollHeight;
      }
    });
  }

  countWords(delta) {
    // Count whole words only: the last run may continue in the next delta.
    const text = this.wordTail + delta;
    const match = text.match(/[\p{L}\p{N}]+$/u);
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
    const now = performance.now();
    if (!this.lastStatusAt || now - this.lastStatusAt > 3000) {
      // announced politely, and not on every delta
      this.lastStatusAt = now;
      this.say(`Writing… ${this.wordCount.toLocaleString()} of about ${Number(this.progress.max).toLocaleString()} words.`);
    }
  }

  drawProgress() {
    this.progress.value = Math.min(this.wordCount, this.progress.max);
    this.meta.textContent = `${this.metaText} · ${this.wordCount.toLocaleString()} words`;
  }

  onDone(data) {
    this.renderer.finish();
    this.wordCount = data.words;
    this.metaText = this.metaText.replace("Writing now", "Written");
    this.drawProgress();
    this.progress.hidden = true;
    const seconds = (data.duration_ms / 1000).toFixed(1);
    let message = `Done: ${data.words.toLocaleString()} words in ${seconds} s.`;
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
