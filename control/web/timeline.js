// The open case's timeline (GET /api/cases/{case}/timeline, docs/casefile.md): everything that
// happened, oldest first, in China time, each with its label (in the page's language, from the
// server's catalogs), who, and the custody log entry that proves it. Loaded on demand (reading
// it is audited as an access to the case), again after a language switch.
"use strict";

(() => {
  const con = window.remotecaseConsole;
  if (!con) return;
  const $ = (id) => document.getElementById(id);
  const t = (key, params) => I18N.t(key, params);
  let items = null;
  let caseId = null;

  function mount() {
    const panel = $("timeline-panel");
    if (!panel || panel.childElementCount) return panel;
    panel.append(
      con.el("h3", { id: "timeline-heading", "data-i18n": "timeline.heading" }),
      con.el("p", { class: "row" },
        con.el("button", { type: "button", id: "timeline-show", "data-i18n": "timeline.show" })),
      con.el("p", { id: "timeline-count", class: "muted" }),
      con.el("ol", { id: "timeline", class: "list timeline" }));
    I18N.apply(panel);
    $("timeline-show").addEventListener("click", con.guard(load));
    return panel;
  }

  function render() {
    const list = $("timeline");
    if (!list) return;
    list.replaceChildren();
    $("timeline-count").textContent = items === null ? "" :
      (items.length ? t("timeline.count", { n: items.length }) : t("timeline.none"));
    for (const item of items || []) {
      const ref = item.ref || {};
      const about = [item.actor || "",
        ...["number", "name", "participant", "cause", "limit", "due", "step", "status"]
          .filter((k) => ref[k] !== undefined && ref[k] !== null && ref[k] !== "")
          .map((k) => String(ref[k])),
        item.custody_index === null ? "" : t("timeline.custody", { n: item.custody_index })]
        .filter(Boolean).join(" · ");
      list.append(con.el("li", { "data-kind": item.kind },
        con.el("time", { dateTime: item.at, text: I18N.dateTime(item.at, { second: "2-digit" }) }), " ",
        con.el("strong", { text: item.label || item.kind }), " ",
        con.el("span", { class: "muted", text: about })));
    }
  }

  async function load() {
    // The case on screen, not the last one this part was told of: the button shows as soon as
    // the case does, while the parts before this one are still loading theirs.
    const asked = con.caseId;
    if (!asked) return;
    caseId = asked;
    const data = await con.api("GET", `/api/cases/${asked}/timeline`);
    if (asked !== caseId) return;  // another case was opened meanwhile
    items = data.items;
    render();
  }

  con.part({
    name: "timeline",
    async caseOpened(c) {
      mount();
      const id = c && c.id;
      if (id !== caseId) {  // another case: its timeline is read when asked
        caseId = id;
        items = null;
        render();
      } else if (items !== null) {
        con.guard(load)();  // the same case again (con.reload after a change): read it again
      }
    },
    lang() { mount(); if (items !== null) con.guard(load)(); },
  });
})();
