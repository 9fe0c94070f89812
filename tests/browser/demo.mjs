// End-to-end test of the demo page in Debian's Chromium, driven by playwright-core.
//
//   node tests/browser/demo.mjs http://127.0.0.1:PORT
//
// Run by tests/browser.rs, which owns the server: when this script prints `@@ restart`, the
// Rust test restarts the server and answers on stdin with `server http://127.0.0.1:PORT2`.
// The browser talks to the server through a TCP proxy of ours (to cut the network and to
// follow the restarted server); events are published straight to the server with raw POSTs.
// Prints `@@ pass` at the end; exits non-zero on any failure.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import {
  Proxy,
  Commands,
  childPids,
  hostPort,
  publish,
  tell,
  log,
  sleep,
  assert,
  assertEq,
} from "./lib.mjs";

const CHROMIUM = process.env.SSE_CHROMIUM || "/usr/bin/chromium";
const ARTIFACTS =
  process.env.SSE_ARTIFACTS_DIR || fileURLToPath(new URL("../artifacts/", import.meta.url));
const WAIT = 10_000; // for anything the page should show (the page retries after 5 s)

let serverUrl = process.argv[2];
if (!serverUrl) {
  console.error("usage: node demo.mjs http://HOST:PORT");
  process.exit(2);
}

let browser = null;
let proxy = null;
const overall = setTimeout(() => {
  log("FAIL: overall time limit (90 s) passed");
  finish(1);
}, 90_000);

async function finish(code) {
  clearTimeout(overall);
  try {
    if (browser) await Promise.race([browser.close(), sleep(5000)]);
  } catch {}
  if (proxy) proxy.close();
  process.exit(code);
}


/** The log rows of the page, oldest first. */
function rows(page) {
  return page.evaluate(() =>
    Array.from(document.querySelectorAll("#log li[data-type]"))
      .reverse()
      .map((li) => ({
        type: li.dataset.type,
        id: li.dataset.id,
        data: li.querySelector(".data").textContent,
        dataChildren: li.querySelector(".data").children.length,
        time: li.querySelector(".time").textContent,
      })),
  );
}

