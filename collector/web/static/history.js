// ctxscope device page: the History section, a telemetry channel over up to a year, from
// /api/devices/<id>/history (collector/readmodel/history.py): the mean of each bucket as a line, its
// minimum to maximum as a band, and a break where the store has no data (never a zero). Channel,
// source and unit come from the device: they are escaped before plotly.js, which renders a subset of
// HTML in names and titles, sees them.
"use strict";
const ctxscopeHistory = (() => {
  const MAX_POINTS = 1000;
  const CONFIG = { displayModeBar: false, responsive: true };
  const escaped = (text) => String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

  async function getJson(url) {
    const response = await fetch(url, { headers: { accept: "application/json" } });
    const body = await response.json();
    if (!response.ok) throw new Error(`HTTP ${response.status}: ${JSON.stringify(body.detail)}`);
    return body;
  }

  function widthText(seconds) {
    if (seconds % 86400 === 0) return seconds / 86400 + " d";
    if (seconds % 3600 === 0) return seconds / 3600 + " h";
    if (seconds % 60 === 0) return seconds / 60 + " min";
    return seconds + " s";
  }

  function widthsText(buckets) {
    const widths = [...new Set(buckets.map((b) => b.width_s))].sort((a, b) => a - b);
    return widths.length > 1 ? `${widthText(widths[0])}–${widthText(widths[widths.length - 1])}` : widthText(widths[0]);
  }

  // Runs of buckets that follow one another, each bucket at its middle: a bucket that does not start
  // where the one before it ends starts a new run (a break in the line and the band).
  function runs(buckets) {
    const found = [];
    let endMs = null;
    for (const b of buckets) {
      const startMs = b.start_ns / 1e6;
      if (endMs === null || startMs > endMs + 1) found.push([]);
      found[found.length - 1].push({ x: new Date(startMs + b.width_s * 500), mean: b.mean, min: b.min, max: b.max });
      endMs = startMs + b.width_s * 1000;
    }
    return found;
  }

  // The mean, and the band as one closed shape per run (up along the maxima, back along the minima),
  // the runs and shapes apart at nulls.
  function columns(buckets) {
    const cols = { x: [], mean: [], bandX: [], bandY: [] };
    for (const run of runs(buckets)) {
      cols.x.push(...run.map((p) => p.x), null); cols.mean.push(...run.map((p) => p.mean), null);
      const back = run.slice().reverse();
      cols.bandX.push(...run.map((p) => p.x), ...back.map((p) => p.x), null);
      cols.bandY.push(...run.map((p) => p.max), ...back.map((p) => p.min), null);
    }
    return cols;
  }

  function figure(answer) {
    const cols = columns(answer.buckets);
    const width = widthsText(answer.buckets);
    const units = [...new Set(answer.buckets.map((b) => b.unit))].join(", ");
    return {
      data: [
        { x: cols.bandX, y: cols.bandY, mode: "lines", line: { width: 0 }, fill: "toself",
          fillcolor: "rgba(31, 119, 180, 0.2)", hoverinfo: "skip", name: escaped(`min–max per ${width}`) },
        { x: cols.x, y: cols.mean, mode: "lines", line: { color: "#1f77b4", width: 2 },
          name: escaped(`${answer.channel} mean per ${width} (${units})`) },
      ],
      layout: {
        height: 320, margin: { l: 70, r: 20, t: 10, b: 50 }, legend: { orientation: "h", y: -0.2 },
        xaxis: { type: "date", range: [new Date(answer.since_ns / 1e6), new Date(answer.until_ns / 1e6)],
          title: { text: escaped(`time (buckets of ${width})`) } },
        yaxis: { title: { text: escaped(units) }, zeroline: false },
      },
    };
  }

  function load(device) {
    const section = document.getElementById("history-section");
    const select = document.getElementById("history-channel");
    const chart = document.getElementById("history-chart");
    const note = document.getElementById("history-note");
    const base = "/api/devices/" + encodeURIComponent(device) + "/history";
    let channels = [];
    let range = section.querySelector("button[data-seconds]");

    let asked = 0; // the newest request: an older answer that arrives after it is dropped

    async function draw() {
      const chosen = channels[Number(select.value)];
      if (!chosen) return;
      const mine = ++asked;
      // a span reaching into the raw window reads every batch of it: seconds for 30 days
      note.textContent = `loading ${chosen.channel} over the last ${range.textContent}…`;
      const offsetMs = window.ctxscopeState ? window.ctxscopeState.clockOffsetMs : 0;
      const until = BigInt(Math.round(Date.now() + offsetMs)) * 1000000n;
      const since = until - BigInt(range.dataset.seconds) * 1000000000n;
      const query = new URLSearchParams({ channel: chosen.channel, source: chosen.source, since_ns: since,
        until_ns: until, max_points: MAX_POINTS });
      let answer;
      try {
        answer = await getJson(`${base}?${query}`);
      } catch (e) {
        if (mine === asked) note.textContent = "history: " + e.message; // an older failure says nothing
        return;
      }
      if (mine !== asked) return;
      const empty = answer.buckets.length === 0;
      note.textContent = empty ? `no ${chosen.channel} telemetry in the last ${range.textContent}` : "";
      chart.hidden = empty; // no empty axes
      if (!empty) {
        const fig = figure(answer);
        Plotly.react(chart, fig.data, fig.layout, CONFIG);
      }
    }
    const redraw = () => draw().catch((e) => { note.textContent = "history: " + e.message; });

    for (const button of section.querySelectorAll("button[data-seconds]")) {
      button.addEventListener("click", () => {
        range.classList.remove("chosen");
        range = button;
        range.classList.add("chosen");
        redraw();
      });
    }
    select.addEventListener("change", redraw);
    getJson(base + "/channels").then((answer) => {
      channels = answer.channels;
      select.replaceChildren(...channels.map((c, i) => {
        const option = document.createElement("option");
        option.value = String(i);
        option.textContent = `${c.channel} (${c.source}, ${c.unit})`;
        return option;
      }));
      const power = channels.findIndex((c) => c.channel === "power_w");
      select.value = String(Math.max(power, 0));
      range.classList.add("chosen");
      section.hidden = channels.length === 0;
      redraw();
    }).catch((e) => console.warn("history:", e.message));
  }

  return { load };
})();
