// Statistics per brigade over a date range (GET /api/statistics), drawn as SVG bar charts by
// this script (no chart library): cases by kind, sessions by purpose, the work done (inquiries,
// education sessions, materials...), documents delivered by kind, reviews and their outcomes,
// the penalty procedure, mediations by outcome and the steps overdue by limit; one case kind or
// all (the kind selector is added to the form by this script). A supervisor sees every brigade,
// summed, with one row per brigade in the table below.
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
      inquiries: b.inquiries || 0, education_sessions: b.education_sessions || 0,
      materials_received: b.materials_received, evidence_displays: b.evidence_displays,
      invitations_redeemed: b.invitations_redeemed, appointments_booked: b.appointments_booked,
    }));
    const delivered = sum(brigades, (b) => b.documents_delivered || {});
    const reviews = sum(brigades, (b) => b.reviews || {});
    const penalty = sum(brigades, (b) => ({
      penalty_notices: b.penalty_notices || 0, penalty_decisions: b.penalty_decisions || 0,
    }));
    const mediations = sum(brigades, (b) => b.mediations || {});
    const overdue = sum(brigades, (b) => b.overdue || {});
    const uncounted = Object.values(brigades).reduce((a, b) => a + (b.overdue_uncounted || 0), 0);
    // a label from the catalog when it has one (a kind the server added later shows its ID)
    const named = (prefix, k) => (I18N.has(`${prefix}${k}`) ? t(`${prefix}${k}`) : k);
    const optional = (title, rows, none) => {
      if (rows.length) box.append(barChart(title, rows));
      else box.append(con.el("p", { class: "muted", text: t(none) }));
    };
    box.append(con.el("p", { class: "muted", text: t("stats.range", { from: data.from, to: data.to, n: Object.keys(brigades).length }) }));
    const kinds = ["accident", "violation", "education", "vehicle_service", "licence_service"];
    const purposes = ["inquiry", "mediation", "education", "delivery", "other"];
    box.append(barChart(t("stats.cases"), kinds.map((k) => [t(`kind.${k}`), cases[k] || 0])));
    box.append(barChart(t("stats.sessions"), purposes.map((k) => [t(`purpose.${k}`), sessions[k] || 0])));
    box.append(barChart(t("stats.activity"), Object.keys(others).map((k) => [t(`stats.${k}`), others[k] || 0])));
    optional(t("stats.delivered"), Object.entries(delivered).map(([k, v]) => [named("stats.doc.", k), v]), "stats.delivered_none");
    const outcomes = ["requested", "pending", "upheld", "reinvestigate", "not_accepted"];
    box.append(barChart(t("stats.reviews"), outcomes.map((k) => [t(`stats.review.${k}`), reviews[k] || 0])));
    box.append(barChart(t("stats.penalty"), Object.keys(penalty).map((k) => [t(`stats.${k}`), penalty[k]])));
    optional(t("stats.mediations"), Object.entries(mediations).map(([k, v]) => [named("stats.mediation.", k), v]), "stats.mediations_none");
    optional(t("stats.overdue"), Object.entries(overdue).map(([k, v]) => [named("stats.limit.", k), v]), "stats.overdue_none");
    if (uncounted) box.append(con.el("p", { class: "muted", text: t("stats.overdue_uncounted", { n: uncounted }) }));
    const table = con.el("table", { class: "stats-table" },
      con.el("caption", { text: t("stats.by_brigade") }),
      con.el("tr", {}, ...["stats.brigade", "stats.cases", "stats.sessions", "stats.materials_received", "stats.col.delivered", "stats.col.overdue"].map((k) => con.el("th", { text: t(k), scope: "col" }))));
    for (const [name, b] of Object.entries(brigades)) {
      const total = (o) => Object.values(o || {}).reduce((a, v) => a + v, 0);
      table.append(con.el("tr", {}, con.el("th", { text: name, scope: "row" }), con.el("td", { text: String(total(b.cases)) }),
        con.el("td", { text: String(total(b.sessions)) }), con.el("td", { text: String(b.materials_received) }),
        con.el("td", { text: String(total(b.documents_delivered)) }), con.el("td", { text: String(total(b.overdue)) })));
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
    const kind = $("stats-kind").value;
    data = await con.api("GET", `/api/statistics?from=${$("stats-from").value}&to=${$("stats-to").value}` +
      (kind ? `&kind=${encodeURIComponent(kind)}` : ""));
    render();
  }

  // the case kind: all, or one (its options' texts follow the language)
  const KINDS = ["accident", "violation", "education", "vehicle_service", "licence_service"];
  function kindSelect() {
    let select = $("stats-kind");
    if (!select) {
      select = con.el("select", { id: "stats-kind" });
      const label = con.el("label", {}, con.el("span", { "data-i18n": "stats.kind" }), " ", select);
      const form = $("stats-form");
      form.insertBefore(label, form.querySelector("button[type=submit]"));
    }
    const chosen = select.value;
    select.replaceChildren(con.el("option", { value: "", text: t("stats.kind_all") }),
      ...KINDS.map((k) => con.el("option", { value: k, text: t(`kind.${k}`) })));
    select.value = chosen;
    I18N.apply(select.parentNode);
  }
  kindSelect();

  $("stats-form").addEventListener("submit", con.guard(load));
  con.part({
    name: "stats",
    async view(name) { visible = name === "stats"; if (visible) { kindSelect(); await load(); } },
    lang() { kindSelect(); if (visible) render(); },
  });
})();
