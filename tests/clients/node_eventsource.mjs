// The server against the `eventsource` npm package (a WHATWG EventSource for Node).
//
//   node tests/clients/node_eventsource.mjs http://127.0.0.1:PORT
//
// Run by tests/clients.rs against a server started with `--interval 300ms --retry 300ms`.
// Prints `ok <check>` per check and `@@ pass` at the end; exits non-zero on failure.

import { EventSource } from "eventsource";
import { Proxy, hostPort, publish, sleep, assert, assertEq } from "../browser/lib.mjs";

const base = process.argv[2];
if (!base) {
  console.error("usage: node node_eventsource.mjs http://HOST:PORT");
  process.exit(2);
}
const WAIT = 8000;
const opened = new Set();

const overall = setTimeout(() => {
  console.error("FAIL: overall time limit (60 s) passed");
  process.exit(1);
}, 60_000);

/** An EventSource that records every event of the given types, in order. */
function open(url, types = [], init = undefined) {
  const es = new EventSource(url, init);
  opened.add(es);
  const events = [];
  const record = (e) => events.push({ type: e.type, data: e.data, id: e.lastEventId });
  es.addEventListener("message", record);
  for (const t of ["reset", ...types]) es.addEventListener(t, record);
  const errors = [];
  es.addEventListener("error", (e) => errors.push(e.message || "error"));
  return { es, events, errors };
}

async function until(what, pred) {
  const deadline = Date.now() + WAIT;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

async function waitOpen(es) {
  await until("the stream to open", () => es.readyState === EventSource.OPEN);
}

const withIds = (events) => events.filter((e) => e.id);

async function main() {
  // Ticks: unnamed messages without ids.
  const a = open(`${base}/events`, ["alert"]);
  await until("a tick", () => a.events.some((e) => e.type === "message" && e.data.startsWith("the time is")));
  const tick = a.events.find((e) => e.data.startsWith("the time is"));
  assertEq(tick.id, "", "a tick has no id");
  console.log("ok ticks");

  // A named event, with the id the publish answered.
  const alertId = await publish(base, "fire", { event: "alert" });
  await until("the named event", () => a.events.some((e) => e.id === alertId));
  assertEq(
    a.events.find((e) => e.id === alertId),
    { type: "alert", data: "fire", id: alertId },
    "named event",
  );
  console.log("ok named event");

  // Multi-line data: LF, CRLF, an empty line and leading spaces survive.
  const text = "line one\nline two\n\n  indented\r\nafter a CRLF";
  const multiId = await publish(base, text);
  await until("the multi-line event", () => a.events.some((e) => e.id === multiId));
  assertEq(
    a.events.find((e) => e.id === multiId).data,
    "line one\nline two\n\n  indented\nafter a CRLF",
    "multi-line data",
  );
  console.log("ok multi-line data");

  // Resume with an explicit Last-Event-ID (the library's `fetch` hook adds the header).
  a.es.close();
  const missed = [];
  for (let i = 1; i <= 3; i++) missed.push(await publish(base, `missed ${i}`));
  const b = open(`${base}/events`, [], {
    fetch: (url, init) => fetch(url, { ...init, headers: { ...init.headers, "Last-Event-ID": multiId } }),
  });
  await until("the replayed events", () => withIds(b.events).length >= 3);
  const live = await publish(base, "live after resume");
  await until("the live event", () => b.events.some((e) => e.id === live));
  assertEq(withIds(b.events).map((e) => e.id), [...missed, live], "replay after Last-Event-ID, then live");
  assert(!b.events.some((e) => e.type === "reset"), "no reset on a good resume");
  b.es.close();
  console.log("ok resume with Last-Event-ID");

  // The library's own reconnection after a network break sends Last-Event-ID by itself.
  const proxy = new Proxy(hostPort(base));
  const via = await proxy.listen();
  const c = open(`${via}/events`);
  await waitOpen(c.es);
  const first = await publish(base, "before the break");
  await until("the event before the break", () => c.events.some((e) => e.id === first));
  const before = proxy.requests.length;
  proxy.cut();
  const during = [];
  for (let i = 1; i <= 3; i++) during.push(await publish(base, `during the break ${i}`));
  await sleep(400);
  proxy.restore();
  await until("the events of the break", () => c.events.some((e) => e.id === during[2]));
  const again = proxy.requests.slice(before);
  assert(again.length >= 1, "the library reconnected");
  assertEq(again[again.length - 1].lastEventId, first, "reconnected with Last-Event-ID");
  assertEq(withIds(c.events).map((e) => e.id), [first, ...during], "nothing lost or repeated");
  c.es.close();
  proxy.close();
  console.log("ok automatic reconnect with Last-Event-ID");

  // An id the server never issued: the gap signal comes first.
  const d = open(`${base}/events`, [], {
    fetch: (url, init) => fetch(url, { ...init, headers: { ...init.headers, "Last-Event-ID": "nosuchid" } }),
  });
  await until("the reset", () => d.events.length >= 1);
  assertEq(d.events[0].type, "reset", "reset first");
  assertEq(JSON.parse(d.events[0].data), { reason: "unknown-id" }, "reset reason");
  d.es.close();
  console.log("ok reset for an unknown id");

  console.log("@@ pass");
}

main().then(
  () => {
    clearTimeout(overall);
    process.exit(0);
  },
  (e) => {
    console.error("FAIL:", e && e.stack ? e.stack : e);
    for (const es of opened) es.close();
    process.exit(1);
  },
);
