// The console's overdue view (#overdue): per brigade, the steps of its open cases that are
// overdue (GET /api/deadlines/overdue: the brigade's own, every brigade for a supervisor) and
// those due soon (each open case's deadlines with their warning, GET /api/cases/{id}/deadlines),
// each linking to its case. Texts from /static/i18n/<lang>/procedure.json.
"use strict";

(() => {
  const con = window.remotecaseConsole;
  if (!con) return;
  const $ = (id) => document.getElementById(id);
  const t = (key, params) => I18N.t(key, params);
  const el = (...args) => con.el(...args);
  const day = (iso) => (iso ? I18N.date(`${iso}T12:00:00+08:00`) : "");
  const limitName = (item) => (I18N.has(`proc.limit.${item.limit}`) ? t(`proc.limit.${item.limit}`) : item.name);
  let data = null;
  let visible = false;

  async function load() {
    const overdue = await con.api("GET", "/api/deadlines/overdue");
    const open = (con.cases || []).filter((c) => c.status === "open");
    const soon = [];
    // a few cases at a time: the server counts each case's deadlines on its calendar
    for (let i = 0; i < open.length; i += 4) {
      const batch = await Promise.all(open.slice(i, i + 4).map((c) =>
        con.api("GET", `/api/cases/${c.id}/deadlines`).then((d) => ({ c, d })).catch(() => null)));
      for (const got of batch) {
        if (!got) continue;
        for (const item of got.d.deadlines) {
          if (item.status === "open" && item.warn) {
            soon.push({ ...item, case_id: got.c.id, title: got.c.title, brigade: got.c.brigade });
          }
        }
      }
    }
    return { overdue, soon };
  }

  function row(item, kind) {
    const li = el("li", { class: `overdue-item ${kind}`, "data-case-id": String(item.case_id), "data-limit": item.limit },
      el("a", { href: `#case/${item.case_id}`, text: t("overdue.case", { id: item.case_id, title: item.title }) }), " ",
      el("span", { class: kind === "overdue" ? "badge danger" : "badge warn", text: t(kind === "overdue" ? "proc.status.overdue" : "overdue.soon.badge") }), " ",
      el("strong", { text: limitName(item) }), " ",
      el("span", { text: t("overdue.due", { due: day(item.due) }) }));
    if (item.number) li.append(el("div", { class: "muted", text: t("proc.about.document", { number: item.number }) }));
    return li;
  }

  function render() {
    const box = $("overdue");
    if (!box) return;
    box.replaceChildren();
    if (!data) return;
    const today = data.overdue.today;
    box.append(el("p", { class: "muted", text: t("overdue.today", { today: day(today) }) }));
    const brigades = new Set([...Object.keys(data.overdue.count || {}), ...data.soon.map((s) => s.brigade)]);
    if (!brigades.size) {
      box.append(el("p", { class: "ok", text: t("overdue.none") }));
      return;
    }
    for (const brigade of [...brigades].sort()) {
      const late = data.overdue.overdue.filter((i) => i.brigade === brigade);
      const soon = data.soon.filter((i) => i.brigade === brigade);
      const list = el("ul", { class: "list" }, ...late.map((i) => row(i, "overdue")), ...soon.map((i) => row(i, "soon")));
      box.append(el("section", { class: "brigade", "data-brigade": brigade },
        el("h3", { text: t("overdue.brigade", { brigade, overdue: late.length, soon: soon.length }) }), list));
    }
  }

  async function refresh() {
    if (!visible || !con.token) return;
    try { data = await load(); } catch (err) { con.showError(err); return; }
    render();
  }

  con.part({
    name: "overdue",
    view: async (shown) => { visible = shown === "overdue"; if (visible) await refresh(); },
    lang: () => render(),
  });
  I18N.use("procedure").then(render);
  setInterval(() => { if (visible && !document.hidden) refresh(); }, 30000);
})();
