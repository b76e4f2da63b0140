// RTN path-quality dashboard. Vanilla JavaScript, no build step, no network
// beyond this controller's own API (the page's Content-Security-Policy
// enforces that). Data: GET /v1/mesh every POLL_MS, and
// GET /v1/links/history for the selected link, both with the operator's
// bearer token from session storage.
"use strict";

(() => {
  const POLL_MS = 2000;
  // The page is stale when its last successful update is older than this
  // (three polls missed).
  const STALE_AFTER_MS = 3 * POLL_MS + 500;
  const REQUEST_TIMEOUT_MS = 4000;
  const TOKEN_KEY = "rtn.dashboard.token";
  const SVG = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);

  const state = {
    token: null,
    mesh: null,
    receivedAt: 0, // Date.now() when `mesh` arrived
    lastOkAt: 0,
    lastError: null,
    metric: "rtt",
    from: null,
    to: null,
    link: null, // {from, to}: the link whose history is shown
    history: null,
    historyKey: null,
    pollTimer: null,
    polling: false,
  };

  // ---------------------------------------------------------------- model

  // Edges: registered ones (serving/draining, reachable or not) and the
  // recently gone (down), by id.
  function model(mesh) {
    const edges = new Map();
    for (const e of mesh.edges) {
      const r = e.edge;
      edges.set(r.id, {
        id: r.id, region: r.region, city: r.city, cityName: e.city_name || null,
        lat: r.lat, lon: r.lon, status: e.status,
        unreachable: e.status !== "down" && e.reachable === false,
        load: e.load ? e.load.load : null, sessions: e.load ? e.load.sessions : null,
        record: r,
      });
    }
    for (const g of mesh.gone || []) {
      const r = g.edge;
      if (edges.has(r.id)) continue;
      edges.set(r.id, {
        id: r.id, region: r.region, city: r.city, cityName: g.city_name || null,
        lat: r.lat, lon: r.lon, status: "down", unreachable: false,
        goneAt: g.gone_at_ms, load: null, sessions: null, record: r,
      });
    }
    const reports = new Map((mesh.probe_reports || []).map((p) => [p.from, p]));
    const links = new Map();
    for (const l of mesh.links) {
      const rep = reports.get(l.from);
      links.set(key(l.from, l.to), {
        ...l,
        stale: rep ? rep.stale : false,
        ageMs: rep ? rep.age_ms : null,
      });
    }
    const routes = new Map();
    for (const rec of mesh.routes) {
      for (const r of rec.routes) routes.set(key(rec.edge, r.dest), { ...r, record: rec });
    }
    const ids = [...edges.keys()].sort((a, b) => a - b);
    return { edges, ids, links, routes };
  }

  const key = (a, b) => `${a}>${b}`;

  // A link's figures as measured by `a` (or, when `a` does not probe `b`,
  // by `b` in the other direction).
  function measured(m, a, b) {
    const l = m.links.get(key(a, b));
    if (l) return { link: l, reverse: false };
    const r = m.links.get(key(b, a));
    if (r) return { link: r, reverse: true };
    return null;
  }

  // Quality class of a link from a simplified ITU-T G.107 E-model: effective
  // latency = RTT/2 + 2 x jitter + 10 ms; R = 93.2 - latency/40 (or
  // - (latency - 120)/10 past 160 ms) - 2.5 per % of loss.
  // R >= 80 good, >= 70 fair, >= 50 poor, below bad.
  function rScore(l) {
    const eff = l.rtt_ms / 2 + 2 * l.jitter_ms + 10;
    let r = eff < 160 ? 93.2 - eff / 40 : 93.2 - (eff - 120) / 10;
    r -= 2.5 * (l.loss * 100);
    return Math.max(0, Math.min(100, r));
  }
  function quality(l) {
    if (!l) return "none";
    if (!l.alive) return "dead";
    if (l.stale) return "stale";
    const r = rScore(l);
    return r >= 80 ? "good" : r >= 70 ? "fair" : r >= 50 ? "poor" : "bad";
  }
  const QUALITY_RANK = { none: 0, good: 1, fair: 2, stale: 3, poor: 4, bad: 5, dead: 6 };

  // ------------------------------------------------------------ formatting

  const fmtMs = (v) => (v == null ? "–" : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
  const fmtLoss = (v) => (v == null ? "–" : v === 0 ? "0%" : v < 0.001 ? "<0.1%" : `${(v * 100).toFixed(1)}%`);
  const fmtAge = (ms) => (ms == null ? "–" : ms < 1500 ? `${Math.max(0, Math.round(ms / 100) / 10)} s` : ms < 120000 ? `${Math.round(ms / 1000)} s` : `${Math.round(ms / 60000)} min`);
  const fmtTime = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });
  function edgeName(m, id) {
    const e = m.edges.get(id);
    return e ? `${id} ${e.city || "?"}` : `${id}`;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c == null) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "class") node.setAttribute("class", v);
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, String(v));
    }
    for (const c of children.flat()) if (c != null) node.append(c);
    return node;
  }

  // ------------------------------------------------------------------ API

  async function api(path) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), REQUEST_TIMEOUT_MS);
    try {
      const resp = await fetch(path, {
        headers: { Authorization: `Bearer ${state.token}` },
        cache: "no-store",
        signal: ctl.signal,
      });
      let body = null;
      try { body = await resp.json(); } catch (_) { /* not JSON */ }
      if (!resp.ok) {
        const err = new Error((body && body.error && body.error.message) || `HTTP ${resp.status}`);
        err.status = resp.status;
        err.code = body && body.error && body.error.code;
        throw err;
      }
      return body;
    } catch (e) {
      if (e.name === "AbortError") throw new Error(`no answer within ${REQUEST_TIMEOUT_MS / 1000} s`);
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  async function poll() {
    state.pollTimer = null;
    if (!state.token || state.polling) return;
    state.polling = true;
    try {
      const mesh = await api("/v1/mesh");
      state.mesh = mesh;
      state.receivedAt = Date.now();
      state.lastOkAt = state.receivedAt;
      state.lastError = null;
      render();
    } catch (e) {
      if (e.status === 401 || e.status === 403) {
        signOut(e.status === 401 ? "The controller refused this token." : e.message);
        return;
      }
      state.lastError = e.message || String(e);
      renderFreshness();
    } finally {
      state.polling = false;
    }
    if (state.link) pollHistory();
    schedule();
  }

  function schedule() {
    if (state.token && !state.pollTimer) state.pollTimer = setTimeout(poll, POLL_MS);
  }

  async function pollHistory() {
    const link = state.link;
    if (!link) return;
    try {
      const h = await api(`/v1/links/history?from=${link.from}&to=${link.to}`);
      if (state.link && state.link.from === link.from && state.link.to === link.to) {
        state.history = h;
        state.historyKey = key(link.from, link.to);
        renderHistory();
      }
    } catch (e) {
      // The mesh poll reports errors; the chart keeps its last data.
    }
  }

  // --------------------------------------------------------------- render

  function render() {
    const mesh = state.mesh;
    if (!mesh) return;
    const m = model(mesh);
    state.model = m;
    if (state.from != null && !m.edges.has(state.from)) state.from = null;
    if (state.to != null && !m.edges.has(state.to)) state.to = null;
    if (state.from == null || state.to == null) pickDefaultPair(m);
    if (!state.link && state.from != null && state.to != null) {
      const d = measured(m, state.from, state.to);
      if (d) {
        state.link = { from: d.link.from, to: d.link.to };
        setTimeout(pollHistory, 0);
      }
    }
    renderHeader(mesh, m);
    renderMap(m);
    renderMatrix(m);
    renderSelects(m);
    renderPath(m);
    renderFreshness();
    renderHistory();
    document.body.dataset.meshAt = String(mesh.now_ms);
  }

  // A pair whose published path is relayed if there is one (the interesting
  // case), else the first two edges.
  function pickDefaultPair(m) {
    for (const [k, r] of m.routes) {
      if (r.best.length > 2 && m.edges.get(r.best[0]) && m.edges.get(r.dest)) {
        state.from = r.best[0];
        state.to = r.dest;
        return;
      }
    }
    const live = m.ids.filter((id) => m.edges.get(id).status !== "down");
    if (live.length >= 2) {
      state.from = live[0];
      state.to = live[1];
    }
  }

  function renderHeader(mesh, m) {
    $("controller").textContent = `region ${mesh.region} · ${mesh.leader ? "leader" : "standby"}`;
    $("store").hidden = !!mesh.store_connected;
    $("store").title = "The controller's watches on the store are not all established: it serves its last view of the mesh.";
    const all = [...m.edges.values()];
    const count = (s) => all.filter((e) => e.status === s).length;
    const unreachable = all.filter((e) => e.unreachable).length;
    const links = [...m.links.values()];
    const dead = links.filter((l) => !l.alive).length;
    const stale = links.filter((l) => l.stale).length;
    $("summary").textContent =
      `${all.length} edges: ${count("serving")} serving, ${count("draining")} draining, ${count("down")} down` +
      (unreachable ? `, ${unreachable} unreachable` : "") +
      ` · ${links.length} links: ${dead} dead, ${stale} stale`;
  }

  function renderFreshness() {
    const pill = $("freshness");
    const banner = $("banner");
    if (!state.lastOkAt) {
      pill.dataset.state = state.lastError ? "stale" : "waiting";
      pill.textContent = state.lastError ? "no data" : "waiting for data";
      banner.hidden = !state.lastError;
      banner.textContent = state.lastError ? `Cannot read /v1/mesh: ${state.lastError}` : "";
      document.body.classList.toggle("stale", false);
      return;
    }
    const age = Date.now() - state.lastOkAt;
    const stale = age > STALE_AFTER_MS;
    pill.dataset.state = stale ? "stale" : "live";
    const asOf = state.mesh ? ` (data as of ${fmtTime(state.mesh.now_ms)})` : "";
    pill.textContent = stale ? `STALE · last update ${fmtAge(age)} ago` : `live · updated ${fmtAge(age)} ago`;
    pill.title = `Last successful update ${fmtAge(age)} ago${asOf}; polling every ${POLL_MS / 1000} s.`;
    document.body.classList.toggle("stale", stale);
    banner.hidden = !stale;
    banner.textContent = stale
      ? `Stale: no update from the controller for ${fmtAge(age)}${state.lastError ? ` (${state.lastError})` : ""}. What you see is as of ${fmtTime(state.lastOkAt)}.`
      : "";
  }

  // ------------------------------------------------------------------ map

  const project = (lat, lon) => [lon + 180, 90 - lat];

  function mapBox(m, width, height) {
    const pts = [...m.edges.values()].map((e) => project(e.lat, e.lon));
    let [x0, y0, x1, y1] = [0, 0, 360, 180];
    if (pts.length) {
      // More room on the right, where the labels are.
      x0 = Math.min(...pts.map((p) => p[0])) - 12;
      x1 = Math.max(...pts.map((p) => p[0])) + 26;
      y0 = Math.min(...pts.map((p) => p[1])) - 10;
      y1 = Math.max(...pts.map((p) => p[1])) + 10;
    }
    // At least a continent's width, the panel's aspect ratio, within the world.
    let w = Math.max(x1 - x0, 40);
    let h = Math.max(y1 - y0, 20);
    const aspect = width / Math.max(height, 1);
    if (w / h < aspect) w = h * aspect; else h = w / aspect;
    if (w > 360) { w = 360; h = w / aspect; }
    if (h > 180) { h = 180; w = Math.min(360, h * aspect); }
    let cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
    cx = Math.min(Math.max(cx, w / 2), 360 - w / 2);
    cy = Math.min(Math.max(cy, h / 2), 180 - h / 2);
    return { x: cx - w / 2, y: cy - h / 2, w, h };
  }

  // A straight line on the map, taking the short way across the
  // antimeridian (drawn twice, once from each side).
  function segments(a, b) {
    const [ax, ay] = a, [bx, by] = b;
    if (Math.abs(ax - bx) <= 180) return [[a, b]];
    const shift = ax < bx ? -360 : 360;
    return [[a, [bx + shift, by]], [[ax - shift, ay], b]];
  }

  function renderMap(m) {
    const map = $("map");
    const width = map.clientWidth || 800;
    const height = map.clientHeight || 400;
    const box = mapBox(m, width, height);
    const k = box.w / width; // viewBox units per screen pixel
    map.setAttribute("viewBox", `${box.x} ${box.y} ${box.w} ${box.h}`);
    map.setAttribute("preserveAspectRatio", "xMidYMid meet");
    map.replaceChildren();
    map.append(svg("rect", { x: -360, y: -180, width: 1080, height: 540, fill: "#0c1420" }));
    let grid = "";
    for (let lon = -180; lon <= 180; lon += 30) grid += `M${lon + 180} 0V180`;
    for (let lat = -60; lat <= 60; lat += 30) grid += `M0 ${90 - lat}H360`;
    map.append(svg("path", { class: "graticule", d: grid }));
    if (window.RTN_WORLD) map.append(svg("path", { class: "land", d: window.RTN_WORLD }));

    // Links: one line per pair, coloured by the worse direction.
    const pairs = new Map();
    for (const l of m.links.values()) {
      if (!m.edges.has(l.from) || !m.edges.has(l.to)) continue;
      const [a, b] = l.from < l.to ? [l.from, l.to] : [l.to, l.from];
      const p = pairs.get(key(a, b)) || { a, b, dirs: [] };
      p.dirs.push(l);
      pairs.set(key(a, b), p);
    }
    const gLinks = svg("g", { id: "map-links" });
    for (const p of pairs.values()) {
      const q = p.dirs.map(quality).sort((x, y) => QUALITY_RANK[y] - QUALITY_RANK[x])[0];
      const ea = m.edges.get(p.a), eb = m.edges.get(p.b);
      const title = p.dirs
        .map((l) => `${edgeName(m, l.from)} → ${edgeName(m, l.to)}: RTT ${fmtMs(l.rtt_ms)} ms, jitter ${fmtMs(l.jitter_ms)} ms, loss ${fmtLoss(l.loss)}${l.alive ? "" : ", DEAD"}${l.stale ? ", stale" : ""}`)
        .join("\n");
      const selected = state.link && ((state.link.from === p.a && state.link.to === p.b) || (state.link.from === p.b && state.link.to === p.a));
      for (const [s, t] of segments(project(ea.lat, ea.lon), project(eb.lat, eb.lon))) {
        gLinks.append(svg("line", {
          class: `link q-${q}${selected ? " selected" : ""}`,
          x1: s[0], y1: s[1], x2: t[0], y2: t[1],
          "data-pair": `${p.a}-${p.b}`, "data-quality": q,
          onclick: () => selectLink(p.dirs[0].from, p.dirs[0].to),
        }, svg("title", { text: title })));
      }
    }
    map.append(gLinks);

    // The path view's chosen path and backup.
    const r = state.from != null && state.to != null ? m.routes.get(key(state.from, state.to)) : null;
    if (r) {
      for (const [cls, path] of [["backup", r.backup], ["best", r.best]]) {
        if (!path) continue;
        for (let i = 0; i + 1 < path.length; i++) {
          const ea = m.edges.get(path[i]), eb = m.edges.get(path[i + 1]);
          if (!ea || !eb) continue;
          for (const [s, t] of segments(project(ea.lat, ea.lon), project(eb.lat, eb.lon))) {
            map.append(svg("line", { class: `route ${cls}`, x1: s[0], y1: s[1], x2: t[0], y2: t[1] }));
          }
        }
      }
    }

    // Edges on top, with labels; spread edges in the same city a little.
    const gEdges = svg("g", { id: "map-edges" });
    const seen = new Map();
    const radius = 6.5 * k;
    const placed = []; // label boxes so far, in viewBox units
    const labels = [];
    for (const id of m.ids) {
      const e = m.edges.get(id);
      let [x, y] = project(e.lat, e.lon);
      const spot = `${x.toFixed(1)},${y.toFixed(1)}`;
      const n = seen.get(spot) || 0;
      seen.set(spot, n + 1);
      if (n) { x += Math.cos(n * 2.1) * radius * 2.2; y += Math.sin(n * 2.1) * radius * 2.2; }
      const cls = `edge ${e.unreachable ? "unreachable" : e.status}${id === state.from || id === state.to ? " picked" : ""}`;
      const status = e.unreachable ? `${e.status}, unreachable: every prober reports it dead` : e.status;
      const title = `edge ${id} · ${e.cityName || e.city} (${e.city}) · region ${e.region}\nstatus: ${status}` +
        (e.goneAt ? `\nleft the registry at ${fmtTime(e.goneAt)}` : "") +
        (e.load != null ? `\nload ${(e.load * 100).toFixed(0)}% (${e.sessions} sessions)` : "");
      const g = svg("g", {
        class: cls, "data-edge-id": id, "data-status": e.status,
        "data-unreachable": e.unreachable ? "true" : "false",
        transform: `translate(${x} ${y})`,
        onclick: () => pickEdge(id),
      }, svg("title", { text: title }), svg("circle", { r: radius }));
      if (e.status === "down") {
        const c = radius * 0.55;
        g.append(svg("path", { class: "cross", d: `M${-c} ${-c}L${c} ${c}M${-c} ${c}L${c} ${-c}` }));
      }
      gEdges.append(g);
      const text = `${id} ${e.city}${e.status === "down" ? " (down)" : e.status === "draining" ? " (draining)" : e.unreachable ? " (unreachable)" : ""}`;
      // The first of four spots around the edge that overlaps no label
      // placed before (estimated width: 7 px per character).
      const w = text.length * 7 * k, hgt = 13 * k, gap = radius * 1.3;
      const spots = [[x + gap, y - gap], [x + gap, y + gap + hgt], [x - gap - w, y - gap], [x - gap - w, y + gap + hgt]];
      const free = (sx, sy) => placed.every((b) => sx + w < b.x || sx > b.x + b.w || sy < b.y - b.h || sy - hgt > b.y);
      const [lx, ly] = spots.find(([sx, sy]) => free(sx, sy)) || spots[0];
      placed.push({ x: lx, y: ly, w, h: hgt });
      labels.push(svg("text", {
        class: `label${e.status === "down" ? " down" : ""}`, x: lx, y: ly,
        "font-size": 12 * k, "stroke-width": 3 * k, text,
      }));
    }
    map.append(gEdges);
    map.append(svg("g", { id: "map-labels" }, labels));
  }

  // Clicks on the map alternate: "from", then "to".
  function pickEdge(id) {
    if (state.pickNext !== "to") {
      state.from = id;
      if (state.to === id) state.to = null;
      state.pickNext = "to";
    } else if (id !== state.from) {
      state.to = id;
      state.pickNext = "from";
    }
    render();
  }

  // --------------------------------------------------------------- matrix

  const METRICS = {
    rtt: { label: "RTT", get: (l) => l.rtt_ms, fmt: (v) => fmtMs(v), max: 300, unit: "ms" },
    jitter: { label: "Jitter", get: (l) => l.jitter_ms, fmt: (v) => fmtMs(v), max: 20, unit: "ms" },
    loss: { label: "Loss", get: (l) => l.loss, fmt: (v) => fmtLoss(v), max: 0.1, unit: "" },
  };

  // Green (0) to red (max); square root so the low end, where most links
  // are, is spread out.
  function heat(v, max) {
    const t = Math.sqrt(Math.min(Math.max(v / max, 0), 1));
    const hue = 130 * (1 - t);
    return `hsl(${hue.toFixed(0)} 65% ${(38 + 7 * t).toFixed(0)}%)`;
  }

  function renderMatrix(m) {
    const metric = METRICS[state.metric];
    const table = $("matrix");
    const onPath = new Set();
    const r = state.from != null && state.to != null ? m.routes.get(key(state.from, state.to)) : null;
    if (r) for (let i = 0; i + 1 < r.best.length; i++) onPath.add(key(r.best[i], r.best[i + 1]));
    const head = el("tr", {}, el("th", { class: "corner", text: "from \\ to" }),
      m.ids.map((id) => {
        const e = m.edges.get(id);
        return el("th", { class: `col${e.status === "down" ? " down" : ""}`, scope: "col", title: `${e.cityName || e.city}, ${e.status}` }, `${id}`, el("br"), e.city);
      }));
    const rows = m.ids.map((from) => {
      const e = m.edges.get(from);
      return el("tr", { "data-row": from },
        el("th", { class: `row${e.status === "down" ? " down" : ""}`, scope: "row", title: `${e.cityName || e.city}, ${e.status}` }, `${from} ${e.city}`),
        m.ids.map((to) => {
          if (from === to) return el("td", { class: "self", text: "·" });
          const l = m.links.get(key(from, to));
          if (!l) return el("td", { class: "none", "data-from": from, "data-to": to, "data-probed": "false", title: `${edgeName(m, from)} does not probe ${edgeName(m, to)}`, text: "" });
          const v = metric.get(l);
          const cls = ["cell"];
          if (!l.alive) cls.push("dead");
          if (l.stale) cls.push("stale");
          if (state.link && state.link.from === from && state.link.to === to) cls.push("selected");
          if (onPath.has(key(from, to))) cls.push("onpath");
          const td = el("td", {
            class: cls.join(" "),
            "data-from": from, "data-to": to, "data-probed": "true",
            "data-rtt": l.rtt_ms, "data-jitter": l.jitter_ms, "data-loss": l.loss,
            "data-alive": l.alive ? "true" : "false", "data-stale": l.stale ? "true" : "false",
            title: `${edgeName(m, from)} → ${edgeName(m, to)}\nRTT ${fmtMs(l.rtt_ms)} ms · jitter ${fmtMs(l.jitter_ms)} ms · loss ${fmtLoss(l.loss)} · ${l.samples} samples` +
              `${l.alive ? "" : "\nDEAD: no answer to recent probes (last figures shown)"}` +
              `${l.stale ? `\nSTALE: ${edgeName(m, from)} last reported ${fmtAge(l.ageMs)} ago` : ""}`,
            onclick: () => selectLink(from, to),
            text: l.alive ? metric.fmt(v) : `✕ ${metric.fmt(v)}`,
          });
          if (l.alive) td.style.background = heat(v, metric.max);
          return td;
        }));
    });
    table.replaceChildren(el("thead", {}, head), el("tbody", {}, rows));
    $("scale-min").textContent = state.metric === "loss" ? "0%" : "0 ms";
    $("scale-max").textContent = state.metric === "loss" ? "≥10%" : `≥${metric.max} ms`;
  }

  function selectLink(from, to) {
    state.link = { from, to };
    state.history = null;
    render();
    pollHistory();
  }

  // ----------------------------------------------------------------- path

  function renderSelects(m) {
    for (const [id, value] of [["from", state.from], ["to", state.to]]) {
      const select = $(id);
      const byCity = new Map();
      for (const eid of m.ids) {
        const e = m.edges.get(eid);
        const city = `${e.cityName || e.city} (${e.city})`;
        if (!byCity.has(city)) byCity.set(city, []);
        byCity.get(city).push(e);
      }
      const groups = [...byCity.entries()].sort((a, b) => a[0].localeCompare(b[0])).map(([city, es]) =>
        el("optgroup", { label: city }, es.map((e) =>
          el("option", { value: e.id, selected: e.id === value }, `edge ${e.id} · ${e.city} · ${e.region}${e.status === "down" ? " (down)" : e.status === "draining" ? " (draining)" : ""}`))));
      const signature = JSON.stringify([...m.ids].map((i) => [i, m.edges.get(i).status]));
      if (select.dataset.signature !== signature) {
        select.replaceChildren(el("option", { value: "", disabled: true, selected: value == null }, "pick an edge"), ...groups);
        select.dataset.signature = signature;
      }
      select.value = value == null ? "" : String(value);
    }
  }

  function pathTotals(m, path) {
    let rtt = 0, jitter = 0, deliver = 1, worst = "good", missing = false;
    const hops = [];
    for (let i = 0; i + 1 < path.length; i++) {
      const got = measured(m, path[i], path[i + 1]);
      hops.push({ a: path[i], b: path[i + 1], got });
      if (!got) { missing = true; continue; }
      const l = got.link;
      rtt += l.rtt_ms;
      jitter += l.jitter_ms;
      deliver *= 1 - l.loss;
      const q = quality(l);
      if (QUALITY_RANK[q] > QUALITY_RANK[worst]) worst = q;
    }
    const loss = 1 - deliver;
    const q = missing ? "none" : worst === "dead" || worst === "stale" ? worst : quality({ rtt_ms: rtt, jitter_ms: jitter, loss, alive: true });
    return { rtt, jitter, loss, hops, missing, quality: q };
  }

  function hopTable(m, hops) {
    return el("table", {},
      el("thead", {}, el("tr", {}, ["hop", "link", "RTT ms", "jitter ms", "loss", "state", "reported"].map((h) => el("th", { text: h })))),
      el("tbody", {}, hops.map((h, i) => {
        const l = h.got && h.got.link;
        const q = quality(l);
        const pick = l ? () => selectLink(l.from, l.to) : null;
        return el("tr", { class: "hop", "data-hop": `${h.a}-${h.b}`, onclick: pick, title: l ? "show this link's history" : "" },
          el("td", { text: `${i + 1}` }),
          el("td", {}, `${edgeName(m, h.a)} → ${edgeName(m, h.b)}`, h.got && h.got.reverse ? el("span", { class: "muted", text: " (measured the other way)" }) : null),
          el("td", { text: l ? fmtMs(l.rtt_ms) : "–" }),
          el("td", { text: l ? fmtMs(l.jitter_ms) : "–" }),
          el("td", { text: l ? fmtLoss(l.loss) : "–" }),
          el("td", {}, el("span", { class: `q q-${q}`, text: l ? (l.alive ? q : "dead") : "not probed" })),
          el("td", { text: l && l.ageMs != null ? `${fmtAge(l.ageMs)} ago` : "–" }));
      })));
  }

  function routeBlock(m, cls, title, path, extra) {
    const t = pathTotals(m, path);
    return el("div", { class: `route-block ${cls}`, id: `path-${cls}`, "data-path": path.join(",") },
      el("div", { class: "route-head" },
        el("h3", { text: title }),
        el("span", { class: "hops-inline", text: path.map((id) => edgeName(m, id)).join(" → ") }),
        el("span", { class: `q q-${t.quality}`, text: t.quality === "none" ? "unmeasured hop" : t.quality }),
        el("span", { class: "totals", text: `RTT ${fmtMs(t.rtt)} ms · jitter ${fmtMs(t.jitter)} ms · loss ${fmtLoss(t.loss)} · ${path.length - 1} hop${path.length > 2 ? "s" : ""}` }),
        extra),
      hopTable(m, t.hops));
  }

  function renderPath(m) {
    const box = $("path");
    const { from, to } = state;
    if (from == null || to == null) {
      box.replaceChildren(el("p", { class: "note", text: "Pick two edges (or click them on the map)." }));
      box.dataset.state = "empty";
      return;
    }
    if (from === to) {
      box.replaceChildren(el("p", { class: "note", text: "Pick two different edges." }));
      box.dataset.state = "same";
      return;
    }
    const parts = [];
    const r = m.routes.get(key(from, to));
    const ef = m.edges.get(from), et = m.edges.get(to);
    if (ef && ef.status === "down") parts.push(el("p", { class: "note", text: `Edge ${edgeName(m, from)} is down: it forwards nothing.` }));
    if (et && et.status === "down") parts.push(el("p", { class: "note", text: `Edge ${edgeName(m, to)} is down.` }));
    if (r) {
      const rec = r.record;
      parts.push(routeBlock(m, "best", "Chosen path", r.best,
        el("span", { class: "muted small", text: `published by ${rec.controller} at ${fmtTime(rec.computed_at_ms)}` })));
      if (r.backup) parts.push(routeBlock(m, "backup", "Backup path", r.backup, el("span", { class: "muted small", text: "avoids the chosen path's first hop" })));
      else parts.push(el("p", { class: "note", id: "path-backup", "data-path": "", text: "No backup path (nothing avoids the first hop)." }));
    } else {
      parts.push(el("p", { class: "note", id: "path-best", "data-path": "", text: `No route published from ${edgeName(m, from)} to ${edgeName(m, to)} (the leader of region ${ef ? ef.region : "?"} has not computed one, or an end is gone).` }));
    }
    const direct = measured(m, from, to);
    const d = direct ? direct.link : null;
    const dq = quality(d);
    parts.push(el("div", { class: "route-block direct", id: "path-direct", "data-path": `${from},${to}` },
      el("div", { class: "route-head" },
        el("h3", { text: "Direct link" }),
        el("span", { class: "hops-inline", text: `${edgeName(m, from)} → ${edgeName(m, to)}` }),
        el("span", { class: `q q-${dq}`, text: d ? (d.alive ? dq : "dead") : "not probed" }),
        el("span", { class: "totals", text: d ? `RTT ${fmtMs(d.rtt_ms)} ms · jitter ${fmtMs(d.jitter_ms)} ms · loss ${fmtLoss(d.loss)}${direct.reverse ? " (measured the other way)" : ""}` : "no probe between these edges" }))));
    if (r && d && d.alive && r.best.length > 2) {
      const t = pathTotals(m, r.best);
      const gain = d.rtt_ms - t.rtt;
      parts.push(el("div", { class: "verdict", text: gain >= 0
        ? `The relayed path is ${fmtMs(gain)} ms shorter in RTT than the direct link${d.loss > t.loss ? ` and loses less (${fmtLoss(t.loss)} vs ${fmtLoss(d.loss)})` : ""}.`
        : `The relayed path is ${fmtMs(-gain)} ms longer in RTT than the direct link; the controller prefers it for its loss or jitter (cost = RTT + 2 × jitter + loss penalty), or hysteresis is holding it.` }));
    }
    box.replaceChildren(...parts);
    box.dataset.state = r ? "route" : "no-route";
  }

  // -------------------------------------------------------------- history

  // The smallest of 1, 2, 2.5, 5 x 10^n at or above v.
  function niceCeil(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function renderHistory() {
    const chart = $("chart");
    const title = $("history-title");
    const m = state.model;
    chart.replaceChildren();
    const W = chart.clientWidth || 500, H = chart.clientHeight || 200;
    chart.setAttribute("viewBox", `0 0 ${W} ${H}`);
    if (!state.link || !m) {
      chart.append(svg("text", { class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle", text: "No link selected" }));
      return;
    }
    const { from, to } = state.link;
    const h = state.historyKey === key(from, to) ? state.history : null;
    title.textContent = `${edgeName(m, from)} → ${edgeName(m, to)}, as probed by ${edgeName(m, from)}`;
    chart.dataset.link = `${from}-${to}`;
    if (!h) {
      chart.append(svg("text", { class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle", text: "loading…" }));
      return;
    }
    if (!h.tracked || !h.samples.length) {
      chart.append(svg("text", { class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle",
        text: h.tracked ? "no samples yet" : "not tracked (never seen, or beyond the controller's cap of links)" }));
      chart.dataset.samples = "0";
      return;
    }
    chart.dataset.samples = String(h.samples.length);
    const L = 44, R = 44, T = 10, B = 22;
    const now = state.mesh ? state.mesh.now_ms + (Date.now() - state.receivedAt) : h.samples[h.samples.length - 1].t_ms;
    // The whole window once there is that much history; until then what
    // there is (at least two minutes).
    const span = Math.min(h.window_ms, Math.max(120000, now - h.samples[0].t_ms + h.interval_ms));
    const t0 = now - span;
    const x = (t) => L + ((t - t0) / span) * (W - L - R);
    const maxRtt = niceCeil(Math.max(1, ...h.samples.map((s) => s.rtt_ms + s.jitter_ms)) * 1.05);
    const maxLoss = niceCeil(Math.max(0.02, ...h.samples.map((s) => s.loss)) * 1.05);
    const y = (v) => T + (1 - v / maxRtt) * (H - T - B);
    const yl = (v) => T + (1 - v / maxLoss) * (H - T - B);
    // Grid and axes.
    for (let i = 0; i <= 5; i++) {
      const v = (maxRtt / 5) * i;
      chart.append(svg("line", { class: "gridline", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      chart.append(svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", text: String(Number(v.toPrecision(3))) }));
      chart.append(svg("text", { x: W - R + 4, y: yl((maxLoss / 4) * i) + 4, text: fmtLoss((maxLoss / 5) * i) }));
    }
    const step = span <= 180000 ? 30000 : span <= 360000 ? 60000 : 120000;
    for (let ago = 0; ago <= span; ago += step) {
      const t = now - ago;
      chart.append(svg("line", { class: "gridline", x1: x(t), x2: x(t), y1: T, y2: H - B }));
      chart.append(svg("text", { x: x(t), y: H - 6, "text-anchor": "middle",
        text: ago === 0 ? "now" : ago % 60000 ? `-${ago / 1000} s` : `-${ago / 60000} min` }));
    }
    chart.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
    // Runs of samples without a gap (a gap: more than 2.5 intervals).
    const runs = [];
    let run = [];
    for (const s of h.samples) {
      if (run.length && s.t_ms - run[run.length - 1].t_ms > 2.5 * h.interval_ms) { runs.push(run); run = []; }
      if (s.t_ms >= t0) run.push(s);
    }
    if (run.length) runs.push(run);
    const barW = Math.max(1.5, ((W - L - R) * h.interval_ms) / h.window_ms);
    for (const s of h.samples) {
      if (s.t_ms < t0) continue;
      if (s.loss > 0) chart.append(svg("rect", { class: "loss", x: x(s.t_ms) - barW / 2, width: barW, y: yl(s.loss), height: Math.max(0, H - B - yl(s.loss)) }));
      if (!s.alive) chart.append(svg("rect", { class: "dead", x: x(s.t_ms) - barW / 2, width: barW, y: H - B - 4, height: 4 }));
    }
    for (const r of runs) {
      const upper = r.map((s) => `${x(s.t_ms).toFixed(1)},${y(s.rtt_ms + s.jitter_ms).toFixed(1)}`);
      const lower = r.map((s) => `${x(s.t_ms).toFixed(1)},${y(Math.max(0, s.rtt_ms - s.jitter_ms)).toFixed(1)}`).reverse();
      chart.append(svg("polygon", { class: "jitter", points: [...upper, ...lower].join(" ") }));
      if (r.length === 1) {
        chart.append(svg("circle", { class: "rtt", cx: x(r[0].t_ms), cy: y(r[0].rtt_ms), r: 2 }));
      } else {
        chart.append(svg("polyline", { class: "rtt", points: r.map((s) => `${x(s.t_ms).toFixed(1)},${y(s.rtt_ms).toFixed(1)}`).join(" ") }));
      }
    }
    const last = h.samples[h.samples.length - 1];
    title.textContent += ` · now RTT ${fmtMs(last.rtt_ms)} ms, jitter ${fmtMs(last.jitter_ms)} ms, loss ${fmtLoss(last.loss)}${last.alive ? "" : ", DEAD"} · ${h.samples.length} samples every ${h.interval_ms / 1000} s`;
  }

  // ---------------------------------------------------------------- login

  function signIn(token) {
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    document.body.classList.remove("signed-out");
    $("login").hidden = true;
    if (state.pollTimer) { clearTimeout(state.pollTimer); state.pollTimer = null; }
    poll();
  }

  function signOut(message) {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    if (state.pollTimer) { clearTimeout(state.pollTimer); state.pollTimer = null; }
    document.body.classList.add("signed-out");
    $("login").hidden = false;
    $("login-error").hidden = !message;
    $("login-error").textContent = message || "";
    $("token").value = "";
    $("token").focus();
  }

  function init() {
    // A token in the fragment (never sent to the server, e.g. a link the lab
    // prints) moves to session storage and out of the address bar.
    const frag = new URLSearchParams(location.hash.slice(1));
    if (frag.get("token")) {
      sessionStorage.setItem(TOKEN_KEY, frag.get("token"));
      history.replaceState(null, "", location.pathname + location.search);
    }
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const t = $("token").value.trim();
      if (t) signIn(t);
    });
    $("signout").addEventListener("click", () => signOut(null));
    for (const b of document.querySelectorAll("#metric button")) {
      b.addEventListener("click", () => {
        state.metric = b.dataset.metric;
        for (const o of document.querySelectorAll("#metric button")) o.setAttribute("aria-pressed", String(o === b));
        render();
      });
    }
    $("from").addEventListener("change", (ev) => { state.from = Number(ev.target.value); state.pickNext = "to"; render(); });
    $("to").addEventListener("change", (ev) => { state.to = Number(ev.target.value); state.pickNext = "from"; render(); });
    $("swap").addEventListener("click", () => { [state.from, state.to] = [state.to, state.from]; render(); });
    let resize = null;
    window.addEventListener("resize", () => { clearTimeout(resize); resize = setTimeout(render, 150); });
    setInterval(renderFreshness, 1000);
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) signIn(token); else signOut(null);
  }

  init();
})();