async function waitRows(page, what, pred) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    const r = await rows(page);
    if (pred(r)) return r;
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}; rows:\n` + JSON.stringify(r.slice(-15), null, 1));
    }
    await sleep(50);
  }
}

const stateOf = (page) => page.locator("#state").getAttribute("data-state");

async function waitState(page, want) {
  await page.waitForFunction((s) => document.querySelector("#state").dataset.state === s, want, {
    timeout: WAIT,
    polling: 20,
  });
}

async function main() {
  const commands = new Commands();
  fs.mkdirSync(ARTIFACTS, { recursive: true });

  proxy = new Proxy(hostPort(serverUrl));
  const pageBase = await proxy.listen();
  log(`server ${serverUrl}, proxy ${pageBase}`);

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // playwright-core adds a fresh temporary --user-data-dir (removed on close) itself and
    // refuses one in `args`.
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic",
    ],
    timeout: 30_000,
  });
  // Tell the Rust test the browser's PID (it is started detached), to kill it if we die.
  for (const pid of childPids(process.pid, /chrom/)) tell(`browser-pid ${pid}`);
  log(`chromium ${browser.version()}`);

  const page = await browser.newPage({ viewport: { width: 1000, height: 820 } });
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  // A trap for injected script: set only if event data were ever run as markup.
  await page.addInitScript(() => {
    window.__injected = [];
  });

  // 1. The page loads (a browser navigation gets HTML) and shows the stream.
  const resp = await page.goto(`${pageBase}/?event=greeting`, { timeout: WAIT });
  assertEq(resp.status(), 200, "GET / status");
  assert((resp.headers()["content-type"] || "").startsWith("text/html"), "the page is HTML");
  await waitState(page, "open");
  await waitRows(page, "a tick", (r) => r.some((x) => x.type === "message" && x.data.startsWith("the time is")));
  log("ticks arrive");

  // 2. The client count, polled from /metrics.
  await page.waitForFunction(() => /^[1-9]\d*$/.test(document.querySelector("#clients").textContent), null, {
    timeout: WAIT,
  });
  log(`clients shown: ${await page.locator("#clients").textContent()}`);

  // 3. Events published with a raw POST appear, plain and named, with their ids.
  const published = []; // ids of the events published on the default topic, in order
  const hello = await publish(serverUrl, "hello from a raw POST");
  published.push(hello);
  const greet = await publish(serverUrl, "hi\nsecond line", { event: "greeting" });
  published.push(greet);
  let r = await waitRows(page, "the published events", (r) => r.some((x) => x.id === greet));
  const helloRow = r.find((x) => x.id === hello);
  assert(helloRow && helloRow.type === "message" && helloRow.data === "hello from a raw POST", "plain event shown");
  const greetRow = r.find((x) => x.id === greet);
  assert(greetRow.type === "greeting" && greetRow.data === "hi\nsecond line", "named multi-line event shown");
  assert(/^\d\d:\d\d:\d\d\.\d{3}$/.test(greetRow.time), "rows show a time");
  log("published events appear");

  // 3b. An empty body is an event with empty data: sent as `data: `, which EventSource
  // dispatches with data "" (it drops only an event with no data line at all).
  const empty = await publish(serverUrl, "");
  published.push(empty);
  r = await waitRows(page, "the empty event", (r) => r.some((x) => x.id === empty));
  assertEq(r.find((x) => x.id === empty).data, "", "empty event shown with empty data");
  log("an empty event is dispatched");

  // 4. Data with markup stays text.
  const evil = `<script>window.__injected.push("script")</script><img src=x onerror="window.__injected.push('img')"><b>bold</b>`;
  const evilId = await publish(serverUrl, evil);
  published.push(evilId);
  r = await waitRows(page, "the markup event", (r) => r.some((x) => x.id === evilId));
  const evilRow = r.find((x) => x.id === evilId);
  assertEq(evilRow.data, evil, "markup shown as text");
  assertEq(evilRow.dataChildren, 0, "no elements created from data");
  await sleep(300);
  assertEq(await page.evaluate(() => window.__injected), [], "no injected code ran");
  assertEq(await page.locator("#log img, #log script, #log b").count(), 0, "no injected elements");
  log("markup stays text");

  // 5. The publish form.
  await page.fill("#pub-data", "from the form");
  await page.fill("#pub-event", "note");
  await page.click("#publish button");
  await page.waitForFunction(() => /^published \S+$/.test(document.querySelector("#result").textContent), null, {
    timeout: WAIT,
  });
  const formId = (await page.locator("#result").textContent()).split(" ")[1];
  published.push(formId);
  r = await waitRows(page, "the form's event", (r) => r.some((x) => x.id === formId));
  const formRow = r.find((x) => x.id === formId);
  assert(formRow.type === "note" && formRow.data === "from the form", "form event shown with its type");
  log("form publishes");

  // 6. A network break: the browser reconnects by itself and resumes with Last-Event-ID.
  const beforeBreak = published[published.length - 1];
  const requestsBefore = proxy.requests.length;
  proxy.cut();
  await waitState(page, "reconnecting");
  log("network cut; page shows reconnecting");
  for (let i = 1; i <= 5; i++) published.push(await publish(serverUrl, `during the break ${i}`));
  await sleep(700); // let the browser's retries meet the outage
  proxy.restore();
  await waitState(page, "open");
  const last = published[published.length - 1];
  r = await waitRows(page, "the events published during the break", (r) => r.some((x) => x.id === last));
  const resumed = proxy.requests.slice(requestsBefore).filter((q) => /^GET \/events/.test(q.line));
  assert(resumed.length >= 1, "the browser reopened the stream");
  assertEq(resumed[resumed.length - 1].lastEventId, beforeBreak, "resumed with Last-Event-ID");
  assertEq(
    r.filter((x) => x.id && x.type !== "reset").map((x) => x.id),
    published,
    "every published event exactly once, in order, after the break",
  );
  assert(!r.some((x) => x.type === "reset"), "no gap signal after a short break");
  log(`reconnected after the break with Last-Event-ID ${beforeBreak}; nothing lost or repeated`);

  // 6b. A proxy answering 503: the browser gives up (the page shows `closed`), and the page
  // reopens the stream itself after 5 s with `?lastEventId=`.
  const beforeRefusal = published[published.length - 1];
  const requestsBefore503 = proxy.requests.length;
  proxy.cut({ status503: true });
  await waitState(page, "closed");
  log("proxy answers 503; page shows closed");
  for (let i = 1; i <= 2; i++) published.push(await publish(serverUrl, `while refused ${i}`));
  proxy.restore();
  const lastRefused = published[published.length - 1];
  r = await waitRows(page, "the events published while refused", (r) => r.some((x) => x.id === lastRefused));
  await waitState(page, "open");
  const reopened = proxy.requests.slice(requestsBefore503).filter((q) => /^GET \/events/.test(q.line));
  assert(
    reopened.some((q) => q.line.includes(`lastEventId=${encodeURIComponent(beforeRefusal)}`)),
    "the page reopened the stream with ?lastEventId=: " + JSON.stringify(reopened),
  );
  assertEq(
    r.filter((x) => x.id && x.type !== "reset").map((x) => x.id),
    published,
    "every published event exactly once, in order, after the page reopened the stream",
  );
  log(`page reopened the stream with ?lastEventId=${beforeRefusal}; nothing lost or repeated`);

  // 7. A server restart: the browser reconnects, sees the gap signal, and gets every event
  // published since the restart exactly once.
  tell("restart");
  const answer = await commands.next();
  const m = /^server (http:\/\/\S+)$/.exec(answer);
  assert(m, `expected "server URL", got ${JSON.stringify(answer)}`);
  serverUrl = m[1];
  await waitState(page, "reconnecting");
  // Hold the browser off while publishing, so some events must be replayed from the new
  // server's history...
  proxy.cut();
  const sinceRestart = [];
  for (let i = 1; i <= 3; i++) sinceRestart.push(await publish(serverUrl, `after the restart ${i}`));
  proxy.restore(hostPort(serverUrl));
  await waitRows(page, "the replayed events", (r) => r.some((x) => x.id === sinceRestart[2]));
  await waitState(page, "open");
  // ...and some arrive live.
  for (let i = 4; i <= 5; i++) sinceRestart.push(await publish(serverUrl, `after the restart ${i}`));
  r = await waitRows(page, "the live events after the restart", (r) => r.some((x) => x.id === sinceRestart[4]));
  const resets = r.filter((x) => x.type === "reset");
  assertEq(resets.length, 1, "one gap signal");
  assertEq(JSON.parse(resets[0].data), { reason: "restart" }, "the gap signal names the restart");
  const afterReset = r.slice(r.indexOf(resets[0]) + 1);
  assertEq(
    afterReset.filter((x) => x.id).map((x) => x.id),
    sinceRestart,
    "every event since the restart exactly once, in order",
  );
  assertEq(
    r.slice(0, r.indexOf(resets[0])).filter((x) => x.id).map((x) => x.id),
    published,
    "nothing from before the restart repeated",
  );
  await waitRows(page, "a tick from the new server", (r) => {
    const i = r.findIndex((x) => x.type === "reset");
    return r.slice(i).some((x) => x.data.startsWith("the time is"));
  });
  log("restart: reset shown, events since the restart exactly once");

  // 8. A screenshot for people (the Rust test names where; tests/artifacts/ by default).
  await page.fill("#pub-data", "<b>not bold</b>");
  await page.fill("#pub-event", "");
  await page.waitForFunction(() => /^[1-9]\d*$/.test(document.querySelector("#clients").textContent), null, {
    timeout: WAIT,
  });
  const shot = path.join(ARTIFACTS, "browser-demo.png");
  await page.screenshot({ path: shot });
  log(`screenshot: ${shot}`);
  // And in a phone-sized window with a dark color scheme.
  await page.emulateMedia({ colorScheme: "dark" });
  await page.setViewportSize({ width: 390, height: 760 });
  const narrow = path.join(ARTIFACTS, "browser-demo-narrow-dark.png");
  await page.screenshot({ path: narrow });
  log(`screenshot: ${narrow}`);

  assertEq(pageErrors, [], "no uncaught errors in the page");
  assertEq(await stateOf(page), "open", "final state");
  tell("pass");
}

main().then(
  () => finish(0),
  (e) => {
    log("FAIL:", e && e.stack ? e.stack : e);
    finish(1);
  },
);
