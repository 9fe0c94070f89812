// Ten EventSource streams on one page over HTTP/2 (nginx with TLS in front), in Debian's
// Chromium driven by playwright-core; and the control over plain HTTP/1.1, where the seventh
// stream does not open.
//
//   node tests/browser/http2.mjs https://127.0.0.1:NGINX_PORT http://127.0.0.1:SERVER_PORT
//
// Run by tests/http2.rs, which owns nginx and the server and publishes through nginx: when
// this script prints `@@ open N`, the Rust test publishes one event and answers on stdin with
// `published ID`. Prints `@@ browser-pid N` once the browser runs, `@@ pass` at the end; exits
// non-zero on any failure. The certificate is self-signed: the browser context ignores
// certificate errors.

import { chromium } from "playwright-core";
import { CHROMIUM_ARGS, Commands, childPids, tell, log, sleep, assert, assertEq } from "./lib.mjs";

const CHROMIUM = process.env.SSE_CHROMIUM || "/usr/bin/chromium";
const STREAMS = 10; // more than HTTP/1.1's six connections per origin
const H1_LIMIT = 6; // Chromium's HTTP/1.1 connections per origin
const WAIT = 10_000;

const [h2Base, h1Base] = process.argv.slice(2);
if (!h2Base || !h1Base) {
  console.error("usage: node http2.mjs https://HOST:PORT http://HOST:PORT");
  process.exit(2);
}

let browser = null;
const overall = setTimeout(() => {
  log("FAIL: overall time limit (60 s) passed");
  finish(1);
}, 60_000);

async function finish(code) {
  clearTimeout(overall);
  try {
    if (browser) await Promise.race([browser.close(), sleep(5000)]);
  } catch {}
  process.exit(code);
}

/** Opens `base`/health in a fresh context and returns the page with the protocol and
 * connection of every EventSource response the browser received (from the DevTools
 * protocol: `Network.responseReceived`). */
async function openPage(base) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  const responses = [];
  cdp.on("Network.responseReceived", ({ type, response }) => {
    if (type === "EventSource") {
      responses.push({
        status: response.status,
        protocol: response.protocol,
        connectionId: response.connectionId,
      });
    }
  });
  await cdp.send("Network.enable");
  const res = await page.goto(base + "/health");
  assertEq(res.status(), 200, `GET ${base}/health`);
  const navProtocol = await page.evaluate(
    () => performance.getEntriesByType("navigation")[0].nextHopProtocol,
  );
  return { context, page, responses, navProtocol };
}

/** Opens `n` EventSource streams on `/events` of the page's origin; each records whether it
 * opened and the ids and data it received. */
function openStreams(page, n) {
  return page.evaluate((n) => {
    window.streams = [];
    for (let i = 0; i < n; i++) {
      const s = { open: false, events: [], es: new EventSource("/events") };
      s.es.onopen = () => (s.open = true);
      s.es.onmessage = (e) => s.events.push({ id: e.lastEventId, data: e.data });
      window.streams.push(s);
    }
  }, n);
}

const states = (page) =>
  page.evaluate(() =>
    window.streams.map((s) => ({ open: s.open, readyState: s.es.readyState, events: s.events })),
  );

async function waitStates(page, what, pred) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    const st = await states(page);
    if (pred(st)) return st;
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}: ${JSON.stringify(st)}`);
    }
    await sleep(50);
  }
}

async function main() {
  const commands = new Commands();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 30_000,
  });
  for (const pid of childPids(process.pid, /chrom/)) tell(`browser-pid ${pid}`);
  log(`chromium ${browser.version()}`);

  // 1. Over HTTP/2: all ten streams open, on one connection, and each gets the event.
  const h2 = await openPage(h2Base);
  assertEq(h2.navProtocol, "h2", "the page's protocol through nginx");
  await openStreams(h2.page, STREAMS);
  await waitStates(h2.page, `${STREAMS} open streams`, (st) => st.every((s) => s.open));
  tell(`open ${STREAMS}`);
  const answer = await commands.next();
  assert(answer.startsWith("published "), `expected 'published ID', got ${answer}`);
  const id = answer.slice("published ".length);
  const st = await waitStates(h2.page, `the event ${id} on every stream`, (st) =>
    st.every((s) => s.events.some((e) => e.id === id)),
  );
  for (const s of st) {
    assertEq(s.events, [{ id, data: "to every stream over h2" }], "each stream's events");
  }
  assertEq(h2.responses.length, STREAMS, "EventSource responses over HTTP/2");
  for (const r of h2.responses) {
    assertEq([r.status, r.protocol], [200, "h2"], "an EventSource response");
  }
  const connections = new Set(h2.responses.map((r) => r.connectionId));
  assertEq(connections.size, 1, "connections carrying the ten streams");
  tell(`h2 streams ${STREAMS} connections ${connections.size}`);
  await h2.context.close();

  // 2. The control, over plain HTTP/1.1 straight to the server: six open, the seventh waits
  // for a connection.
  const h1 = await openPage(h1Base);
  assertEq(h1.navProtocol, "http/1.1", "the page's protocol without nginx");
  await openStreams(h1.page, H1_LIMIT + 1);
  await waitStates(h1.page, `${H1_LIMIT} open streams`, (st) => st.filter((s) => s.open).length >= H1_LIMIT);
  await sleep(1500);
  const h1st = await states(h1.page);
  const open = h1st.filter((s) => s.open).length;
  assertEq(open, H1_LIMIT, "streams open over HTTP/1.1");
  assertEq(h1st[H1_LIMIT].readyState, 0, "the seventh stream over HTTP/1.1 is still connecting");
  for (const r of h1.responses) assertEq(r.protocol, "http/1.1", "an EventSource response");
  tell(`h1 open ${open} of ${H1_LIMIT + 1}`);
  await h1.context.close();

  tell("pass");
  await finish(0);
}

main().catch((e) => {
  log("FAIL:", e && e.stack ? e.stack : e);
  finish(1);
});
