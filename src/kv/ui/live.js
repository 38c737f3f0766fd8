// The watch of the prefix the page shows, kept open: on `ready` the page lists again (the
// CONTRACT's mirroring recipe), then applies each `put` and `delete`. When the stream is lost
// (`overflow`, `unavailable`, a dropped connection, no heartbeat) it says so and reconnects.

import * as api from "./api.js";
import { EventParser } from "./sse.js";

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 5000;
// kv sends a comment every 15 s while idle; silence for much longer is a dead connection.
const SILENCE_MS = 40000;

const REASONS = {
  overflow: "too many changes arrived at once (overflow)",
  unavailable: "the server's change feed is unavailable",
  ended: "the server closed the stream",
  silent: "no heartbeat from the server",
  network: "the connection was lost",
};

export class Live {
  // handlers: ready(), change(type, data), lost(reason, retryMs), unauthorized()
  constructor(handlers) {
    this.handlers = handlers;
    this.controller = null;
  }

  start(prefix) {
    this.stop();
    this.controller = new AbortController();
    this.run(prefix, this.controller.signal);
  }

  stop() {
    this.controller?.abort();
    this.controller = null;
  }

  async run(prefix, signal) {
    let delay = FIRST_DELAY_MS;
    while (!signal.aborted) {
      let reason = "ended";
      try {
        const response = await api.watch(prefix, signal);
        reason = await this.read(response, signal, () => (delay = FIRST_DELAY_MS));
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof api.Unauthorized) {
          this.handlers.unauthorized();
          return;
        }
        const refused = error instanceof api.ApiError;
        reason = refused ? `the server refused the watch: ${error.message}` : "network";
      }
      if (signal.aborted) return;
      const wait = delay * (0.75 + Math.random() / 2); // spread the reconnections out
      this.handlers.lost(REASONS[reason] ?? reason, wait);
      await sleep(wait, signal);
      delay = Math.min(delay * 2, MAX_DELAY_MS);
    }
  }

  // Reads the stream until it ends; returns why it ended.
  async read(response, signal, onReady) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new EventParser();
    const watchdog = new Watchdog(SILENCE_MS, () => reader.cancel("silent"));
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return watchdog.fired ? "silent" : "ended";
        watchdog.reset();
        for (const event of parser.push(value)) {
          if (event.type === "ready") {
            onReady();
            this.handlers.ready();
          } else if (event.type === "put" || event.type === "delete") {
            this.handlers.change(event.type, api.parseJson(event.data));
          } else if (event.type === "overflow" || event.type === "unavailable") {
            return event.type;
          }
        }
      }
    } catch (error) {
      if (signal.aborted) throw error;
      return watchdog.fired ? "silent" : "network";
    } finally {
      watchdog.stop();
      reader.cancel().catch(() => {});
    }
  }
}

class Watchdog {
  constructor(ms, fire) {
    this.ms = ms;
    this.fire = fire;
    this.fired = false;
    this.timer = null;
    this.reset();
  }

  reset() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.fired = true;
      this.fire();
    }, this.ms);
  }

  stop() {
    clearTimeout(this.timer);
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}
