// Statistics per brigade over a date range (GET /api/statistics), drawn as SVG bar charts by
// this script (no chart library): cases by kind, sessions by purpose, and the other counts.
// A supervisor sees every brigade, summed, with one row per brigade in the table below.
"use strict";

(() => {
  const con = window.remotecaseConsole;
  if (!con) return;
  const $ = (id) => document.getElementById(id);
  const t = (key, params) => I18N.t(key, params);
  const SVG = "http://www.w3.org/2000/svg";
  let data = null;
  let visible = false;

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A horizontal bar chart: one bar per [label, value], scaled to the largest value; the
  // viewBox keeps it within its box at any width.
  function barChart(title, rows) {
    const rowHeight = 30; const labelWidth = 130; const width = 420; const barSpace = width - labelWidth - 40;
    const height = rows.length * rowHeight + 10;
    const max = Math.max(1, ...rows.map(([, v]) => v));
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title, class: "chart" });
    rows.forEach(([label, value], i) => {
      const y = 5 + i * rowHeight;
      const w = Math.round((value / max) * barSpace);
      chart.append(svg("text", { x: labelWidth - 8, y: y + 19, "text-anchor": "end", class: "chart-label" }, label));
      chart.append(svg("rect", { x: labelWidth, y: y + 4, width: Math.max(w, value ? 2 : 0), height: rowHeight - 10, rx: 3, class: "chart-bar", "data-value": value }));
      chart.append(svg("text", { x: labelWidth + w + 6, y: y + 19, class: "chart-value" }, String(value)));
    });
    return con.el("figure", { class: "chart-box" }, con.el("figcaption", { text: title }), chart);
  }

  function sum(brigades, pick) {
    const out = {};
    for (const b of Object.values(brigades)) {
      for (const [k, v] of Object.entries(pick(b))) out[k] = (out[k] || 0) + v;
    }
    return out;
  }

  function render() {
    const box = $("stats-charts");
    box.replaceChildren();
    if (!data) return;
    const brigades = data.brigades || {};
    const cases = sum(brigades, (b) => b.cases);
    const sessions = sum(brigades, (b) => b.sessions);
    const others = sum(brigades, (b) => ({
      materials_received: b.materials_received, evidence_displays: b.evidence_displays,
      invitations_redeemed: b.invitations_redeemed, appointments_booked: b.appointments_booked,
    }));
    box.append(con.el("p", { class: "muted", text: t("stats.range", { from: data.from, to: data.to, n: Object.keys(brigades).length }) }));
    const kinds = ["accident", "violation", "education", "vehicle_service", "licence_service"];
    const purposes = ["inquiry", "mediation", "education", "delivery", "other"];
    box.append(barChart(t("stats.cases"), kinds.map((k) => [t(`kind.${k}`), cases[k] || 0])));
    box.append(barChart(t("stats.sessions"), purposes.map((k) => [t(`purpose.${k}`), sessions[k] || 0])));
    box.append(barChart(t("stats.other"), Object.keys(others).map((k) => [t(`stats.${k}`), others[k] || 0])));
    const table = con.el("table", { class: "stats-table" },
      con.el("caption", { text: t("stats.by_brigade") }),
      con.el("tr", {}, ...["stats.brigade", "stats.cases", "stats.sessions", "stats.materials_received"].map((k) => con.el("th", { text: t(k), scope: "col" }))));
    for (const [name, b] of Object.entries(brigades)) {
      const total = (o) => Object.values(o).reduce((a, v) => a + v, 0);
      table.append(con.el("tr", {}, con.el("th", { text: name, scope: "row" }), con.el("td", { text: String(total(b.cases)) }),
        con.el("td", { text: String(total(b.sessions)) }), con.el("td", { text: String(b.materials_received) })));
    }
    if (!Object.keys(brigades).length) box.append(con.el("p", { class: "muted", text: t("stats.none") }));
    else box.append(table);
  }

  async function load() {
    if (!$("stats-to").value) {
      const today = new Date(Date.now() + 8 * 3600 * 1000).toISOString().slice(0, 10);
      const before = new Date(Date.now() + 8 * 3600 * 1000 - 30 * 86400 * 1000).toISOString().slice(0, 10);
      $("stats-from").value = before; $("stats-to").value = today;
    }
    if ($("stats-from").value > $("stats-to").value) throw new Error(t("stats.bad_range"));
    data = await con.api("GET", `/api/statistics?from=${$("stats-from").value}&to=${$("stats-to").value}`);
    render();
  }

  $("stats-form").addEventListener("submit", con.guard(load));
  con.part({
    name: "stats",
    async view(name) { visible = name === "stats"; if (visible) await load(); },
    lang() { if (visible) render(); },
  });
})();
