// ctxscope dashboard: renders each page from its JSON twin and follows /api/events (SSE).
// Charts are plotly figures built by the server; this file only places them and fills tables.
"use strict";
const ctxscope = (() => {
  const state = { clockOffsetMs: 0, latenciesMs: [], lastEvent: null };
  window.ctxscopeState = state;

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  function fmt(value, unit, digits) {
    if (value === undefined || value === null) return "–";
    return Number(value).toPrecision(digits || 3) + (unit ? " " + unit : "");
  }
  // The newest wall time among telemetry channels (the hottest sensor's own may be older).
  function newestWall(channels) {
    return Math.max(0, ...Object.values(channels).map((c) => c.wall_ns || 0));
  }
  function age(ns) {
    if (!ns) return "never";
    const s = (Date.now() + state.clockOffsetMs - ns / 1e6) / 1000;
    if (s < 2) return "now";
    if (s < 120) return Math.round(s) + " s ago";
    if (s < 7200) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }
  function fillRows(tbody, rows) {
    tbody.replaceChildren(...rows.map((cells) => {
      const tr = el("tr");
      for (const c of cells) tr.appendChild(c instanceof Node ? wrapTd(c) : el("td", c));
      return tr;
    }));
  }
  function wrapTd(node) { const td = el("td"); td.appendChild(node); return td; }
  function progressNode(done, total) {
    if (total === null || total === undefined) return el("span", "–");
    const p = el("progress"); p.max = total || 1; p.value = done || 0;
    const span = el("span"); span.appendChild(p); span.appendChild(el("span", ` ${done || 0}/${total}`));
    return span;
  }
  // A run's progress: a bar while it runs; the points it reached once it ended without a finish record.
  function runProgress(r) {
    if (r.state !== "unfinished") return progressNode(r.done, r.total);
    return el("span", r.total === null || r.total === undefined ? "–" : `${r.done || 0}/${r.total}`, "unfinished");
  }
  function runOutcome(r) {
    return r.outcome || (r.state === "unfinished" ? "unfinished (no finish record)" : "running");
  }
  // A telemetry figure: live, or the last value recorded (at `wallNs`) of a device that is not live.
  function showFigure(node, value, unit, live, wallNs) {
    node.textContent = fmt(value, unit) + (live || value === undefined ? "" : " (recorded)");
    node.classList.toggle("not-live", !live);
    node.title = live ? "" : `not live: the last value recorded, ${age(wallNs)}`;
  }
  function link(href, text) { const a = el("a", text); a.href = href; return a; }
  async function getJson(url) {
    const response = await fetch(url, { headers: { accept: "application/json" } });
    if (!response.ok) throw new Error(url + ": " + response.status);
    const body = await response.json();
    if (body.generated_ns) state.clockOffsetMs = body.generated_ns / 1e6 - Date.now();
    return body;
  }
  // Run `fn` at once, then at most once per `ms` while calls keep coming (the last call is never lost).
  function throttled(fn, ms) {
    let last = 0, timer = null;
    return () => {
      if (timer !== null) return;
      const wait = Math.max(0, last + ms - Date.now());
      timer = setTimeout(() => { timer = null; last = Date.now(); fn(); }, wait);
    };
  }
  function noteShown(event) {
    if (!event) return;
    event.shown = true;
    const shownNs = (Date.now() + state.clockOffsetMs) * 1e6;
    state.latenciesMs.push((shownNs - event.arrived_ns) / 1e6);
    if (state.latenciesMs.length > 10000) state.latenciesMs.shift();
    state.lastEvent = event;
  }
  function follow(params, onEvents) {
    const source = new EventSource("/api/events" + (params ? "?" + params : ""));
    const live = document.getElementById("live");
    source.addEventListener("open", () => { live.textContent = "live"; live.classList.add("on"); });
    source.addEventListener("error", () => { live.textContent = "reconnecting…"; live.classList.remove("on"); });
    source.addEventListener("batch", (message) => {
      const batch = JSON.parse(message.data);
      onEvents(batch.events, batch.missed || 0);
    });
    return source;
  }
  function plot(id, figure, container) {
    let div = document.getElementById(id);
    if (!div) {
      div = el("div", null, "chart"); div.id = id;
      container.appendChild(div);
    }
    Plotly.react(div, figure.data, figure.layout, { responsive: true, displaylogo: false });
  }

  // ---------------------------------------------------------------------------------- fleet
  function fleetPage() {
    const body = document.body;
    const devices = new Map();
    function deviceRow(d) {
      const tr = el("tr"); tr.id = "device-" + d.device;
      const cells = {};
      for (const name of ["device", "state", "seen", "power", "temp", "run", "progress", "spool", "host"]) {
        cells[name] = el("td"); tr.appendChild(cells[name]);
      }
      cells.device.appendChild(link("/devices/" + d.device, d.device));
      cells.power.className = "num power"; cells.temp.className = "num temperature";
      devices.set(d.device, { tr, cells, lastSeenNs: d.last_seen_ns });
      return tr;
    }
    function setState(entry, stateName, stale) {
      entry.cells.state.textContent = stateName || "unknown";
      entry.cells.state.className = stale ? "stale" : (stateName || "");
    }
    // What the device's last status said of its spool: records waiting, and any it had to drop.
    function setSpool(entry, d) {
      const parts = [];
      if (d.backlog !== null && d.backlog !== undefined) parts.push(`${d.backlog} queued`);
      if (d.spool_dropped) parts.push(`${d.spool_dropped} dropped`);
      entry.cells.spool.textContent = parts.join(" · ");
      entry.cells.spool.className = d.spool_dropped ? "num spool dropped" : "num spool";
      entry.cells.spool.title = d.spool_dropped
        ? "telemetry and log records the device's full spool or disk dropped since the spool was made"
        : "";
    }
    function setTelemetry(entry, d) {
      const t = d.telemetry, c = t.channels || {};
      if (t.power_w !== undefined) showFigure(entry.cells.power, t.power_w, "W", d.live, (c.power_w || {}).wall_ns);
      if (t.temperature_c !== undefined) showFigure(entry.cells.temp, t.temperature_c, "°C", d.live, newestWall(c));
    }
    async function load() {
      const fleet = await getJson(body.dataset.json);
      document.getElementById("online-count").textContent = `${fleet.online} of ${fleet.devices.length} online`;
      const tbody = document.querySelector("#devices tbody");
      tbody.replaceChildren(); devices.clear();
      for (const d of fleet.devices) {
        const tr = deviceRow(d); tbody.appendChild(tr);
        const entry = devices.get(d.device);
        setState(entry, d.state, d.stale);
        entry.cells.power.textContent = "–"; entry.cells.temp.textContent = "–";
        setTelemetry(entry, d);
        entry.cells.seen.textContent = age(d.last_seen_ns);
        entry.cells.host.textContent = d.hostname || "";
        setSpool(entry, d);
        const run = fleet.running.find((r) => r.device === d.device);
        entry.cells.run.textContent = run ? run.run_id : "";
        entry.cells.progress.replaceChildren(run ? progressNode(run.done, run.total) : el("span", ""));
      }
      fillRows(document.querySelector("#running tbody"), fleet.running.map((r) => [
        link("/devices/" + r.device, r.device), r.run_id, progressNode(r.done, r.total), r.point || ""]));
      fillRows(document.querySelector("#unfinished tbody"), fleet.unfinished.map((r) => [
        link("/devices/" + r.device, r.device), r.run_id, runProgress(r), r.point || ""]));
      fillRows(document.querySelector("#finished tbody"), fleet.finished.map((r) => [
        link("/devices/" + r.device, r.device), r.run_id, r.outcome, r.points_ok, r.points_failed, r.error || ""]));
    }
    const reload = throttled(() => load().catch(console.warn), 1000);
    // Devices with news, each with its earliest event not yet shown; fetched together, one request
    // in flight at a time, so a hundred busy devices cost a few requests a second, not a hundred.
    const dirty = new Map();
    let inFlight = false;
    async function refreshDirty() {
      if (inFlight || dirty.size === 0) return;
      inFlight = true;
      const batch = new Map(dirty); dirty.clear();
      try {
        const fleet = await getJson(body.dataset.json + "?devices=" + [...batch.keys()].map(encodeURIComponent).join(","));
        const running = new Map(fleet.running.map((r) => [r.device, r]));
        for (const d of fleet.devices) {
          const entry = devices.get(d.device);
          if (!entry) { reload(); continue; }
          entry.lastSeenNs = d.last_seen_ns;
          entry.cells.seen.textContent = age(d.last_seen_ns);
          setState(entry, d.state, d.stale);
          setTelemetry(entry, d);
          setSpool(entry, d);
          const run = running.get(d.device);
          if ((run ? run.run_id : "") !== entry.cells.run.textContent) reload();
          entry.cells.run.textContent = run ? run.run_id : "";
          entry.cells.progress.replaceChildren(run ? progressNode(run.done, run.total) : el("span", ""));
          noteShown(batch.get(d.device));
        }
      } finally {
        inFlight = false;
        if (dirty.size) refresh();
      }
    }
    const refresh = throttled(() => refreshDirty().catch(console.warn), 250);
    follow("", (events, missed) => {
      if (missed) reload();
      for (const e of events) {
        if (!devices.has(e.device)) { reload(); continue; }
        if (!dirty.has(e.device)) dirty.set(e.device, e);
      }
      refresh();
    });
    setInterval(() => { for (const entry of devices.values()) entry.cells.seen.textContent = age(entry.lastSeenNs); }, 1000);
    load().catch(console.warn);
    // A failing store commits nothing, so no event would say so: ask the ingest's health instead.
    async function checkIngest() {
      const banner = document.getElementById("ingest-banner");
      const h = await getJson("/api/ingest");
      const upkeep = h.store_upkeep_failing || [];
      const notes = [];
      if (h.store_failing) {
        notes.push(`Ingest paused: the store has been failing since ${age(h.store_failing_since_ns)} ` +
          `(${h.store_errors} failed writes; nothing is acknowledged, the broker keeps the records). ` +
          `Last error: ${h.store_error}`);
      } else if (h.store_stalled_s) {
        notes.push(`Ingest waiting: one write to the store has taken ${Math.round(h.store_stalled_s)} s so far ` +
          "(the database is locked or slow; nothing is acknowledged until it commits, the broker keeps the records).");
      }
      if (h.inbox_blocked_s) {
        notes.push(`Ingest behind: its inbox has been full for ${Math.round(h.inbox_blocked_s)} s, so it reads ` +
          "nothing more from the broker (which may drop the connection; it reconnects once there is room).");
      }
      if (upkeep.length && !h.store_failing && !h.store_stalled_s) {
        // records are stored; what fails is a background pass that keeps the store from growing
        notes.push("Store upkeep failing (records are still stored; retried): " + upkeep.map((f) =>
          `${f.task} since ${age(f.since_ns)}, ${f.failures} failed passes, last error: ${f.error}`).join("; "));
      }
      if (h.broker_cert_expiring) {
        // once it has expired no agent or collector can connect: the whole fleet goes dark
        const end = new Date(h.broker_cert_expires_ns / 1e6);
        const days = Math.floor((end - Date.now()) / 86400000);
        notes.push(`The broker's TLS certificate ${days >= 0 ? `expires in ${days} days` : "has expired"} ` +
          `(${end.toISOString().slice(0, 16).replace("T", " ")} UTC): after that no agent or collector can ` +
          "connect. Renew it on the site's host: ctxscope collector renew-cert");
      }
      banner.hidden = notes.length === 0;
      banner.textContent = notes.join(" · ");
    }
    setInterval(() => checkIngest().catch(console.warn), 5000);
    checkIngest().catch(console.warn);
  }

  // ---------------------------------------------------------------------------------- device
  function devicePage() {
    const body = document.body;
    const device = body.dataset.device;
    const reference = document.getElementById("reference");
    async function loadFigures() {
      const figures = await getJson(`/api/devices/${device}/figures${reference.checked ? "?reference=1" : ""}`);
      const charts = document.getElementById("charts");
      for (const [name, figure] of Object.entries(figures.figures)) plot("chart-" + name, figure, charts);
    }
    function setLive(s) {
      const t = s.telemetry, c = t.channels || {};
      if (t.power_w !== undefined) showFigure(document.getElementById("power"), t.power_w, "W", s.live, (c.power_w || {}).wall_ns);
      if (t.temperature_c !== undefined) {
        showFigure(document.getElementById("temperature"), t.temperature_c, "°C", s.live, newestWall(c));
      }
    }
    async function load() {
      const view = await getJson(body.dataset.json);
      movement = movementKey(view.runs, view.command_acks.length, view.logs.length);
      const s = view.summary;
      const stateNode = document.getElementById("state");
      stateNode.textContent = s.state || "unknown"; stateNode.className = s.stale ? "stale" : (s.state || "");
      const accel = (s.accelerators || []).map((a) => a.name).filter(Boolean).join(", ");
      document.getElementById("summary").textContent =
        `${s.hostname || ""} ${accel ? "· " + accel : ""} · ${view.result_count} results · last seen ${age(s.last_seen_ns)}${s.live ? "" : " (not live)"}`;
      setLive(s);
      // one series per model, precision, logits mode and kernel path: a model's paths never share a row
      const seriesOf = (s) => [s.model, s.precision, s.logits, s.implementation].join("|");
      const named = (s) => s.path ? `${s.model} [${s.path}]` : s.model;
      const fits = new Map(view.characterization.memory_fits.map((f) => [seriesOf(f), f]));
      fillRows(document.querySelector("#maxctx tbody"), view.characterization.max_context.map((m) => {
        const fit = fits.get(seriesOf(m));
        const paper = Object.entries(view.reference_max_context[m.model] || {}).map(([d, n]) => `${d}: ${n}`).join(", ");
        return [named(m), m.precision, m.logits, m.max_ok_tokens ?? "–",
          m.first_failure_tokens ? `${m.first_failure_tokens} (${m.failure_outcome})` : "–",
          m.searched_text ? m.searched_text + (m.search_memory_cap_bytes ? ` (cap ${(m.search_memory_cap_bytes / 2 ** 30).toFixed(1)} GiB)` : "") + (m.search_limit_note ? `; ${m.search_limit_note}` : "") : "–",
          fit && fit.extrapolated_limit_tokens ? Math.round(fit.extrapolated_limit_tokens) : "–",
          fit ? fmt(fit.fit.rms_residual, fit.fit.unit) : "–", paper];
      }));
      fillRows(document.querySelector("#crossovers tbody"), view.characterization.crossovers.map((c) => [
        `${named(c.transformer)} ${c.transformer.precision}`, `${named(c.other)} ${c.other.precision}`,
        c.crossings.length ? c.crossings.map((x) => Math.round(x.length_tokens)).join(", ") : "none in range",
        c.crossings.map((x) => x.faster_above).join(", "),
        c.lengths_tokens.map((n, i) => `${n}: ${c.ratios[i].toFixed(2)}`).join(" · ")]));
      const ch = view.characterization;
      fillRows(document.querySelector("#fits tbody"), [...ch.ttft_fits, ...ch.memory_fits].map((f) => [
        f.metric, named(f), f.precision, fmt(f.fit.a, f.fit.unit), fmt(f.fit.b_per_token, f.fit.unit),
        fmt(f.fit.c_per_token2, f.fit.unit), fmt(f.fit.rms_residual, f.fit.unit),
        `${f.fit.min_length_tokens}–${f.fit.max_length_tokens} (${f.fit.n_points})`]));
      fillRows(document.querySelector("#runs tbody"), view.runs.slice().reverse().map((r) => [
        r.run_id, runProgress(r), r.point || "", runOutcome(r), r.error || ""]));
      const unclassified = view.operator_shares.flatMap((o) =>
        o.unclassified.map((u) => [o.label, u.name, fmt(u.time_ms), u.count]));
      fillRows(document.querySelector("#unclassified tbody"), unclassified);
      document.getElementById("unclassified-section").hidden = unclassified.length === 0;
      fillRows(document.querySelector("#logs tbody"), view.logs.map((l) => [
        new Date(l.ts / 1e6).toISOString().replace("T", " ").slice(0, 19), l.level, l.logger, l.message]));
      fillRows(document.querySelector("#acks tbody"), view.command_acks.slice().reverse().map((a) => [
        a.command_id, a.name, a.accepted ? "yes" : "no", a.reason || "", a.run_id || ""]));
      await loadFigures();
    }
    async function loadPlans() {
      const plans = await getJson("/api/plans");
      const select = document.getElementById("plan-choice");
      for (const name of Object.keys(plans.plans)) { const o = el("option", name); o.value = name; select.appendChild(o); }
      select.addEventListener("change", () => {
        if (select.value) document.getElementById("plan-text").value = plans.plans[select.value];
      });
    }
    document.getElementById("plan-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const out = document.getElementById("plan-result");
      out.textContent = "sending…";
      const response = await fetch(`/api/devices/${device}/plans`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-csrf-token": document.querySelector('meta[name="csrf-token"]').content },
        body: JSON.stringify({ plan_toml: document.getElementById("plan-text").value }),
      });
      const answer = await response.json();
      out.textContent = response.ok ? `sent ${answer.command_id}; waiting for the device's ack` : `refused: ${answer.detail}`;
      out.className = response.ok ? "sent" : "refused";
    });
    reference.addEventListener("change", () => loadFigures().catch(console.warn));
    const reload = throttled(() => load().catch(console.warn), 1000);
    // Runs' progress, acks and problem logs: when they move, reload the whole view.
    const movementKey = (runs, acks, problems) =>
      runs.map((r) => `${r.run_id}:${r.done}:${r.outcome}`).join(",") + `|${acks}|${problems}`;
    let movement = null;
    let pending = null;
    const refresh = throttled(async () => {
      const event = pending; pending = null;
      const live = await getJson("/api/fleet/" + device).catch(console.warn);
      if (!live) return;
      const n = document.getElementById("state");
      n.textContent = live.summary.state || "unknown"; n.className = live.summary.stale ? "stale" : (live.summary.state || "");
      setLive(live.summary);
      const key = movementKey(live.runs, live.command_acks, live.problems);
      if (movement !== key) reload();
      movement = key;
      if (event) noteShown(event);
    }, 500);
    follow("device=" + encodeURIComponent(device), (events, missed) => {
      if (missed) reload();
      if (events.length) { pending = pending || events[0]; refresh(); }
    });
    load().catch(console.warn);
    loadPlans().catch(console.warn);
  }

  // ---------------------------------------------------------------------------------- compare
  function comparePage() {
    const form = document.getElementById("compare-form");
    const params = new URLSearchParams(location.search);
    const metric = document.getElementById("metric");
    if (params.get("metric")) metric.value = params.get("metric");
    function chosen(name) {
      return [...form.querySelectorAll(`input[name=${name}]:checked`)].map((i) => i.value).join(",");
    }
    function choices(id, name, all, selected) {
      const span = document.getElementById(id);
      span.replaceChildren(...all.map((v) => {
        const label = el("label"); const box = el("input"); box.type = "checkbox"; box.name = name; box.value = v;
        box.checked = selected.includes(v); label.appendChild(box); label.appendChild(el("span", " " + v + " "));
        return label;
      }));
    }
    async function load() {
      const query = new URLSearchParams({ devices: params.get("devices") || "", models: params.get("models") || "", metric: metric.value });
      const url = "/api/compare?" + query;
      document.getElementById("twin").href = url; document.getElementById("twin").textContent = url;
      const view = await getJson(url);
      choices("device-choices", "devices", view.known_devices, view.devices);
      const selectedModels = (params.get("models") || "").split(",").filter(Boolean);
      choices("model-choices", "models", view.models, selectedModels.length ? selectedModels : view.models);
      plot("compare-plot", view.figure, document.getElementById("compare-chart"));
      const thead = document.querySelector("#compare-table thead");
      thead.replaceChildren(); const hr = el("tr");
      for (const h of ["model", "precision", "logits", "kernel path", "context", ...view.devices]) hr.appendChild(el("th", h));
      thead.appendChild(hr);
      fillRows(document.querySelector("#compare-table tbody"), view.rows.map((r) => [
        r.model, r.precision, r.logits, r.implementation || "–", r.context_len,
        ...view.devices.map((d) => r.by_device[d] ? `${fmt(r.by_device[d].median, r.by_device[d].unit)} [${fmt(r.by_device[d].p25)}–${fmt(r.by_device[d].p75)}] n=${r.by_device[d].n}` : "–")]));
    }
    form.addEventListener("change", () => {
      params.set("devices", chosen("devices")); params.set("models", chosen("models")); params.set("metric", metric.value);
      history.replaceState(null, "", "?" + params);
      load().catch(console.warn);
    });
    const reload = throttled(() => load().catch(console.warn), 2000);
    follow("", () => reload());
    load().catch(console.warn);
  }

  return { fleetPage, devicePage, comparePage, state };
})();
// No inline scripts (the Content-Security-Policy forbids them): the page names itself in data-page.
document.addEventListener("DOMContentLoaded", () => {
  const start = { fleet: ctxscope.fleetPage, device: ctxscope.devicePage, compare: ctxscope.comparePage }[document.body.dataset.page];
  if (start) start();
  if (typeof ctxscopeTraces !== "undefined") {  // live power and temperature traces (traces.js)
    if (document.body.dataset.page === "fleet") ctxscopeTraces.fleetSparklines(300);
    if (document.body.dataset.page === "device") ctxscopeTraces.devicePowerTrace(document.body.dataset.device, 600);
  }
  if (typeof ctxscopePrediction !== "undefined" && document.body.dataset.page === "device") {
    ctxscopePrediction.load(document.body.dataset.device);  // predicted curves (prediction.js)
  }
  if (typeof ctxscopeHistory !== "undefined" && document.body.dataset.page === "device") {
    ctxscopeHistory.load(document.body.dataset.device);  // telemetry over months (history.js)
  }
});
