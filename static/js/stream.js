// A portrait stream read with fetch (EventSource cannot send the Authorization a refresh needs) and
// parsed by eventsource-parser (the WHATWG rules). A dropped connection resumes from the last event id,
// and an event already seen is never delivered twice, so nothing is repeated or missing.

import { createParser } from "../vendor/eventsource-parser-3.1.1.js";

const MAX_RECONNECTS = 8;

/**
 * @typedef {{type: string, [key: string]: any}} StreamData
 * @typedef {{
 *   onEvent: (data: StreamData, id: string) => void,
 *   onReconnecting?: (attempt: number) => void,
 *   onFailure?: (failure: {code: string, message: string, status?: number}) => void,
 * }} Handlers
 */

export class PortraitStream {
  /**
   * @param {string} url the stream route (artist or job)
   * @param {Handlers} handlers
   * @param {{headers?: Record<string, string>}} [options]
   */
  constructor(url, handlers, { headers = {} } = {}) {
    this.url = url;
    this.handlers = handlers;
    this.headers = headers;
    this.lastEventId = "";
    this.retryMs = 2000;
    this.finished = false;
    this.controller = null;
    /** @type {Map<string, number>} the highest seq seen per stream id */
    this.seen = new Map();
  }

  /** Read until `done` or `error`, reconnecting (with Last-Event-ID) when the connection drops. */
  async run() {
    for (let attempt = 0; !this.finished; attempt++) {
      if (attempt > 0) {
        if (attempt > MAX_RECONNECTS) {
          this.#fail({ code: "connection_lost", message: "The connection was lost." });
          return;
        }
        this.handlers.onReconnecting?.(attempt);
        await sleep(Math.min(this.retryMs * attempt, 10_000));
        if (this.finished) return;
      }
      try {
        const progressed = await this.#readOnce();
        if (progressed) attempt = 0;
      } catch (error) {
        if (this.finished) return; // stopped by the reader
        // a network error: go round again and resume
      }
    }
  }

  /** Stop reading: the server notices the closed connection (and cancels the job after its grace). */
  stop() {
    this.finished = true;
    this.controller?.abort();
  }

  async #readOnce() {
    this.controller = new AbortController();
    const headers = { Accept: "text/event-stream", ...this.headers };
    if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
    const response = await fetch(this.url, { headers, signal: this.controller.signal, cache: "no-store" });
    if (response.status === 204) {
      this.finished = true; // nothing after our last event: the stream is over
      return true;
    }
    if (!response.ok) {
      let body = {};
      try {
        body = await response.json();
      } catch {}
      this.#fail({
        code: body?.error?.code ?? "http_error",
        message: body?.error?.message ?? `The server answered ${response.status}.`,
        status: response.status,
      });
      return false;
    }
    let progressed = false;
    const parser = createParser({
      onRetry: (ms) => {
        this.retryMs = ms;
      },
      onEvent: (event) => {
        if (this.#deliver(event)) progressed = true;
      },
    });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      while (!this.finished) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.feed(value);
      }
    } finally {
      reader.releaseLock();
    }
    if (this.finished) this.controller.abort();
    return progressed;
  }

  #deliver(event) {
    const [stream, seqText] = splitId(event.id ?? "");
    const seq = Number(seqText);
    if (stream && this.seen.has(stream) && seq <= this.seen.get(stream)) return false; // already shown
    if (stream) this.seen.set(stream, seq);
    if (event.id) this.lastEventId = event.id;
    /** @type {StreamData} */
    const data = JSON.parse(event.data);
    if (data.type === "done" || data.type === "error") this.finished = true;
    this.handlers.onEvent(data, event.id ?? "");
    return true;
  }

  #fail(failure) {
    this.finished = true;
    this.handlers.onFailure?.(failure);
  }
}

function splitId(id) {
  const at = id.lastIndexOf(":");
  return at < 0 ? ["", ""] : [id.slice(0, at), id.slice(at + 1)];
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
