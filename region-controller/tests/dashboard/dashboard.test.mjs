// Browser test of the region controller's path-quality dashboard: headless
// Chromium (Debian's) driven by playwright-core against dashboard_lab (six
// edges, three regions, emulated WAN, in one process). Run by run.sh:
//
//   node dashboard.test.mjs --lab <dashboard_lab binary> --screenshots <dir> [--chromium <path>]
//
// Checks: the page loads with no console errors and no request leaving
// loopback; it asks for the token and refuses a wrong one; it shows every
// edge of the lab; the matrix matches /v1/mesh for each metric; picking
// two edges shows the path (and backup) that the API reports, for every
// pair; a link's history is charted; a killed edge turns to down; a
// controller that stops answering makes the page say it is stale, and it
// recovers. Screenshots of each step go to the screenshot directory.

import { spawn } from "node:child_process";
import { mkdirSync, openSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const argv = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : dflt;
};
const LAB = opt("lab");
const SHOTS = opt("screenshots", "dashboard-screenshots");
const CHROMIUM = opt("chromium", "/usr/bin/chromium");
if (!LAB) {
  console.error("usage: node dashboard.test.mjs --lab <dashboard_lab> [--screenshots dir] [--chromium path]");
  process.exit(2);
}
mkdirSync(SHOTS, { recursive: true });

const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;
let passed = 0;
const failures = [];

