// Helpers for the browser tests: a TCP proxy we can cut, raw HTTP publishing, Chromium's
// launch flags and PIDs, and a line protocol with the Rust test that runs us (tests/browser.rs,
// tests/http2.rs, tests/sse_load_report.rs).

import fs from "node:fs";
import net from "node:net";
import http from "node:http";
import readline from "node:readline";

/** A TCP proxy between the browser and the server that can be cut, paused and re-pointed. */
export class Proxy {
  constructor(target) {
    this.target = target; // { host, port }
    this.up = true;
    this.pairs = new Set();
    this.requests = []; // { line, lastEventId } of each request head seen
    this.server = net.createServer((client) => this.#accept(client));
  }

  listen() {
    return new Promise((resolve) => {
      this.server.listen(0, "127.0.0.1", () => {
        const { port } = this.server.address();
        this.url = `http://127.0.0.1:${port}`;
        resolve(this.url);
      });
    });
  }

  #accept(client) {
    if (!this.up) {
      if (this.refusal) {
        // A proxy whose upstream is down: an HTTP error, which makes an EventSource give up.
        client.on("error", () => {});
        client.end(this.refusal);
      } else {
        client.destroy(); // a network outage: connections fail at once
      }
      return;
    }
    const upstream = net.connect(this.target);
    const pair = { client, upstream };
    this.pairs.add(pair);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      this.pairs.delete(pair);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    // Sniff every request head of the connection (keep-alive reuses connections), skipping
    // bodies by Content-Length; forward everything as it is.
    let buf = "";
    let skip = 0;
    client.on("data", (chunk) => {
      buf += chunk.toString("latin1");
      for (;;) {
        if (skip > 0) {
          const n = Math.min(skip, buf.length);
          buf = buf.slice(n);
          skip -= n;
          if (skip > 0) return;
        }
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) {
          if (buf.length > 65536) buf = "";
          return;
        }
        const lines = buf.slice(0, end).split("\r\n");
        buf = buf.slice(end + 4);
        const header = (name) => {
          const l = lines.find((l) => l.toLowerCase().startsWith(name + ":"));
          return l ? l.slice(l.indexOf(":") + 1).trim() : null;
        };
        this.requests.push({ line: lines[0], lastEventId: header("last-event-id") });
        skip = Number(header("content-length") || 0);
      }
    });
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Cuts every connection (both sides) and refuses new ones until `restore`: by closing
   * them, or with `{ status503: true }` by answering 503 Service Unavailable. */
  cut({ status503 = false } = {}) {
    this.up = false;
    this.refusal = status503
      ? "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nupstream down"
      : null;
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
  }

  restore(target) {
    if (target) this.target = target;
    this.up = true;
    this.refusal = null;
  }

  close() {
    this.cut();
    this.server.close();
  }
}

/** `http://host:port` → { host, port }. */
export function hostPort(url) {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port) };
}

/** POSTs `data` to `<base>/publish?<query>` on a fresh connection; returns the event id. */
export function publish(base, data, query = {}) {
  const qs = new URLSearchParams(query).toString();
  const url = new URL("/publish" + (qs ? "?" + qs : ""), base);
  const body = Buffer.from(data, "utf8");
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      {
        method: "POST",
        agent: false,
        headers: { "Content-Length": body.length, Connection: "close" },
        timeout: 5000,
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c) => (text += c));
        res.on("end", () =>
          res.statusCode === 200
            ? resolve(text.trim())
            : reject(new Error(`publish: ${res.statusCode} ${text.trim()}`)),
        );
      },
    );
    req.on("timeout", () => req.destroy(new Error("publish: timed out")));
    req.on("error", reject);
    req.end(body);
  });
}

/** GETs a URL with a plain HTTP client; returns { status, headers, body }. */
export function get(url, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, headers, timeout: 5000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on("timeout", () => req.destroy(new Error("get: timed out")));
    req.on("error", reject);
  });
}

/** Lines from the Rust test on stdin, awaited one at a time. */
export class Commands {
  constructor() {
    this.queue = [];
    this.waiters = [];
    readline.createInterface({ input: process.stdin }).on("line", (line) => {
      const w = this.waiters.shift();
      if (w) w(line);
      else this.queue.push(line);
    });
  }
  next() {
    return this.queue.length
      ? Promise.resolve(this.queue.shift())
      : new Promise((resolve) => this.waiters.push(resolve));
  }
}

/** Tells the Rust test something (one protocol line on stdout). */
export function tell(line) {
  process.stdout.write(`@@ ${line}\n`);
}

export function log(...args) {
  console.error("[browser]", ...args);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function assert(cond, message) {
  if (!cond) throw new Error("assertion failed: " + message);
}

export function assertEq(actual, expected, message) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`assertion failed: ${message}\n  expected ${e}\n  actual   ${a}`);
}

/** Flags for Debian's Chromium, headless, with nothing that reaches the network by itself.
 * playwright-core adds a fresh temporary --user-data-dir (removed on close) itself and
 * refuses one here. */
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];

/** PIDs of our child processes whose command name matches `re` (from /proc). */
export function childPids(ppid, re) {
  const out = [];
  for (const name of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, "utf8");
      const close = stat.lastIndexOf(")");
      const comm = stat.slice(stat.indexOf("(") + 1, close);
      const parent = Number(stat.slice(close + 2).split(" ")[1]);
      if (parent === ppid && re.test(comm)) out.push(Number(name));
    } catch {}
  }
  return out;
}
