// remotecase officer console: the shell (login, language, views), the case workspace (parties,
// materials, evidence display, the session and its identity checks) and the officers' event
// stream (/api/events), all through the HTTP API (/api/docs). The other parts of the workspace
// are scripts of their own that register here (con.part): call.js, calendar.js,
// recordings.js, stats.js; record.js reads window.remotecaseConsole. Every text comes from the
// catalogs (/static/i18n/<lang>/console.json, zh-CN first) through I18N.t.
"use strict";

const con = {
  token: sessionStorage.getItem("remotecase-login"),
  officer: null, caseId: null, case: null, session: null, events: null,
  participants: {},   // participant id -> {name, role, state, reason, message, guidance}
  prejoinSeen: {},    // participant id -> last prejoin status shown in the events list
  faces: {},          // participant id -> face state heard before the participant was known
  parts: [],          // the workspace's other parts: {name, caseOpened, event, lang, view}
};
window.remotecaseConsole = con;  // for record.js, the other parts, tests and debugging

(() => {
  const $ = (id) => document.getElementById(id);
  const t = (key, params) => I18N.t(key, params);

  // -- words for what went wrong ---------------------------------------------------------
  class ApiError extends Error {
    constructor(body, status) {
      super(I18N.error(body));
      this.body = body; this.status = status;
    }
  }

  function showError(err) {
    const text = !err ? "" : err instanceof ApiError ? err.message
      : err instanceof TypeError ? t("error.network") : String(err.message || err);
    $("error").textContent = text;
    if (text) $("error").scrollIntoView({ block: "nearest" });
  }
  function notice(text) { $("notice").textContent = text || ""; }
  // a server text written "中文 / English" (the verifier's advice): the page's language's half
  function words(text) {
    const at = String(text || "").indexOf(" / ");
    if (at < 0) return String(text || "");
    return I18N.lang === "zh-CN" ? text.slice(0, at) : text.slice(at + 3);
  }
  con.words = words;
  con.showError = showError;
  con.notice = notice;

  async function api(method, path, body, raw) {
    const headers = I18N.headers(con.token ? { Authorization: `Bearer ${con.token}` } : {});
    const init = { method, headers };
    if (raw !== undefined) { init.body = raw; }
    else if (body !== undefined) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    const response = await fetch(path, init);
    const type = response.headers.get("Content-Type") || "";
    const data = type.includes("json") ? await response.json() : await response.blob();
    if (!response.ok) {
      if (response.status === 401 && !path.startsWith("/api/login")) logout(t("error.session_expired"));
      throw new ApiError(typeof data === "object" && !(data instanceof Blob) ? data : {}, response.status);
    }
    return data;
  }
  con.api = api;

  // run an action from a button or form: errors in words, never a silent failure
  const guard = (fn) => async (e) => {
    if (e && e.preventDefault) e.preventDefault();
    showError("");
    try { await fn(e); } catch (err) { showError(err); }
  };
  con.guard = guard;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }
  con.el = el;

  function button(text, onClick, cls) {
    const b = el("button", { type: "button", text, class: cls || "" });
    b.addEventListener("click", guard(onClick));
    return b;
  }
  con.button = button;

  function reasonOr(key) { return $("action-reason").value.trim() || t(key); }

  // -- language ---------------------------------------------------------------------------
  $("lang").addEventListener("click", guard(async () => {
    await I18N.setLang(I18N.lang === "zh-CN" ? "en" : "zh-CN");
  }));
  document.addEventListener("remotecase:lang", () => {
    rerender();
    for (const p of con.parts) if (p.lang) p.lang();
  });

  // -- login ------------------------------------------------------------------------------
  $("login-form").addEventListener("submit", guard(async () => {
    const body = await api("POST", "/api/login", { username: $("username").value, password: $("password").value })
      .catch((err) => {
        if (err instanceof ApiError && err.status === 401) throw new Error(t("error.bad_credentials"));
        throw err;
      });
    con.token = body.token;
    sessionStorage.setItem("remotecase-login", con.token);
    $("password").value = "";
    await start();
  }));

  function logout(why) {
    if (con.token) fetch("/api/logout", { method: "POST", headers: { Authorization: `Bearer ${con.token}` } }).catch(() => {});
    con.token = null;
    sessionStorage.removeItem("remotecase-login");
    if (con.events) { const ws = con.events; con.events = null; ws.close(); }
    if (con.call) con.call.leave();
    $("desk").hidden = true; $("login").hidden = false; $("logout").hidden = true; $("nav").hidden = true;
    $("who").textContent = "";
    if (typeof why === "string") showError(why);
  }
  $("logout").addEventListener("click", () => logout());

  async function start() {
    $("login").hidden = true; $("desk").hidden = false; $("logout").hidden = false; $("nav").hidden = false;
    connectEvents();
    await loadCases();
    await route();
  }

  // -- views: #cases, #case/<id>, #calendar, #stats, #overdue ----------------------------
  async function route() {
    const hash = location.hash.replace(/^#/, "") || "cases";
    const [view, id] = hash.split("/");
    // the views are the page's <div class="view" id="view-NAME"> (a part may add one)
    const views = [...document.querySelectorAll("#desk > .view")].map((v) => v.id.replace(/^view-/, ""));
    const name = [...views, "case"].includes(view) ? view : "cases";
    const shown = name === "case" ? "cases" : name;
    notice("");  // what was said belongs to the view left
    for (const v of views) $(`view-${v}`).hidden = v !== shown;
    $("view-cases").classList.toggle("has-case", name === "case" && Boolean(con.caseId || Number(id)));
    for (const a of document.querySelectorAll("#nav a")) {
      if (a.dataset.view === shown) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
    if (name === "case" && Number(id) && Number(id) !== con.caseId) await openCase(Number(id));
    for (const p of con.parts) if (p.view) await p.view(shown);
  }
  window.addEventListener("hashchange", () => { if (con.token) guard(route)(); });

  // -- cases ------------------------------------------------------------------------------
  function kindText(kind) { return t(`kind.${kind}`); }
  function statusText(status) { return t(`case.status.${status}`); }

  async function loadCases() {
    const { cases } = await api("GET", "/api/cases");
    con.cases = cases;
    renderCases();
  }

  function renderCases() {
    const list = $("cases");
    list.replaceChildren();
    for (const c of con.cases || []) {
      const link = el("a", { href: `#case/${c.id}`, text: t("cases.item", { id: c.id, kind: kindText(c.kind), title: c.title }) });
      const li = el("li", { "data-case-id": String(c.id) }, link);
      li.addEventListener("click", (e) => { if (e.target === li) location.hash = `#case/${c.id}`; });
      if (c.status !== "open") li.append(" ", el("span", { class: "muted", text: statusText(c.status) }));
      if (c.id === con.caseId) { li.classList.add("current"); link.setAttribute("aria-current", "true"); }
      list.append(li);
    }
    if (!list.children.length) list.append(el("li", { class: "muted", text: t("cases.empty") }));
  }

  $("new-case").addEventListener("submit", guard(async () => {
    const created = await api("POST", "/api/cases", { kind: $("case-kind").value, title: $("case-title").value });
    $("case-title").value = "";
    await loadCases();
    location.hash = `#case/${created.id}`;
    await openCase(created.id);
  }));

  async function openCase(id) {
    showError("");
    const changed = con.caseId !== id;
    con.caseId = id;
    con.case = await api("GET", `/api/cases/${id}`);
    if (changed) {
      con.participants = {}; con.prejoinSeen = {}; con.faces = {};
      $("events").replaceChildren();
      if (con.call) con.call.leave();
      subscribe();
    }
    const open = con.case.sessions.find((s) => !s.ended_at);
    con.session = open || null;
    if (open && changed) await loadVerification();
    renderCase();
    await loadPrejoin();
    await loadAudit();
    for (const p of con.parts) if (p.caseOpened) await p.caseOpened(con.case);
  }
  con.openCase = openCase;
  con.reload = () => openCase(con.caseId);

  function renderCase() {
    const c = con.case;
    if (!c) return;
    $("case").hidden = false;
    $("case-heading").textContent = t("case.heading", { id: c.id, kind: kindText(c.kind), status: statusText(c.status), title: c.title });
    renderCases();
    renderParties();
    renderMaterials();
    const open = con.session;
    $("session-none").hidden = Boolean(open) || c.status !== "open";
    $("session-open").hidden = !open;
    $("identity-panel").hidden = !open;
    $("show").hidden = !open;
    if (open) $("session-room").textContent = open.room;
    renderParticipants();
  }

  function renderParties() {
    const c = con.case;
    const parties = $("parties");
    parties.replaceChildren();
    for (const p of c.parties) {
      const details = [t(`role.${p.role}`), p.id_number_masked, p.phone].filter(Boolean).join(" · ");
      const link = el("span", { class: "link" });
      const invite = button(t("parties.invite"), async () => {
        const made = await api("POST", `/api/cases/${c.id}/invitations`, { party_id: p.id, valid_hours: 48 });
        const url = new URL(made.link, location.href).href;
        link.replaceChildren(el("code", { text: url }));
        link.dataset.link = url;
        notice(t("parties.invite.made", { name: p.name }));
      });
      const reference = button(t("reference.file"), async () => {
        const input = $("reference-file");
        input.dataset.partyId = String(p.id);
        input.click();
      });
      const appointment = (c.appointments || []).find((a) => a.party_id === p.id && a.status === "booked");
      const li = el("li", { "data-party-id": String(p.id) },
        el("strong", { text: p.name }), " ", el("span", { class: "muted", text: details }), " ",
        invite, " ", reference,
        appointment ? el("div", { class: "muted", text: t("parties.appointment", { when: I18N.dateTime(appointment.starts_at) }) }) : null,
        link);
      parties.append(li);
    }
    if (!c.parties.length) parties.append(el("li", { class: "muted", text: t("parties.empty") }));
  }

  $("reference-file").addEventListener("change", guard(async () => {
    const input = $("reference-file");
    const file = input.files[0];
    if (!file) return;
    input.value = "";
    await enrollReference(Number(input.dataset.partyId), file);
  }));

  async function enrollReference(partyId, blob) {
    const party = con.case.parties.find((p) => p.id === partyId);
    await api("PUT", `/api/cases/${con.caseId}/parties/${partyId}/reference`, undefined, blob);
    notice(t("reference.enrolled", { name: party ? party.name : partyId }));
    await loadAudit();
  }
  con.enrollReference = enrollReference;

  function renderMaterials() {
    const c = con.case;
    const materials = $("materials"); const choose = $("show-material");
    materials.replaceChildren(); choose.replaceChildren();
    for (const m of c.materials) {
      const who = m.origin === "party"
        ? t("materials.from_party", { name: (c.parties.find((p) => p.id === m.party_id) || {}).name || m.party_id })
        : t("materials.evidence");
      materials.append(el("li", { "data-material-id": String(m.id) }, el("strong", { text: m.name }), " ",
        el("span", { class: "muted", text: t("materials.item", { who, type: m.media_type, size: formatSize(m.size), hash: m.sha256.slice(0, 12) }) })));
      choose.append(el("option", { value: m.id, text: m.name }));
    }
    if (!c.materials.length) materials.append(el("li", { class: "muted", text: t("materials.empty") }));
  }

  function formatSize(bytes) {
    if (bytes < 1024) return t("size.bytes", { n: bytes });
    if (bytes < 1024 * 1024) return t("size.kib", { n: (bytes / 1024).toFixed(1) });
    return t("size.mib", { n: (bytes / 1048576).toFixed(1) });
  }

  $("new-party").addEventListener("submit", guard(async () => {
    const body = { role: $("party-role").value, name: $("party-name").value };
    if ($("party-id").value) body.id_number = $("party-id").value;
    if ($("party-phone").value) body.phone = $("party-phone").value;
    await api("POST", `/api/cases/${con.caseId}/parties`, body);
    for (const f of ["party-name", "party-id", "party-phone"]) $(f).value = "";
    await openCase(con.caseId);
  }));

  $("upload").addEventListener("submit", guard(async () => {
    const file = $("upload-file").files[0];
    if (!file) return;
    await api("POST", `/api/cases/${con.caseId}/materials?name=${encodeURIComponent(file.name)}`, undefined, file);
    $("upload-file").value = "";
    notice(t("materials.attached", { name: file.name }));
    await openCase(con.caseId);
  }));

  // -- the session ------------------------------------------------------------------------
  $("open-session").addEventListener("submit", guard(async () => {
    await api("POST", `/api/cases/${con.caseId}/sessions`, { purpose: $("session-purpose").value });
    con.participants = {};
    await openCase(con.caseId);
  }));

  function sessionPath(suffix) { return `/api/cases/${con.caseId}/sessions/${con.session.id}${suffix}`; }
  con.sessionPath = sessionPath;

  $("show").addEventListener("submit", guard(async () => {
    // the event stream reports it (with the mode: stream copy, transcoded or still)
    await api("POST", sessionPath("/display"), {
      material_id: $("show-material").value, page: Number($("show-page").value) || 1,
      reason: $("show-reason").value,
    });
  }));
  $("stop-show").addEventListener("click", guard(() =>
    api("POST", sessionPath("/display/stop"), { reason: $("show-reason").value.trim() || t("display.stop.reason") })));

  for (const b of document.querySelectorAll("#room-actions [data-action]")) {
    b.addEventListener("click", guard(async () => {
      await api("POST", sessionPath(`/${b.dataset.action}`), { reason: reasonOr(`session.${b.dataset.action}.reason`) });
      notice(t(`session.${b.dataset.action}.done`));
      await loadAudit();
    }));
  }
  $("end-session").addEventListener("click", guard(async () => {
    const reason = $("action-reason").value.trim();
    if (!reason) { $("action-reason").focus(); throw new Error(t("session.end.need_reason")); }
    if (con.call) con.call.leave();
    await api("POST", sessionPath("/end"), { reason });
    $("action-reason").value = "";
    notice(t("session.ended"));
    await openCase(con.caseId);
  }));

  function faceText(p) {
    if (!p.state) return "";
    // a picture too poor to judge is advice for the officer to pass on, not an alert
    if (p.state === "low_quality" && p.message) return t("face.low_quality.advice", { message: con.words(p.message), guidance: con.words(p.guidance) });
    const state = I18N.has(`face.${p.state}`) ? t(`face.${p.state}`) : p.state;
    return p.reason && I18N.has(`face.reason.${p.reason}`) ? t("text.aside", { text: state, aside: t(`face.reason.${p.reason}`) }) : state;
  }
  con.faceText = faceText;

  function renderParticipants() {
    const list = $("participants");
    list.replaceChildren();
    for (const [pid, p] of Object.entries(con.participants)) {
      const state = el("span", { class: `state-${p.state || "none"}`, text: faceText(p) });
      const role = I18N.has(`participant.${p.role}`) ? t(`participant.${p.role}`) : (p.role || "");
      const li = el("li", { "data-participant": pid }, el("strong", { text: p.name || pid }), " ",
        el("span", { class: "muted", text: role }), " ", state);
      const muted = Object.entries(p.muted || {}).filter(([, on]) => on).map(([kind]) => t(`call.muted.${kind}`));
      if (muted.length) li.append(" ", el("span", { class: "warn", text: muted.join(t("list.sep")) }));
      if (p.role === "party") {
        const controls = el("div", { class: "row" },
          button(t("call.mute"), () => api("POST", sessionPath("/mute"), { participant: pid, reason: reasonOr("call.mute.reason") })),
          // only the officer lifts the officer's mute: the party's own unmute is refused
          button(t("call.unmute"), () => api("POST", sessionPath("/unmute"), { participant: pid, reason: reasonOr("call.unmute.reason") })),
          button(t("call.remove"), () => api("POST", sessionPath("/remove"), { participant: pid, reason: reasonOr("call.remove.reason") }), "danger"));
        const partyId = Number((pid.match(/^party-(\d+)$/) || [])[1]);
        if (partyId && con.call && con.call.hasVideo(pid)) {
          controls.append(button(t("reference.snapshot"), async () => {
            await enrollReference(partyId, await con.call.snapshot(pid));
          }));
        }
        li.append(controls);
      }
      list.append(li);
    }
    if (!list.children.length) list.append(el("li", { class: "muted", text: t("call.nobody") }));
    if (con.call) con.call.relabel();
  }
  con.renderParticipants = renderParticipants;

  async function loadVerification() {
    // the state now (the stream then carries its changes only)
    try {
      const { participants } = await api("GET", sessionPath("/verification"));
      for (const [pid, v] of Object.entries(participants || {})) {
        const p = con.participants[pid] || (con.faces[pid] ||= {});
        p.state = v.state; p.reason = v.reason;
      }
    } catch (err) { /* the verifier may be off: nothing to show */ }
  }

  // -- the identity check before joining ---------------------------------------------------
  let prejoinTimer = null;
  function schedulePrejoin() {
    if (prejoinTimer) return;
    prejoinTimer = setTimeout(() => { prejoinTimer = null; loadPrejoin().catch(showError); }, 200);
  }

  async function loadPrejoin() {
    const list = $("prejoin");
    if (!con.session) { list.replaceChildren(); return; }
    const view = con.prejoin = await api("GET", sessionPath("/prejoin"));
    renderPrejoin();
    return view;
  }

  function renderPrejoin() {
    const view = con.prejoin;
    const list = $("prejoin");
    list.replaceChildren();
    if (!view || !con.session) return;
    const choose = $("attest-party");
    const chosen = choose.value;
    choose.replaceChildren();
    for (const p of view.parties) {
      const status = I18N.has(`prejoin.status.${p.status}`) ? t(`prejoin.status.${p.status}`) : p.status;
      const li = el("li", { "data-party-id": String(p.party_id), "data-status": p.status, class: `prejoin-${p.status}` },
        el("strong", { text: p.name }), " ", status);
      if (p.attempt) li.append(" ", el("span", { class: "muted", text: t("prejoin.progress", { attempt: p.attempt, matches: p.matches, needed: view.rules.needed, samples: p.samples }) }));
      // consent is known once the party used its link and reached the check
      if (!p.face_consent && p.status !== "none") li.append(el("div", { class: "warn", text: t("prejoin.no_consent") }));
      if (p.reason) li.append(el("div", { class: "muted", text: p.reason }));
      if (p.attestation) li.append(el("div", { text: t("prejoin.attested", { type: t(`doc.${p.attestation.document_type}`), digits: p.attestation.document_last_digits, by: p.attestation.by }) }));
      if (!p.admitted) {
        li.append(el("div", { class: "row" },
          button(t("prejoin.admit"), async () => {
            const reason = $("action-reason").value.trim();
            if (!reason) { $("action-reason").focus(); throw new Error(t("prejoin.admit.need_reason")); }
            await api("POST", sessionPath(`/prejoin/${p.party_id}/admit`), { reason });
            await loadPrejoin();
          }),
          p.still ? button(t("prejoin.show_still"), () => showStill(p.party_id)) : null));
        choose.append(el("option", { value: p.party_id, text: p.name }));
      }
      list.append(li);
    }
    if (!view.parties.length) list.append(el("li", { class: "muted", text: t("parties.empty") }));
    if ([...choose.options].some((o) => o.value === chosen)) choose.value = chosen;
    $("attest").hidden = !choose.options.length;
  }

  let stillUrl = null;
  async function showStill(partyId) {
    const blob = await api("GET", sessionPath(`/prejoin/${partyId}/still`));
    if (stillUrl) URL.revokeObjectURL(stillUrl);
    stillUrl = URL.createObjectURL(blob);
    const img = $("prejoin-still");
    img.src = stillUrl; img.hidden = false; img.dataset.partyId = partyId;
    $("attest-party").value = String(partyId);
  }

  $("attest").addEventListener("submit", guard(async () => {
    if (!/^[0-9A-Za-z]{2,6}$/.test($("attest-digits").value)) throw new Error(t("attest.digits.bad"));
    await api("POST", sessionPath(`/prejoin/${$("attest-party").value}/attest`), {
      document_type: $("attest-type").value, document_last_digits: $("attest-digits").value,
      note: $("attest-note").value,
    });
    $("attest-digits").value = ""; $("attest-note").value = "";
    $("prejoin-still").hidden = true;
    await loadPrejoin();
  }));

  // -- audit ------------------------------------------------------------------------------
  async function loadAudit() {
    const { audit } = await api("GET", `/api/cases/${con.caseId}/audit`);
    con.audit = audit;
    renderAudit();
  }
  con.loadAudit = loadAudit;

  // who did it, in words: "officer:li" is 民警 li, "party:3" the party's name
  function actorText(actor) {
    const [kind, ...rest] = String(actor).split(":");
    const who = rest.join(":");
    if (kind === "party") {
      const party = ((con.case && con.case.parties) || []).find((p) => String(p.id) === who);
      return t("audit.actor.party", { name: party ? party.name : `#${who}` });
    }
    return I18N.has(`audit.actor.${kind}`) ? t(`audit.actor.${kind}`, { name: who }) : actor;
  }

  function renderAudit() {
    $("audit").replaceChildren(...(con.audit || []).slice(-12).reverse().map((a) => {
      const action = I18N.has(`audit.${a.action}`) ? t(`audit.${a.action}`) : a.action;
      return el("li", { "data-action": a.action, "data-actor": a.actor },
        `${I18N.time(a.time)} ${actorText(a.actor)} ${action}`,
        a.reason ? el("span", { class: "muted", text: ` — ${a.reason}` }) : null);
    }));
  }

  // -- events: changes only ---------------------------------------------------------------
  // The hub drops the verifier's repeats at the source (control/events.py); a party's check
  // before joining reports every still, which updates the identity panel but is written in
  // the list only when its status changes.
  function eventText(ev) {
    const who = (con.participants[ev.participant] || {}).name || ev.name || ev.participant || "";
    switch (ev.type) {
      case "participant_joined": return t("event.joined", { who });
      case "participant_left": return t("event.left", { who, reason: I18N.has(`leave.${ev.reason}`) ? t(`leave.${ev.reason}`) : ev.reason || "" });
      case "verification": return t("event.face", { who, state: faceText(ev) });
      case "prejoin": return t("event.prejoin", { who, status: I18N.has(`prejoin.status.${ev.status}`) ? t(`prejoin.status.${ev.status}`) : ev.status });
      case "recording": return t(`event.recording.${ev.state === "sealed" ? "sealed" : "started"}`);
      case "recording_failure": return t("event.recording.failed", { kind: ev.kind || "" });
      case "session": return t(`event.session.${ev.state === "ended" ? "ended" : "opened"}`);
      case "display": return ev.state === "ended" ? t("event.display.ended") : t("event.display.shown", { mode: I18N.has(`display.mode.${ev.mode}`) ? t(`display.mode.${ev.mode}`) : ev.mode || "" });
      case "room_closed": return t("event.room_closed");
      case "dropped": return t("event.dropped", { count: ev.count });
      case "record.saved": return t("event.record.saved", { record: ev.record, version: ev.version });
      default:
        if (ev.type.startsWith("document.")) {
          return t("event.document", { action: I18N.has(`audit.${ev.type}`) ? t(`audit.${ev.type}`) : ev.type, revision: ev.revision ?? "" });
        }
        return I18N.has(`event.${ev.type}`) ? t(`event.${ev.type}`) : ev.type;
    }
  }

  function addEvent(ev) {
    if (ev.type === "prejoin") {
      if (con.prejoinSeen[ev.participant] === ev.status) return;
      con.prejoinSeen[ev.participant] = ev.status;
    }
    const list = $("events");
    list.prepend(el("li", { "data-type": ev.type, "data-state": ev.state || ev.status || "" },
      el("time", { text: I18N.time(ev.time || new Date()) }), " ", eventText(ev)));
    while (list.children.length > 200) list.lastChild.remove();
  }

  function subscribe() {
    if (con.events && con.events.readyState === 1) con.events.send(JSON.stringify({ type: "subscribe", case: con.caseId }));
  }

  function connectEvents() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = con.events = new WebSocket(`${scheme}://${location.host}/api/events`);
    ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token: con.token }));
    ws.onmessage = (message) => {
      const ev = JSON.parse(message.data);
      if (ev.type === "ready") {
        con.officer = ev;
        $("who").textContent = t("who", { officer: ev.officer, role: t(`officer.role.${ev.role}`), brigade: ev.brigade });
        subscribe();
        return;
      }
      if (ev.type === "subscribed") return;
      if (ev.type === "error") { showError(I18N.error(ev)); return; }
      if (ev.case !== undefined && ev.case !== con.caseId) return;
      if (ev.type === "participant_joined") {
        con.participants[ev.participant] = { ...(con.faces[ev.participant] || {}), ...(con.participants[ev.participant] || {}), name: ev.name, role: ev.role };
      }
      addEvent(ev);
      if (ev.type === "participant_left") delete con.participants[ev.participant];
      if (ev.type === "verification") {
        // kept for a participant not (yet) known here, given to it when it joins
        const p = con.participants[ev.participant] || (con.faces[ev.participant] ||= {});
        p.state = ev.state; p.reason = ev.reason; p.message = ev.message; p.guidance = ev.guidance;
      }
      if (ev.type === "prejoin" || ev.type === "participant_joined") schedulePrejoin();
      if (ev.type === "session" || ev.type === "room_closed") con.participants = {};
      if (ev.type === "session" && ev.state === "ended" && con.call) con.call.leave();
      renderParticipants();
      for (const p of con.parts) if (p.event) p.event(ev);
    };
    ws.onclose = () => {
      if (con.events === ws && con.token) {
        notice(t("events.reconnecting"));
        setTimeout(() => { if (con.token && con.events === ws) connectEvents(); }, 2000);
      }
    };
  }

  // what the page wrote itself, written again after a language switch
  function rerender() {
    if (!con.token) return;
    if (con.officer) $("who").textContent = t("who", { officer: con.officer.officer, role: t(`officer.role.${con.officer.role}`), brigade: con.officer.brigade });
    renderCases();
    if (con.case) { renderCase(); renderPrejoin(); renderAudit(); }
  }

  con.part = (part) => { con.parts.push(part); };

  I18N.load(["console", "mediation", "education"]).then(() => {
    // record.js builds its panel at the end of <main>: its place is the workspace's slot
    const records = $("records-documents");
    if (records) $("record-slot").append(records);
    if (con.token) return start();
    return undefined;
  }).catch(showError);
})();
