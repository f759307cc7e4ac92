// Power and temperature traces: a sparkline per device on the fleet page, a live trace on the device
// page. Reads /api/fleet/traces and /api/devices/<id>/trace (see collector/readmodel/traces.py), redraws
// every REFRESH_MS while the page is visible. Plotly is served locally (/static/plotly.min.js). Units and
// channel names come from the device: they are escaped before plotly.js, which renders a subset of HTML
// (links, styles) in trace names.
(function () {
  "use strict";
  const REFRESH_MS = 2000;
  const CONFIG = { displayModeBar: false, responsive: true, staticPlot: false };
  const escaped = (text) => String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

  async function getJson(url) {
    const response = await fetch(url, { headers: { accept: "application/json" } });
    if (!response.ok) throw new Error(url + ": HTTP " + response.status);
    return response.json();
  }

  function times(series) { return series.wall_ns.map((ns) => new Date(ns / 1e6)); }

  function lines(trace, small) {
    const out = [];
    if (trace.power) {
      out.push({
        x: times(trace.power), y: trace.power.values, mode: "lines", name: escaped("power (" + trace.power.unit + ")"),
        line: { color: "#d62728", width: small ? 1.5 : 2 },
      });
    }
    if (trace.temperature) {
      out.push({
        x: times(trace.temperature), y: trace.temperature.values, mode: "lines", yaxis: "y2",
        name: escaped(trace.temperature.channel + " (" + trace.temperature.unit + ")"),
        line: { color: "#1f77b4", width: small ? 1 : 1.5, dash: "dot" },
      });
    }
    return out;
  }

  function layout(small) {
    const axis = { showgrid: !small, zeroline: false, showticklabels: !small, fixedrange: true };
    return {
      height: small ? 60 : 280, margin: small ? { l: 2, r: 2, t: 2, b: 2 } : { l: 60, r: 60, t: 10, b: 40 },
      showlegend: !small, legend: { orientation: "h" }, xaxis: { ...axis, type: "date" },
      yaxis: { ...axis, title: small ? undefined : { text: "W" } },
      yaxis2: { ...axis, overlaying: "y", side: "right", title: small ? undefined : { text: "°C" } },
    };
  }

  function every(fn) {
    const run = () => { if (!document.hidden) fn().catch((e) => console.warn("trace refresh:", e.message)); };
    run();
    return setInterval(run, REFRESH_MS);
  }

  function devicePowerTrace(device, seconds) {
    const div = document.getElementById("power-trace");
    const note = document.getElementById("power-trace-note");
    return every(async () => {
      const trace = await getJson("/api/devices/" + encodeURIComponent(device) + "/trace?seconds=" + (seconds || 600));
      const data = lines(trace, false);
      note.textContent = data.length ? "" : "no power or temperature telemetry from this device yet";
      div.hidden = !data.length; // no empty axes with an invented time range
      if (data.length) Plotly.react(div, data, layout(false), CONFIG);
    });
  }

  function fleetSparklines(seconds) {
    const grid = document.getElementById("sparklines");
    return every(async () => {
      const body = await getJson("/api/fleet/traces?seconds=" + (seconds || 300) + "&points=60");
      for (const trace of body.devices) {
        const id = "spark-" + trace.device;
        let cell = document.getElementById(id);
        if (!cell) {
          const card = document.createElement("div");
          card.className = "spark";
          const label = document.createElement("a");
          label.href = "/devices/" + encodeURIComponent(trace.device);
          label.textContent = trace.device;
          cell = document.createElement("div");
          cell.id = id;
          card.append(label, cell);
          grid.appendChild(card);
        }
        Plotly.react(cell, lines(trace, true), layout(true), CONFIG);
      }
    });
  }

  window.ctxscopeTraces = { devicePowerTrace, fleetSparklines };
})();
