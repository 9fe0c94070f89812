// Opens an `sse-load --report` page in Debian's Chromium (playwright-core), checks that it is
// self-contained and that its four charts have data, and saves a full-page screenshot.
//
//   node tests/browser/load_report.mjs REPORT.html SCREENSHOT.png
//
// Run by tests/sse_load_report.rs. Prints `@@ browser-pid N` once the browser runs (so the Rust
// test can kill it if this script dies), `@@ pass` at the end; exits non-zero on any failure.

import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { childPids, log, sleep, assert, assertEq } from "./lib.mjs";

const CHROMIUM = process.env.SSE_CHROMIUM || "/usr/bin/chromium";
const [report, shot] = process.argv.slice(2);
if (!report || !shot) {
  console.error("usage: node load_report.mjs REPORT.html SCREENSHOT.png");
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


async function main() {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run"],
    timeout: 30_000,
  });
  for (const pid of childPids(process.pid, /chrom/)) console.log(`@@ browser-pid ${pid}`);
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  const external = [];
  page.on("request", (r) => {
    if (!r.url().startsWith("file:")) external.push(r.url());
  });
  await page.goto("file://" + path.resolve(report));
  const charts = await page.evaluate(() =>
    [...document.querySelectorAll(".chart")].map((c) => {
      const box = c.getBoundingClientRect();
      // Data lines: the series' polylines (stroke width 2, like the legend's two-point
      // samples, which are left out by asking for three points or more).
      const lines = [...c.querySelectorAll("polyline[stroke-width='2']")].filter(
        (p) => (p.getAttribute("points") || "").trim().split(/\s+/).length >= 3,
      ).length;
      return { id: c.id, points: Number(c.dataset.points), lines, width: box.width, height: box.height };
    }),
  );
  log(JSON.stringify(charts));
  assertEq(charts.map((c) => c.id).join(","), "connections,deliveries,latency,completeness", "charts");
  for (const c of charts) {
    assert(c.points >= 3, `${c.id}: only ${c.points} points`);
    assert(c.lines >= 1, `${c.id}: no line drawn`);
    assert(c.width >= 300 && c.height >= 200, `${c.id}: ${c.width}×${c.height}`);
  }
  const verdict = await page.textContent("#verdict");
  assertEq(verdict.trim(), "ALL DELIVERED", "verdict");
  const summary = await page.textContent("#summary");
  assert(summary.includes("CPU/delivery"), "summary table");
  assertEq(external.length, 0, `external requests: ${external.join(" ")}`);
  fs.mkdirSync(path.dirname(path.resolve(shot)), { recursive: true });
  await page.screenshot({ path: shot, fullPage: true });
  log(`screenshot: ${shot}`);
  console.log("@@ pass");
}

main().then(
  () => finish(0),
  (e) => {
    log(`FAIL: ${e && e.stack ? e.stack : e}`);
    finish(1);
  },
);
