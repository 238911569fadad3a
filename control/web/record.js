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
      method, headers: { Authorization: `Bearer ${con.token}`,
                         ...(body !== undefined ? { "Content-Type": "application/json" } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const type = response.headers.get("Content-Type") || "";
    const data = type.includes("json") ? await response.json() : await response.blob();
    if (!response.ok) {
      const missing = data && data.missing ? "：" + data.missing.map((m) => m.path).join(", ") : "";
      throw new Error(((data && data.message) || `HTTP ${response.status}`) + missing);
    }
    return data;
  }

  const section = el("section", { id: "records-documents", hidden: "" },
    el("h2", {}, "询问笔录 / Inquiry record"),
    el("div", {},
      el("select", { id: "record-party" }),
      el("button", { id: "record-new" }, "新建笔录 / new record"),
      el("select", { id: "record-pick" })),
    el("textarea", { id: "record-header", rows: "6", cols: "80",
                     title: "表头 JSON / header (department, case, person, officers)" }),
    el("button", { id: "record-header-save" }, "保存表头 / save header"),
    el("ol", { id: "record-turns" }),
    el("form", { id: "record-turn" },
      el("textarea", { id: "turn-q", rows: "2", cols: "80", placeholder: "问 / question", required: "" }),
      el("textarea", { id: "turn-a", rows: "2", cols: "80", placeholder: "答 / answer" }),
      el("button", { type: "submit" }, "添加问答 / add turn")),
    el("div", {},
      el("button", { id: "record-review" }, "开始审阅 / start review"),
      el("button", { id: "record-finalise" }, "定稿并生成 / finalise")),
    el("h2", {}, "文书 / Documents"),
    el("form", { id: "doc-new" },
      el("select", { id: "doc-kind" }, ...KINDS.map((k) => el("option", {}, k))),
      el("textarea", { id: "doc-data", rows: "6", cols: "80",
                       placeholder: '其余字段 JSON / the remaining fields, e.g. {"findings": {...}, "parties": [{"id": 1, "responsibility": "全部责任"}]}' }),
      el("button", { type: "submit" }, "生成 / generate")),
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
    for (const t of record.turns) {
      const edit = el("button", { onclick: guard(async () => {
        const text = prompt(`第${t.n}问答的回答 / answer of turn ${t.n}`, t.a);
        if (text === null) return;
        if (record.phase === "writing") {
          record = await call("PUT", `${base()}/turns/${t.n}`, { a: text });
        } else {
          record = await call("POST", `${base()}/corrections`, { turn: t.n, field: "a", text });
        }
        showRecord();
      }) }, record.phase === "writing" ? "改 / edit" : "更正 / correct");
      turns.append(el("li", {}, `[${t.time} · 录像 ${t.offset}s] 问：${t.q} 答：${t.a} `, edit));
    }
    for (const c of record.corrections) {
      turns.append(el("li", { class: "muted" }, `更正 ${c.id}：${c.before} → ${c.after}（${c.status}）`));
    }
    turns.append(el("li", { class: "muted" }, `状态 / phase: ${record.phase}，版本 / version ${record.version}`));
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
      (r) => el("option", { value: String(r.id) }, `#${r.id} ${r.header.person.name} (${r.phase})`)));
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
      const item = el("li", {}, `${d.kind} ${d.number} r${d.revision} `);
      for (const r of d.required) {
        const state = signed.has(r.field) ? "✓" : r.refused ? "拒签" : "…";
        item.append(`${r.label} ${r.name} ${state} `);
        if (!signed.has(r.field) && !r.refused && r.role !== "party") {
          item.append(el("button", { onclick: guard(async () => {
            await call("POST", `/api/cases/${con.caseId}/documents/${d.id}/sign`, { field: r.field });
            refresh();
          }) }, `签 / sign ${r.field}`), " ");
        }
      }
      item.append(el("button", { onclick: guard(async () => {
        const blob = await call("GET", `/api/cases/${con.caseId}/documents/${d.id}/pdf`);
        window.open(URL.createObjectURL(blob), "_blank", "noopener");
      }) }, "PDF"));
      list.append(item);
    }
  }

  $("record-new").addEventListener("click", guard(async () => {
    if (!con.session) throw new Error("请先开启会话 / open a session first");
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
  setInterval(() => { refresh().catch((e) => say(e.message)); }, 4000);
})();
