// Private topics in Debian's Chromium, driven by playwright-core.
//
//   node tests/browser/private.mjs http://127.0.0.1:SERVER_PORT PAGE_PORT
//
// Run by tests/browser.rs, which starts the server with a JWT secret and
// `--allow-origin http://127.0.0.1:PAGE_PORT`, and passes in the environment a subscribe token
// for `user/42` (SSE_TOKEN) and the shared publish token (SSE_PUBLISH_TOKEN).
//
// 1. A page on another origin (our own HTTP server on PAGE_PORT) opens
//    `new EventSource(server + "/events?topic=user/42", {withCredentials: true})` with the token
//    in the `sse_token` cookie, and receives a private event.
// 2. The same page without the cookie gets nothing, and shows the error.
// 3. The server's demo page for `user/42` shows the 401 clearly; after the token is entered
//    in its form (as ?access_token=), it receives a private event.
// Prints `@@ pass` at the end; exits non-zero on any failure.

import http from "node:http";
import { chromium } from "playwright-core";
import { tell, log, sleep, assert, assertEq } from "./lib.mjs";

const CHROMIUM = process.env.SSE_CHROMIUM || "/usr/bin/chromium";
const TOKEN = process.env.SSE_TOKEN;
const PUBLISH_TOKEN = process.env.SSE_PUBLISH_TOKEN;
const WAIT = 10_000;
const [serverUrl, pagePortArg] = process.argv.slice(2);
if (!serverUrl || !pagePortArg || !TOKEN || !PUBLISH_TOKEN) {
  console.error("usage: SSE_TOKEN=.. SSE_PUBLISH_TOKEN=.. node private.mjs http://HOST:PORT PAGE_PORT");
  process.exit(2);
}
const pageOrigin = `http://127.0.0.1:${pagePortArg}`;

// The cross-origin page: every event's data in #log, the stream's state in #status.
const PAGE = `<!doctype html><meta charset="utf-8"><title>private</title>
<p id="status">connecting</p><ol id="log"></ol>
<script>
  const es = new EventSource(${JSON.stringify(serverUrl + "/events?topic=user/42")}, { withCredentials: true });
  es.onopen = () => { document.getElementById("status").textContent = "open"; };
  es.onmessage = (e) => {
    const li = document.createElement("li");
    li.textContent = e.data;
    document.getElementById("log").append(li);
  };
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED) document.getElementById("status").textContent = "error: the stream was refused";
  };
</script>`;

let browser = null;
let pageServer = null;
const overall = setTimeout(() => {
  log("FAIL: overall time limit (60 s) passed");
  finish(1);
}, 60_000);

async function finish(code) {
  clearTimeout(overall);
  try {
    if (browser) await Promise.race([browser.close(), sleep(5000)]);
  } catch {}
  if (pageServer) pageServer.close();
  process.exit(code);
}

function publish(data) {
  const url = new URL("/publish?topic=user/42", serverUrl);
  const body = Buffer.from(data, "utf8");
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      {
        method: "POST",
        agent: false,
        headers: {
          "Content-Length": body.length,
          Connection: "close",
          Authorization: `Bearer ${PUBLISH_TOKEN}`,
        },
        timeout: 5000,
      },
      (res) => {
        let text = "";
        res.on("data", (c) => (text += c));
        res.on("end", () =>
          res.statusCode === 200 ? resolve(text.trim()) : reject(new Error(`publish: ${res.statusCode} ${text}`)),
        );
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

async function waitFor(what, f) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

const text = (page, sel) => page.evaluate((s) => document.querySelector(s)?.textContent ?? "", sel);
const items = (page) =>
  page.evaluate(() => Array.from(document.querySelectorAll("#log li")).map((li) => li.textContent));

async function main() {
  pageServer = http.createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store" });
    res.end(PAGE);
  });
  await new Promise((resolve) => pageServer.listen(Number(pagePortArg), "127.0.0.1", resolve));
  log(`server ${serverUrl}, page ${pageOrigin}`);

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
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
  log(`chromium ${browser.version()}`);

  // 1. With the cookie: the cross-origin page receives the private event.
  const withCookie = await browser.newContext();
  await withCookie.addCookies([
    { name: "sse_token", value: TOKEN, domain: "127.0.0.1", path: "/", sameSite: "Lax" },
  ]);
  const a = await withCookie.newPage();
  await a.goto(pageOrigin + "/");
  await waitFor("the cookie page's stream to open", async () => (await text(a, "#status")) === "open");
  await publish("for user 42");
  await waitFor("the private event on the cookie page", async () => (await items(a)).includes("for user 42"));
  log("with the cookie: received the private event");

  // 2. Without the cookie: refused, nothing received, the page shows the error.
  const without = await browser.newContext();
  const b = await without.newPage();
  await b.goto(pageOrigin + "/");
  await waitFor("the error on the page without a cookie", async () =>
    (await text(b, "#status")).startsWith("error"),
  );
  await publish("second for user 42");
  await waitFor("the second event on the cookie page", async () =>
    (await items(a)).includes("second for user 42"),
  );
  await sleep(300);
  assertEq(await items(b), [], "the page without a cookie received nothing");
  log("without the cookie: refused, nothing received");

  // 3. The demo page: a clear 401, then the token from its form.
  const demoCtx = await browser.newContext();
  const demo = await demoCtx.newPage();
  await demo.goto(serverUrl + "/?topic=user/42");
  const shown = await waitFor("the demo page's 401", async () => {
    const hidden = await demo.evaluate(() => document.getElementById("auth-error").hidden);
    return hidden ? "" : await text(demo, "#auth-error");
  });
  assert(shown.includes("401"), `the demo page names the 401: ${shown}`);
  assertEq(await text(demo, "#state-text"), "closed", "the demo page's state");
  await demo.fill("#sub-token", TOKEN);
  await demo.selectOption("#sub-via", "query");
  await demo.click("#subscribe button[type=submit]");
  await waitFor("the demo page's stream to open", async () => (await text(demo, "#state-text")) === "open");
  assert(await demo.evaluate(() => document.getElementById("auth-error").hidden), "the error is gone");
  await publish("third for user 42");
  await waitFor("the private event on the demo page", async () =>
    demo.evaluate(() =>
      Array.from(document.querySelectorAll("#log li .data")).some((d) => d.textContent === "third for user 42"),
    ),
  );
  log("demo page: 401 shown, then the token from the form streams");
  tell("pass");
  await finish(0);
}

main().catch((e) => {
  log("FAIL:", e && e.stack ? e.stack : e);
  finish(1);
});
