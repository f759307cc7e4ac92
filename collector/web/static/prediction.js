// ctxscope device page: the prediction section, from /api/devices/<id>/prediction (figures built by
// the server). Shown when the device has a calibration or a peak-table entry and a source exists.
"use strict";
const ctxscopePrediction = (() => {
  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = String(text);
    if (cls) td.className = cls;
    return td;
  }
  function rows(tbody, items) {
    tbody.replaceChildren(...items.map((cells) => {
      const tr = document.createElement("tr");
      for (const c of cells) tr.appendChild(Array.isArray(c) ? cell(c[0], c[1]) : cell(c));
      return tr;
    }));
  }
  const ms = (v) => (v === null || v === undefined ? "open" : Number(v).toPrecision(4));
  async function load(device) {
    const response = await fetch(`/api/devices/${device}/prediction`, { headers: { accept: "application/json" } });
    if (!response.ok) return;
    const view = await response.json();
    if (!view.available) return;
    const section = document.getElementById("prediction-section");
    const target = view.target.calibrated ? "calibrated" : "uncalibrated: target rates assumed from the peak table";
    document.getElementById("prediction-note").textContent =
      `from ${view.source_device}'s profiles; ${target}; only within the source's measured lengths`;
    const bound = view.curves.filter((c) => c.host_bound_up_to !== null)
      .map((c) => `${c.model} ${c.phase} up to ${c.host_bound_up_to} tokens`);
    document.getElementById("prediction-host").textContent = bound.length
      ? `Host-bound on the source (${view.target.host_per_op_ms === null || view.source.host_per_op_ms === null ? "lower bounds: host cost not calibrated on both" : "host time scaled by the calibrated host costs"}): ${bound.join("; ")}`
      : "No host-bound lengths.";
    const charts = document.getElementById("prediction-charts");
    for (const [name, figure] of Object.entries(view.figures)) {
      let div = document.getElementById("chart-" + name);
      if (!div) {
        div = document.createElement("div"); div.id = "chart-" + name; div.className = "chart";
        charts.appendChild(div);
      }
      Plotly.react(div, figure.data, figure.layout, { responsive: true, displaylogo: false });
    }
    rows(document.querySelector("#prediction-assumptions tbody"),
      view.assumptions.map((a) => [a.what, a.value, [a.status, "status-" + a.status], a.how]));
    rows(document.querySelector("#prediction-compare tbody"), view.curves.flatMap((c) => c.comparison.map((r) => [
      c.model, c.metric, r.context_len, ms(r.measured_ms), r.note ? r.note : ms(r.predicted_ms),
      r.note ? "–" : `${ms(r.low_ms)}..${ms(r.high_ms)}`,
      r.note ? "–" : `${(100 * r.error).toFixed(0)}%${r.in_band ? "" : " (outside band)"}`])));
    section.hidden = false;
  }
  return { load };
})();
