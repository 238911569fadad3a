// The officer console's inquiry record editor (turns written during the call, each with its
// time and recording offset; review, corrections, finalising) and the case's documents
// (generate from the case plus the remaining fields, sign one's own box or the seal, state,
// download). Everything goes through the HTTP API; it reads the console's state
// (window.remotecaseConsole: the login token, the case and session open).
"use strict";

(() => {
  const con = window.remotecaseConsole;
  if (!con) return;
  const KINDS = ["inquiry_record", "determination_simple", "determination_ordinary",
    "accident_certificate", "mediation_agreement", "mediation_termination", "penalty_notice",
    "penalty_decision", "delivery_consent", "talk_record"];

  const t = (key, params) => I18N.t(key, params);
  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "onclick") node.addEventListener("click", v); else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  };

  async function call(method, path, body) {
    const response = await fetch(path, {
      method, headers: { ...I18N.headers(), Authorization: `Bearer ${con.token}`,
                         ...(body !== undefined ? { "Content-Type": "application/json" } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const type = response.headers.get("Content-Type") || "";
    const data = type.includes("json") ? await response.json() : await response.blob();
    if (!response.ok) {
      const missing = data && data.missing ? "：" + data.missing.map((m) => m.path).join(", ") : "";
      throw new Error(I18N.error(data && typeof data === "object" && !(data instanceof Blob) ? data : {}) + missing);
    }
    return data;
  }

  // the words are set by data-i18n attributes (I18N.apply fills them, again after a switch)
  const section = el("section", { id: "records-documents", hidden: "" },
    el("h2", { "data-i18n": "rec.heading" }),
    el("div", {},
      el("select", { id: "record-party", "data-i18n-aria-label": "rec.party" }),
      el("button", { id: "record-new", "data-i18n": "rec.new" }),
      el("select", { id: "record-pick", "data-i18n-aria-label": "rec.pick" })),
    el("textarea", { id: "record-header", rows: "6", cols: "80", "data-i18n-title": "rec.header" }),
    el("button", { id: "record-header-save", "data-i18n": "rec.header.save" }),
    el("ol", { id: "record-turns" }),
    el("form", { id: "record-turn" },
      el("textarea", { id: "turn-q", rows: "2", cols: "80", "data-i18n-placeholder": "rec.q", required: "" }),
      el("textarea", { id: "turn-a", rows: "2", cols: "80", "data-i18n-placeholder": "rec.a" }),
      el("button", { type: "submit", "data-i18n": "rec.turn.add" })),
    el("div", {},
      el("button", { id: "record-review", "data-i18n": "rec.review" }),
      el("button", { id: "record-finalise", "data-i18n": "rec.finalise" })),
    el("h2", { "data-i18n": "rec.documents" }),
    el("form", { id: "doc-new" },
      el("select", { id: "doc-kind", "data-i18n-aria-label": "rec.doc.kind" },
        ...KINDS.map((k) => el("option", { value: k, "data-i18n": `rec.kind.${k}` }))),
      el("textarea", { id: "doc-data", rows: "6", cols: "80", "data-i18n-placeholder": "rec.doc.data" }),
      el("button", { type: "submit", "data-i18n": "rec.doc.generate" })),
    el("ul", { id: "doc-list" }),
    el("div", { id: "rd-error", role: "alert" }));
  (document.querySelector("main") || document.body).append(section);
  const $ = (id) => document.getElementById(id);
  const say = (text) => { $("rd-error").textContent = text; };
  const guard = (fn) => async (e) => { if (e && e.preventDefault) e.preventDefault();
    try { say(""); await fn(e); } catch (err) { say(err.message); } };
  let record = null;
  let caseSeen = null;

  function showRecord() {
    const turns = $("record-turns");
    turns.replaceChildren();
    if (!record) return;
    $("record-header").value = JSON.stringify(record.header, null, 1);
    for (const turn of record.turns) {
      const edit = el("button", { onclick: guard(async () => {
        const text = prompt(t("rec.turn.prompt", { n: turn.n }), turn.a);
        if (text === null) return;
        if (record.phase === "writing") {
          record = await call("PUT", `${base()}/turns/${turn.n}`, { a: text });
        } else {
          record = await call("POST", `${base()}/corrections`, { turn: turn.n, field: "a", text });
        }
        showRecord();
      }) }, t(record.phase === "writing" ? "rec.turn.edit" : "rec.turn.correct"));
      turns.append(el("li", {}, t("rec.turn", { time: turn.time, offset: turn.offset, q: turn.q, a: turn.a }), " ", edit));
    }
    for (const c of record.corrections) {
      turns.append(el("li", { class: "muted" }, t("rec.correction", {
        id: c.id, before: c.before, after: c.after, status: t(`rec.correction.${c.status}`) })));
    }
    turns.append(el("li", { class: "muted", "data-phase": record.phase },
      t("rec.phase", { phase: t(`rec.phase.${record.phase}`), version: record.version })));
  }

  const base = () => `/api/cases/${con.caseId}/records/${record.id}`;

  async function refresh() {
    if (!con.caseId || !con.token) { section.hidden = true; return; }
    section.hidden = false;
    if (caseSeen !== con.caseId) { caseSeen = con.caseId; record = null; }
    const parties = (con.case && con.case.parties) || [];
    const picked = $("record-party").value;
    if ($("record-party").options.length !== parties.length) {
      $("record-party").replaceChildren(...parties.map(
        (p) => el("option", { value: String(p.id) }, p.name)));
      if (picked) $("record-party").value = picked;
    }
    const listing = await call("GET", `/api/cases/${con.caseId}/records`);
    $("record-pick").replaceChildren(el("option", { value: "" }, "—"), ...listing.records.map(
      (r) => el("option", { value: String(r.id) },
        t("rec.pick.item", { id: r.id, name: r.header.person.name, phase: t(`rec.phase.${r.phase}`) }))));
    if (record) {
      record = listing.records.find((r) => r.id === record.id) || record;
      $("record-pick").value = String(record.id);
    }
    showRecord();
    const docs = await call("GET", `/api/cases/${con.caseId}/documents`);
    const list = $("doc-list");
    list.replaceChildren();
    for (const d of docs.documents) {
      const signed = new Set(d.signatures.map((s) => s.field));
      const item = el("li", {}, t("rec.doc.item", { kind: t(`rec.kind.${d.kind}`), number: d.number, revision: d.revision }), " ");
      for (const r of d.required) {
        const state = t(signed.has(r.field) ? "rec.box.signed" : r.refused ? "rec.box.refused" : "rec.box.open");
        item.append(t("rec.box", { label: r.label, name: r.name, state }), " ");
        if (!signed.has(r.field) && !r.refused && r.role !== "party") {
          item.append(el("button", { onclick: guard(async () => {
            await call("POST", `/api/cases/${con.caseId}/documents/${d.id}/sign`, { field: r.field });
            refresh();
          }) }, t("rec.box.sign", { field: r.field })), " ");
        }
      }
      item.append(el("button", { onclick: guard(async () => {
        const blob = await call("GET", `/api/cases/${con.caseId}/documents/${d.id}/pdf`);
        window.open(URL.createObjectURL(blob), "_blank", "noopener");
      }) }, t("rec.doc.pdf")));
      list.append(item);
    }
  }

  $("record-new").addEventListener("click", guard(async () => {
    if (!con.session) throw new Error(t("rec.session_first"));
    record = await call("POST", `/api/cases/${con.caseId}/sessions/${con.session.id}/records`,
                        { party_id: Number($("record-party").value) });
    refresh();
  }));
  $("record-pick").addEventListener("change", guard(async () => {
    const id = Number($("record-pick").value);
    record = id ? await call("GET", `/api/cases/${con.caseId}/records/${id}`) : null;
    showRecord();
  }));
  $("record-header-save").addEventListener("click", guard(async () => {
    const h = JSON.parse($("record-header").value);
    record = await call("PUT", `${base()}/header`, h);
    showRecord();
  }));
  $("record-turn").addEventListener("submit", guard(async () => {
    record = await call("POST", `${base()}/turns`, { q: $("turn-q").value, a: $("turn-a").value });
    $("turn-q").value = ""; $("turn-a").value = "";
    showRecord();
  }));
  $("record-review").addEventListener("click", guard(async () => {
    record = await call("POST", `${base()}/review`); showRecord();
  }));
  $("record-finalise").addEventListener("click", guard(async () => {
    await call("POST", `${base()}/finalise`); refresh();
  }));
  $("doc-new").addEventListener("submit", guard(async () => {
    const data = $("doc-data").value.trim() ? JSON.parse($("doc-data").value) : {};
    await call("POST", `/api/cases/${con.caseId}/documents`, { kind: $("doc-kind").value, data });
    refresh();
  }));
  I18N.use("record").then(() => I18N.apply(section));
  document.addEventListener("remotecase:lang", () => { refresh().catch((e) => say(e.message)); });
  setInterval(() => { refresh().catch((e) => say(e.message)); }, 4000);
})();