async function check(name, fn) {
  const t = Date.now();
  try {
    await fn();
    passed++;
    console.log(`ok   ${name} (${Date.now() - t} ms)`);
  } catch (e) {
    failures.push(name);
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function eventually(what, ms, fn) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}${last ? ` (${last.message})` : ""}`);
    await sleep(200);
  }
}

// ------------------------------------------------------------------- lab

function startLab() {
  // The lab's log (warnings about the links the test breaks) goes to a file
  // beside the screenshots.
  const log = openSync(join(SHOTS, "lab.log"), "w");
  const lab = spawn(LAB, ["--duration-s", "300"], { stdio: ["pipe", "pipe", log] });
  const info = { edges: [], lines: [] };
  const rl = createInterface({ input: lab.stdout });
  const waiters = [];
  rl.on("line", (line) => {
    info.lines.push(line);
    console.log(`  lab| ${line}`);
    let m;
    if ((m = line.match(/^edge (\d+) (\w+) region (\S+)/))) info.edges.push({ id: Number(m[1]), city: m[2], region: m[3] });
    if ((m = line.match(/^api: (http:\/\/\S+)/))) info.api = m[1];
    if ((m = line.match(/^token: (\S+)/))) info.token = m[1];
    for (const w of [...waiters]) {
      if (w.re.test(line)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  const waitLine = (re, ms) =>
    new Promise((resolve, reject) => {
      const w = { re, resolve };
      waiters.push(w);
      setTimeout(() => reject(new Error(`lab printed no line matching ${re} within ${ms} ms`)), ms);
    });
  const exited = new Promise((r) => lab.on("exit", (code, sig) => r({ code, sig })));
  return { lab, info, waitLine, exited, send: (cmd) => lab.stdin.write(`${cmd}\n`) };
}

// ------------------------------------------------------------------ main

const L = startLab();
let browser;
try {
  await L.waitLine(/^ready/, 90_000);
  const { api, token, edges } = L.info;
  assert(api && token && edges.length === 6, `lab printed api=${api} token=${!!token} edges=${edges.length}`);
  const apiHost = new URL(api).host;
  const getJson = async (path, tok = token) => {
    const r = await fetch(`${api}${path}`, { headers: tok ? { Authorization: `Bearer ${tok}` } : {} });
    return { status: r.status, body: await r.json().catch(() => null) };
  };

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: process.getuid && process.getuid() === 0 ? ["--no-sandbox"] : [],
  });
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1 });
  const page = await context.newPage();

  // Everything the browser says or fails, by phase: some phases provoke
  // errors on purpose (a wrong token, a controller that stops answering).
  let phase = "load";
  const problems = [];
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") problems.push({ phase, what: `console ${m.type()}: ${m.text()}`, url: m.location().url });
  });
  page.on("pageerror", (e) => problems.push({ phase, what: `page error: ${e.message}` }));
  page.on("requestfailed", (r) => problems.push({ phase, what: `request failed: ${r.url()} ${r.failure() && r.failure().errorText}`, url: r.url() }));
  const foreign = [];
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (u.protocol !== "data:" && u.host !== apiHost) foreign.push(r.url());
  });
  // Every /v1/mesh answer the page got, by its now_ms (the page marks what
  // it rendered with data-mesh-at).
  const meshSeen = new Map();
  page.on("response", async (r) => {
    if (new URL(r.url()).pathname === "/v1/mesh" && r.status() === 200) {
      try {
        const j = await r.json();
        meshSeen.set(String(j.now_ms), j);
      } catch (_) { /* page gone */ }
    }
  });
  const shot = async (name) => page.screenshot({ path: join(SHOTS, `${name}.png`) });
  // Read the page with `fn` (which returns `at`, the now_ms of the answer it
  // rendered) together with that /v1/mesh answer. The answer's body may
  // reach this script a moment after the page rendered it: read again.
  const rendered = (fn) =>
    eventually("the /v1/mesh answer the page rendered", 5000, async () => {
      const got = await page.evaluate(fn);
      const mesh = meshSeen.get(got.at);
      return mesh ? { ...got, mesh } : null;
    });

  await check("the page asks for the operator token and refuses a wrong one", async () => {
    const resp = await page.goto(`${api}/`);
    assert(resp.status() === 200, `GET / answered ${resp.status()}`);
    const csp = resp.headers()["content-security-policy"] || "";
    assert(csp.includes("default-src 'none'") && csp.includes("connect-src 'self'"), `CSP: ${csp}`);
    await page.waitForSelector("#login:not([hidden])", { timeout: 5000 });
    await shot("01-login");
    phase = "wrong-token";
    await page.fill("#token", "not-the-token-0123456789");
    await page.click("#login button[type=submit]");
    await page.waitForSelector("#login-error:not([hidden])", { timeout: 5000 });
    const msg = await page.textContent("#login-error");
    assert(/refused/i.test(msg), `error shown: ${msg}`);
    phase = "load";
  });

  await check("with the token it shows every edge of the lab, serving", async () => {
    await page.fill("#token", token);
    await page.click("#login button[type=submit]");
    await page.waitForSelector("#login", { state: "hidden", timeout: 5000 });
    await page.waitForFunction((n) => document.querySelectorAll("#map [data-edge-id]").length === n, edges.length, { timeout: 10000 });
    await page.waitForSelector('#freshness[data-state="live"]', { timeout: 10000 });
    const onMap = await page.$$eval("#map [data-edge-id]", (gs) => gs.map((g) => [Number(g.dataset.edgeId), g.dataset.status]));
    const ids = onMap.map((e) => e[0]).sort((a, b) => a - b);
    assert(JSON.stringify(ids) === JSON.stringify(edges.map((e) => e.id).sort((a, b) => a - b)), `edges on the map: ${ids}`);
    for (const [id, status] of onMap) assert(status === "serving", `edge ${id} is ${status}`);
    const labels = await page.$$eval("#map text.label", (ts) => ts.map((t) => t.textContent));
    for (const e of edges) assert(labels.some((l) => l.startsWith(`${e.id} ${e.city}`)), `no label for edge ${e.id} ${e.city}: ${labels}`);
    const links = await page.$$eval("#map line.link", (ls) => ls.length);
    assert(links >= 15, `${links} link lines for 15 pairs`);
    // The token is in session storage only, and not in the address bar.
    assert(!page.url().includes(token), "token in the URL");
    await shot("02-mesh");
  });

  for (const metric of ["rtt", "jitter", "loss"]) {
    await check(`the ${metric} matrix matches /v1/mesh`, async () => {
      await page.click(`#metric button[data-metric="${metric}"]`);
      // Read the cells and what the page rendered them from at once.
      const { cells, mesh } = await rendered(() => ({
        at: document.body.dataset.meshAt,
        cells: [...document.querySelectorAll("#matrix td[data-from]")].map((td) => ({
          from: Number(td.dataset.from), to: Number(td.dataset.to), probed: td.dataset.probed === "true",
          rtt: td.dataset.rtt, jitter: td.dataset.jitter, loss: td.dataset.loss, alive: td.dataset.alive, text: td.textContent,
        })),
      }));
      const ids = mesh.edges.map((e) => e.edge.id);
      assert(ids.length === edges.length, `${ids.length} edges in /v1/mesh`);
      const links = mesh.links.filter((l) => ids.includes(l.from) && ids.includes(l.to));
      const probed = cells.filter((c) => c.probed);
      assert(probed.length === links.length, `${probed.length} probed cells, ${links.length} links in /v1/mesh`);
      assert(cells.length === ids.length * (ids.length - 1), `${cells.length} cells for ${ids.length} edges`);
      for (const l of links) {
        const c = probed.find((c) => c.from === l.from && c.to === l.to);
        assert(c, `no cell for ${l.from} -> ${l.to}`);
        assert(c.rtt === String(l.rtt_ms) && c.jitter === String(l.jitter_ms) && c.loss === String(l.loss) && c.alive === String(l.alive),
          `cell ${l.from}->${l.to} ${JSON.stringify(c)} vs ${JSON.stringify(l)}`);
        // What the cell says, to its displayed precision.
        const v = { rtt: l.rtt_ms, jitter: l.jitter_ms, loss: l.loss * 100 }[metric];
        const shown = parseFloat(c.text.replace(/^✕\s*/, "").replace("<", ""));
        const tol = metric === "loss" ? 0.051 : v >= 100 ? 0.51 : v >= 10 ? 0.051 : 0.0051;
        if (!(metric === "loss" && c.text.includes("<"))) assert(Math.abs(shown - v) <= tol, `cell ${l.from}->${l.to} shows ${c.text} for ${metric} ${v}`);
      }
      // And the API, asked separately, lists the same links.
      const fresh = (await getJson("/v1/mesh")).body;
      const keys = (m) => m.links.map((l) => `${l.from}>${l.to}`).sort().join(" ");
      assert(keys(fresh) === keys(mesh), "the page's links are not the API's");
      await shot(`03-matrix-${metric}`);
    });
  }

  await check("picking two edges shows the path and backup the API reports, for every pair", async () => {
    await page.click('#metric button[data-metric="rtt"]');
    let relayed = 0;
    for (const a of edges) {
      for (const b of edges) {
        if (a.id === b.id) continue;
        await page.selectOption("#from", String(a.id));
        await page.selectOption("#to", String(b.id));
        const shown = await rendered(() => ({
          at: document.body.dataset.meshAt,
          best: document.querySelector("#path-best")?.dataset.path,
          backup: document.querySelector("#path-backup")?.dataset.path,
          direct: document.querySelector("#path-direct")?.dataset.path,
          hops: document.querySelectorAll("#path-best tr.hop").length,
          onMap: document.querySelectorAll("#map .route.best").length,
        }));
        const rec = shown.mesh.routes.find((r) => r.edge === a.id);
        const route = rec && rec.routes.find((r) => r.dest === b.id);
        assert(route, `no route ${a.id} -> ${b.id} in /v1/mesh`);
        assert(shown.best === route.best.join(","), `${a.id}->${b.id}: page shows ${shown.best}, API ${route.best}`);
        assert((shown.backup || "") === (route.backup || []).join(","), `${a.id}->${b.id} backup: page ${shown.backup}, API ${route.backup}`);
        assert(shown.direct === `${a.id},${b.id}`, `direct ${shown.direct}`);
        assert(shown.hops === route.best.length - 1, `${shown.hops} hop rows for ${route.best}`);
        assert(shown.onMap >= route.best.length - 1, `${shown.onMap} path segments on the map`);
        if (route.best.length > 2) relayed++;
      }
    }
    assert(relayed > 0, "the lab's WAN should make some best paths relayed");
    // The lab's detour: Frankfurt -> Singapore goes through London.
    await page.selectOption("#from", "1");
    await page.selectOption("#to", "5");
    const api15 = (await getJson("/v1/mesh")).body.routes.find((r) => r.edge === 1).routes.find((r) => r.dest === 5);
    const best = await page.getAttribute("#path-best", "data-path");
    assert(best === api15.best.join(","), `1->5: page ${best}, API now ${api15.best}`);
    assert(api15.best.length > 2, `1->5 is ${api15.best}: expected a relay around the slow direct link`);
    const verdict = await page.textContent("#path .verdict");
    assert(/shorter/.test(verdict), `verdict: ${verdict}`);
    await shot("04-path-fra-sin");
  });

  await check("a link's recent history is charted", async () => {
    await page.click('#matrix td[data-from="1"][data-to="5"]');
    // A line needs two samples less than 2.5 intervals apart (a longer gap
    // is drawn as a break). The single-process debug lab on a busy 2-core
    // machine can delay a sample past that, so wait for the line as the
    // page refreshes, and say what the page and the samples were if it never
    // comes. "attached", not Playwright's default "visible": a steady RTT
    // draws a flat line, whose bounding box has no height and which
    // Playwright would never call visible.
    try {
      await page.waitForSelector('#chart[data-link="1-5"] polyline.rtt', { state: "attached", timeout: 20000 });
    } catch (e) {
      const shown = await page.$eval("#chart", (c) => ({ link: c.dataset.link, samples: c.dataset.samples, text: c.querySelector("text.empty")?.textContent }));
      const h = (await getJson("/v1/links/history?from=1&to=5")).body;
      const gaps = (h.samples || []).slice(1).map((s, i) => s.t_ms - h.samples[i].t_ms);
      throw new Error(`no RTT line: the chart shows link ${shown.link} (${shown.samples} samples, ${JSON.stringify(shown.text)}); ` +
        `the API has ${(h.samples || []).length} samples, gaps ${gaps.join(",")} ms, interval ${h.interval_ms} ms`);
    }
    const title = await page.textContent("#history-title");
    assert(/1 fra → 5 sin/.test(title), `title ${title}`);
    const h = (await getJson("/v1/links/history?from=1&to=5")).body;
    assert(h.tracked && h.samples.length >= 2, `history ${JSON.stringify(h).slice(0, 200)}`);
    const last = h.samples[h.samples.length - 1];
    assert(last.rtt_ms > 250, `1->5 RTT ${last.rtt_ms} ms: the detour should show`);
    assert((await getJson("/v1/links/history?from=1&to=5", null)).status === 401, "history without a token");
    await shot("05-history");
  });

  await check("a killed edge turns to down", async () => {
    const t = Date.now();
    L.send("kill 3");
    await L.waitLine(/^killed 3/, 10000);
    await page.waitForSelector('#map [data-edge-id="3"][data-status="down"]', { timeout: 20000 });
    const took = Date.now() - t;
    console.log(`     edge 3 shown down ${took} ms after the kill (lease TTL 3 s + poll 2 s)`);
    const others = await page.$$eval("#map [data-edge-id]", (gs) => gs.filter((g) => g.dataset.edgeId !== "3").map((g) => g.dataset.status));
    assert(others.length === 5 && others.every((s) => s === "serving"), `others: ${others}`);
    const label = await page.textContent("#map text.label.down");
    assert(/3 jfk \(down\)/.test(label), `label ${label}`);
    const rowDown = await page.$eval('#matrix tr[data-row="3"] th', (th) => th.classList.contains("down"));
    assert(rowDown, "matrix row 3 not marked down");
    const mesh = (await getJson("/v1/mesh")).body;
    assert(mesh.gone.some((g) => g.edge.id === 3 && g.status === "down"), "API gone list lacks edge 3");
    assert(!mesh.edges.some((e) => e.edge.id === 3), "edge 3 still registered");
    const summary = await page.textContent("#summary");
    assert(/1 down/.test(summary), `summary: ${summary}`);
    await shot("06-edge-killed");
  });

  await check("a controller that stops answering makes the page stale, and it recovers", async () => {
    phase = "controller-unreachable";
    await page.route("**/v1/mesh", (r) => r.abort("connectionrefused"));
    await page.waitForSelector('#freshness[data-state="stale"]', { timeout: 15000 });
    assert(await page.evaluate(() => document.body.classList.contains("stale")), "body not marked stale");
    const banner = await page.textContent("#banner");
    assert(/Stale/.test(banner), `banner: ${banner}`);
    await shot("07-stale");
    await page.unroute("**/v1/mesh");
    await page.waitForSelector('#freshness[data-state="live"]', { timeout: 10000 });
    assert(await page.evaluate(() => !document.body.classList.contains("stale")), "still stale");
    phase = "after";
  });

  await check("no console errors, no failed requests and nothing fetched beyond the controller", async () => {
    const expected = (p) =>
      (p.phase === "wrong-token" && /401|Unauthorized/.test(p.what)) ||
      (p.phase === "controller-unreachable" && /\/v1\/(mesh|links)|ERR_CONNECTION_REFUSED|ERR_FAILED/.test(p.what));
    const bad = problems.filter((p) => !expected(p));
    assert(bad.length === 0, `unexpected: ${JSON.stringify(bad, null, 1)}`);
    assert(foreign.length === 0, `requests beyond the controller: ${foreign}`);
  });
} catch (e) {
  failures.push(`setup: ${e.message}`);
  console.log(`FAIL setup: ${e.stack || e}`);
} finally {
  if (browser) await browser.close().catch(() => {});
  L.send("quit");
  const done = await Promise.race([L.exited, sleep(10000).then(() => null)]);
  if (!done) L.lab.kill("SIGKILL");
}

console.log(`\nscreenshots in ${SHOTS}; took ${elapsed()}`);
console.log(`dashboard: ${passed} passed, ${failures.length} failed`);
process.exit(failures.length ? 1 : 0);
