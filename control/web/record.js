// The officer console's inquiry record editor (its header as a form prefilled from the case;
// turns written during the call, each with its time and recording offset; review, corrections,
// finalising) and the case's documents (generate through a form built from the kind's template,
// GET /api/documents/templates: only the fields the case does not fill, one group per party, the
// server's missing fields marked where they are; sign one's own box or the seal, state,
// download). The officer never types JSON; a supervisor may read the data sent (read-only).
// Labels: the template's own (Chinese, as the brigade worded it); in another language the
// catalog's rec.field.<path> where it has one, else the template's. Everything goes through the
// HTTP API; it reads the console's state (window.remotecaseConsole: the login token, the case
// and session open).
"use strict";

(() => {
  const con = window.remotecaseConsole;
  if (!con) return;
  // what the panel generates (the inquiry record is made by finalising a record above)
  const KINDS = ["determination_simple", "determination_ordinary",
    "accident_certificate", "mediation_agreement", "mediation_termination", "penalty_notice",
    "penalty_decision", "delivery_consent", "talk_record"];

  const t = (key, params) => I18N.t(key, params);
  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "onclick") node.addEventListener("click", v);
      else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v);
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
      const body = data && typeof data === "object" && !(data instanceof Blob) ? data : {};
      const err = new Error(I18N.error(body));
      if (Array.isArray(body.missing)) err.missing = body.missing;
      throw err;
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
    el("form", { id: "record-header", class: "doc-form", novalidate: "", hidden: "" },
      el("h3", { "data-i18n": "rec.header" }),
      el("div", { id: "record-header-fields" }),
      el("button", { id: "record-header-save", type: "submit", "data-i18n": "rec.header.save" })),
    el("ol", { id: "record-turns" }),
    el("form", { id: "record-turn" },
      el("textarea", { id: "turn-q", rows: "2", cols: "80", "data-i18n-placeholder": "rec.q", required: "" }),
      el("textarea", { id: "turn-a", rows: "2", cols: "80", "data-i18n-placeholder": "rec.a" }),
      el("button", { type: "submit", "data-i18n": "rec.turn.add" })),
    el("div", {},
      el("button", { id: "record-review", "data-i18n": "rec.review" }),
      el("button", { id: "record-finalise", "data-i18n": "rec.finalise" })),
    el("h2", { "data-i18n": "rec.documents" }),
    el("form", { id: "doc-new", class: "doc-form", novalidate: "" },
      el("label", {}, el("span", { "data-i18n": "rec.doc.kind" }),
        el("select", { id: "doc-kind" },
          ...KINDS.map((k) => el("option", { value: k, "data-i18n": `rec.kind.${k}` })))),
      el("p", { class: "muted", "data-i18n": "rec.doc.hint" }),
      el("div", { id: "doc-fields" }),
      el("details", { id: "doc-raw", hidden: "" },
        el("summary", { "data-i18n": "rec.doc.raw" }),
        el("pre", { id: "doc-raw-data" })),
      el("button", { type: "submit", class: "primary", "data-i18n": "rec.doc.generate" })),
    el("ul", { id: "doc-list" }),
    el("div", { id: "rd-error", role: "alert" }));
  (document.querySelector("main") || document.body).append(section);
  const $ = (id) => document.getElementById(id);
  const say = (text) => { $("rd-error").textContent = text; };
  const guard = (fn) => async (e) => { if (e && e.preventDefault) e.preventDefault();
    try { say(""); await fn(e); } catch (err) { say(err.message); } };
  let record = null;
  let caseSeen = null;
  let templates = null; // kind -> the template as a form (GET /api/documents/templates)
  let caseOfficers = null; // who may be the record's questioner and recorder (GET .../officers)
  let formParties = null; // the parties the document form was built for
  let values = {}; // what the officer typed in this case, by path (kept across kinds)
  const UNIT_KEY = "remotecase.unit"; // the unit's full name, once typed, on this device

  // dates and times as Chinese documents write them, from the pickers' values and back
  const pad = (n) => String(n).padStart(2, "0");
  function toText(input, value) {
    let m;
    if (input === "date" && (m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value))) return `${m[1]}年${m[2]}月${m[3]}日`;
    if (input === "datetime" && (m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(value))) {
      return `${m[1]}年${m[2]}月${m[3]}日 ${m[4]}时${m[5]}分`;
    }
    return value;
  }
  function fromText(input, text) {
    const m = /^(\d{4})年(\d{1,2})月(\d{1,2})日(?:\s*(\d{1,2})时(\d{1,2})分)?/.exec(String(text || ""));
    if (!m) return input === "date" || input === "datetime" ? "" : String(text ?? "");
    const day = `${m[1]}-${pad(m[2])}-${pad(m[3])}`;
    return input === "date" ? day : `${day}T${pad(m[4] || 0)}:${pad(m[5] || 0)}`;
  }

  // the label of a field: the template's own in Chinese; the catalog's in another language
  function label(path, own) {
    const generic = path.replace(/^person\./, "parties[].").replace(/^(parties|officers)\.\d+\./, "$1[].")
      .replace(/\[\d+\]/g, "[]");
    if (I18N.lang !== "zh-CN" && I18N.has(`rec.field.${path}`)) return t(`rec.field.${path}`);
    if (I18N.lang !== "zh-CN" && I18N.has(`rec.field.${generic}`)) return t(`rec.field.${generic}`);
    if (own) return own;
    return I18N.has(`rec.field.${generic}`) ? t(`rec.field.${generic}`) : t("rec.field.other");
  }

  // one labelled input; data-path names the concrete path the server's `missing` uses
  function field(path, own, input, value, opts = {}) {
    const id = `f-${opts.prefix || "d"}-${path.replace(/[^a-z0-9]+/gi, "-")}`;
    const attrs = { id, "data-path": path, "data-input": input, "aria-required": opts.required ? "true" : undefined,
                    readonly: opts.readonly ? "" : undefined };
    let control;
    if (input === "long") control = el("textarea", { ...attrs, rows: "4" });
    else control = el("input", { ...attrs, type: { date: "date", datetime: "datetime-local", number: "number" }[input] || "text" });
    control.value = input === "date" || input === "datetime" ? fromText(input, value) : (value ?? "");
    if ((input === "date" || input === "datetime") && value && !control.value) {
      control.type = "text"; control.value = String(value); control.dataset.input = "text"; // kept as written
    }
    const caption = el("span", {}, label(path, own));
    if (opts.required) caption.append(el("abbr", { class: "required", title: t("rec.required") }, " *"));
    return el("label", { for: id, class: input === "long" ? "wide" : undefined }, caption, control,
      el("span", { class: "field-error", role: "alert", hidden: "" }));
  }
  const read = (control) => toText(control.dataset.input, control.value.trim());

  // the case's parties as the server lists them in a document (agents sign only the mediation's)
  const docParties = () => ((con.case && con.case.parties) || [])
    .filter((p) => p.role !== "agent").sort((a, b) => a.id - b.id);

  async function loadTemplates() {
    if (templates) return templates;
    const answer = await call("GET", "/api/documents/templates");
    templates = Object.fromEntries(answer.templates.map((tpl) => [tpl.kind, tpl]));
    for (const option of [...$("doc-kind").options]) {
      if (!templates[option.value]) option.remove();
      else if (!I18N.has(`rec.kind.${option.value}`)) option.textContent = templates[option.value].title;
    }
    return templates;
  }

  function buildDocForm() {
    const tpl = templates && templates[$("doc-kind").value];
    const box = $("doc-fields");
    box.replaceChildren();
    if (!tpl) return;
    const asked = tpl.fields.filter((f) => !f.filled && !f.path.startsWith("officers"));
    const common = asked.filter((f) => f.party === null);
    const unit = localStorage.getItem(UNIT_KEY) || (con.case && con.case.brigade) || "";
    const prefill = (path) => values[path] ?? (path === "department.name" ? unit : "");
    if (common.length) {
      box.append(el("fieldset", {}, el("legend", {}, t("rec.doc.group.case")),
        ...common.map((f) => field(f.path, f.label, f.input, prefill(f.path), { required: f.required }))));
    }
    const perParty = asked.filter((f) => f.party !== null);
    docParties().forEach((p, i) => {
      const mine = perParty.filter((f) => f.party === "each" || f.party === i);
      if (!mine.length) return;
      const set = el("fieldset", { "data-party-id": String(p.id) },
        el("legend", {}, t("rec.doc.group.party", { n: i + 1, name: p.name })));
      for (const f of mine) {
        const path = f.party === "each" ? f.path.replace("parties[]", `parties[${i}]`) : f.path;
        set.append(field(path, f.label, f.input, values[path] ?? "", { required: f.required, prefix: `p${p.id}` }));
      }
      box.append(set);
    });
    if (perParty.length && !docParties().length) box.append(el("p", { class: "warn" }, t("rec.doc.no_parties")));
    showRaw();
  }

  // the request the form makes: sections by path, each party's fields under its ID
  function docData() {
    const parties = docParties();
    const data = {};
    const given = parties.map((p) => ({ id: p.id }));
    for (const control of $("doc-fields").querySelectorAll("[data-path]")) {
      const path = control.dataset.path;
      const value = read(control);
      values[path] = control.value.trim() ? value : undefined;
      if (!value) continue;
      let node, parts;
      const each = /^parties\[(\d+)\]\.(.+)$/.exec(path);
      const one = /^parties\.(\d+)\.(.+)$/.exec(path);
      if (each || one) { node = given[Number((each || one)[1])]; parts = (each || one)[2].split("."); }
      else { node = data; parts = path.split("."); }
      if (!node) continue;
      for (const key of parts.slice(0, -1)) node = node[key] = node[key] || {};
      node[parts[parts.length - 1]] = value;
    }
    if (given.some((g) => Object.keys(g).length > 1)) data.parties = given.filter((g) => Object.keys(g).length > 1);
    return data;
  }
  function showRaw() {
    const supervisor = con.officer && con.officer.role === "supervisor";
    $("doc-raw").hidden = !supervisor;
    if (supervisor) $("doc-raw-data").textContent = JSON.stringify({ kind: $("doc-kind").value, data: docData() }, null, 1);
  }

  // the server's missing fields, each at its input; those the form has no input for, in words
  function markMissing(form, missing) {
    for (const node of form.querySelectorAll(".field-error")) { node.hidden = true; node.textContent = ""; }
    for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
    const elsewhere = [];
    let first = null;
    for (const m of missing || []) {
      const control = form.querySelector(`[data-path="${CSS.escape(m.path)}"]`);
      if (!control) { elsewhere.push(m.label); continue; }
      control.setAttribute("aria-invalid", "true");
      const note = control.parentElement.querySelector(".field-error");
      note.textContent = t("rec.doc.missing_here"); note.hidden = false;
      first = first || control;
    }
    if (first) first.focus();
    return elsewhere;
  }
  async function withMissing(form, fn) {
    try { markMissing(form, []); await fn(); } catch (err) {
      if (!err.missing) throw err;
      const elsewhere = markMissing(form, err.missing);
      throw new Error(t("rec.doc.missing", { n: err.missing.length }) +
        (elsewhere.length ? " " + t("rec.doc.missing_elsewhere", { fields: elsewhere.join(t("list.sep")) }) : ""));
    }
  }

  // the record's header: unit, the questioning, the person questioned, the officers
  const HEADER = [
    ["department.name", "text"], ["case.place", "text"], ["case.start_time", "datetime"],
    ["case.end_time", "datetime"], ["case.inquiry_no", "number"], ["case.interpreter", "text"],
    ["case.rights_told", "long"],
    ["person.name", "text"], ["person.sex", "text"], ["person.birth_date", "date"],
    ["person.id_type", "text"], ["person.id_number", "text"], ["person.address", "text"],
    ["person.phone", "text"],
  ];
  let headerShown = ""; // which version of which record the form shows (typing is kept meanwhile)
  function showHeader(force) {
    const form = $("record-header");
    form.hidden = !record;
    if (!record) { headerShown = ""; return; }
    const shown = `${record.id}:${record.version}:${record.phase}`;
    if (shown === headerShown && !force) return;
    headerShown = shown;
    const own = Object.fromEntries(((templates && templates.inquiry_record) || { fields: [] }).fields
      .map((f) => [f.path.replace(/^parties\.0\./, "person."), f.label]));
    const h = record.header;
    const final = record.phase === "final";
    const pick = (path) => path.split(".").reduce((n, k) => (n == null ? n : n[k]), h);
    const groups = [["rec.header.case", "department.", "case."], ["rec.header.person", "person."]];
    const box = $("record-header-fields");
    box.replaceChildren(...groups.map(([legend, ...roots]) => el("fieldset", {},
      el("legend", {}, t(legend)),
      ...HEADER.filter(([p]) => roots.some((r) => p.startsWith(r))).map(([p, input]) =>
        field(p, own[p], input, pick(p), { prefix: "h", readonly: final })))));
    // the questioner and the recorder: accounts that may act in this case, each with a badge
    const officers = el("fieldset", {}, el("legend", {}, t("rec.header.officers")));
    const known = caseOfficers || [];
    for (const i of [0, 1]) {
      const o = (h.officers || [])[i] || {};
      const id = `f-h-officers-${i}-account`;
      const choose = el("select", { id, "data-path": `officers.${i}.name`, "data-input": "account",
                                    disabled: final ? "" : undefined },
        ...(i ? [el("option", { value: "" }, t("rec.header.nobody"))] : []),
        ...known.map((k) => el("option", { value: String(k.account) }, k.name)));
      if (o.account && !known.some((k) => k.account === o.account)) {
        choose.append(el("option", { value: String(o.account) }, o.name || String(o.account)));
      }
      choose.value = o.account ? String(o.account) : "";
      officers.append(el("label", { for: id }, el("span", {}, label(`officers.${i}.name`, own[`officers.${i}.name`])),
        choose, el("span", { class: "field-error", role: "alert", hidden: "" })),
        field(`officers.${i}.badge`, "", "text", o.badge, { prefix: "h", readonly: final }));
    }
    box.append(officers);
    $("record-header-save").hidden = final;
  }
  function headerBody() {
    const body = { department: {}, case: {}, person: {} };
    const officers = [];
    for (const control of $("record-header-fields").querySelectorAll("[data-path]")) {
      const [root, key, sub] = control.dataset.path.split(".");
      if (root === "officers") {
        const n = Number(key);
        if (control.dataset.input === "account") officers[n] = { ...(officers[n] || {}), account: Number(control.value) || null };
        else if (sub === "badge") officers[n] = { ...(officers[n] || {}), badge: read(control) };
        continue;
      }
      body[root][key] = control.dataset.input === "number" && control.value ? Number(control.value) : read(control);
    }
    return { ...body, officers: officers.filter((o) => o && o.account) };
  }

  function showRecord() {
    const turns = $("record-turns");
    turns.replaceChildren();
    showHeader();
    if (!record) return;
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

  const kindName = (kind) => (I18N.has(`rec.kind.${kind}`) ? t(`rec.kind.${kind}`)
    : (templates && templates[kind] ? templates[kind].title : t("rec.kind.other")));
  const base = () => `/api/cases/${con.caseId}/records/${record.id}`;

  async function refresh() {
    if (!con.caseId || !con.token) { section.hidden = true; return; }
    section.hidden = false;
    if (caseSeen !== con.caseId) {
      caseSeen = con.caseId; record = null; values = {}; $("doc-fields").replaceChildren();
      caseOfficers = null;
    }
    if (!caseOfficers) caseOfficers = (await call("GET", `/api/cases/${con.caseId}/officers`)).officers;
    const partiesKey = docParties().map((p) => `${p.id}:${p.name}`).join(",");
    if (!templates || partiesKey !== formParties) {
      await loadTemplates(); docData(); formParties = partiesKey; buildDocForm();
    }
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
      const item = el("li", { "data-document-id": String(d.id), "data-kind": d.kind },
        t("rec.doc.item", { kind: kindName(d.kind), number: d.number, revision: d.revision }), " ");
      for (const r of d.required) {
        const state = t(signed.has(r.field) ? "rec.box.signed" : r.refused ? "rec.box.refused" : "rec.box.open");
        item.append(t("rec.box", { label: r.label, name: r.name, state }), " ");
        if (!signed.has(r.field) && !r.refused && r.role !== "party") {
          item.append(el("button", { onclick: guard(async () => {
            await call("POST", `/api/cases/${con.caseId}/documents/${d.id}/sign`, { field: r.field });
            refresh();
          }) }, t("rec.box.sign", { label: r.label })), " ");
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
  $("record-header").addEventListener("submit", guard(async () => {
    const body = headerBody();
    await withMissing($("record-header"), async () => {
      record = await call("PUT", `${base()}/header`, body);
    });
    showRecord();
    say(t("rec.header.saved"));
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
  $("doc-kind").addEventListener("change", () => { docData(); buildDocForm(); });
  $("doc-fields").addEventListener("input", showRaw);
  $("doc-new").addEventListener("submit", guard(async () => {
    const data = docData();
    const unit = data.department && data.department.name;
    let made;
    await withMissing($("doc-new"), async () => {
      made = await call("POST", `/api/cases/${con.caseId}/documents`, { kind: $("doc-kind").value, data });
    });
    if (unit) localStorage.setItem(UNIT_KEY, unit);
    await refresh();
    say(t("rec.doc.made", { kind: kindName(made.kind), number: made.number }));
  }));
  I18N.use("record").then(() => I18N.apply(section));
  document.addEventListener("remotecase:lang", () => {
    docData(); buildDocForm(); showHeader(true); refresh().catch((e) => say(e.message));
  });
  setInterval(() => { refresh().catch((e) => say(e.message)); }, 4000);
})();
