// remotecase officer console: cases, parties, links, materials, the session and its events,
// all through the HTTP API (/api/docs) and the officers' event stream (/api/events).
"use strict";

const $ = (id) => document.getElementById(id);
const con = {
  token: sessionStorage.getItem("remotecase-login"),
  officer: null, caseId: null, case: null, session: null, events: null,
  participants: {},   // participant id -> {name, role, state}
};
window.remotecaseConsole = con;  // for tests and debugging

function showError(text) { $("error").textContent = text || ""; }

async function api(method, path, body, raw) {
  const headers = { Authorization: `Bearer ${con.token}` };
  const init = { method, headers };
  if (raw !== undefined) { init.body = raw; }
  else if (body !== undefined) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  const response = await fetch(path, init);
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    if (response.status === 401) logout();
    throw new Error(data.message || `${method} ${path}: ${response.status}`);
  }
  return data;
}

function item(text, extra) {
  const li = document.createElement("li");
  li.textContent = text;
  if (extra) li.append(" ", extra);
  return li;
}

function button(text, onClick) {
  const b = document.createElement("button");
  b.type = "button"; b.textContent = text;
  b.onclick = () => onClick().catch((err) => showError(String(err.message || err)));
  return b;
}

// -- login -------------------------------------------------------------------------------
$("login-form").onsubmit = async (e) => {
  e.preventDefault();
  showError("");
  const response = await fetch("/api/login", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: $("username").value, password: $("password").value }),
  });
  const body = await response.json();
  if (!response.ok) { showError(body.message); return; }
  con.token = body.token;
  sessionStorage.setItem("remotecase-login", con.token);
  await start();
};

function logout() {
  if (con.token) fetch("/api/logout", { method: "POST", headers: { Authorization: `Bearer ${con.token}` } });
  con.token = null;
  sessionStorage.removeItem("remotecase-login");
  if (con.events) con.events.close();
  $("desk").hidden = true; $("login").hidden = false; $("logout").hidden = true; $("who").textContent = "";
}
$("logout").onclick = logout;

async function start() {
  $("login").hidden = true; $("desk").hidden = false; $("logout").hidden = false;
  connectEvents();
  await loadCases();
}

// -- cases -------------------------------------------------------------------------------
async function loadCases() {
  const { cases } = await api("GET", "/api/cases");
  const list = $("cases");
  list.replaceChildren();
  for (const c of cases) {
    const li = item(`#${c.id} ${c.kind}: ${c.title}`);
    li.dataset.caseId = c.id;
    if (c.status !== "open") li.classList.add("muted");
    if (c.id === con.caseId) li.classList.add("current");
    li.onclick = () => openCase(c.id).catch((err) => showError(err.message));
    list.append(li);
  }
}

$("new-case").onsubmit = async (e) => {
  e.preventDefault();
  try {
    const created = await api("POST", "/api/cases", { kind: $("case-kind").value, title: $("case-title").value });
    $("case-title").value = "";
    await loadCases();
    await openCase(created.id);
  } catch (err) { showError(err.message); }
};

async function openCase(id) {
  showError("");
  con.caseId = id;
  const c = con.case = await api("GET", `/api/cases/${id}`);
  $("case").hidden = false;
  $("case-heading").textContent = `Case #${c.id} (${c.kind}, ${c.status}): ${c.title}`;
  for (const li of $("cases").children) li.classList.toggle("current", Number(li.dataset.caseId) === id);

  const parties = $("parties");
  parties.replaceChildren();
  for (const p of c.parties) {
    const details = [p.role, p.id_number_masked, p.phone].filter(Boolean).join(", ");
    const link = document.createElement("span");
    const invite = button("Invitation link", async () => {
      const made = await api("POST", `/api/cases/${id}/invitations`, { party_id: p.id, valid_hours: 48 });
      const url = new URL(made.link, location.href).href;
      link.replaceChildren(Object.assign(document.createElement("code"), { textContent: url }));
      link.dataset.link = url;
    });
    const li = item(`${p.name} (${details})`, invite);
    li.dataset.partyId = p.id;
    li.append(" ", link);
    parties.append(li);
  }

  const materials = $("materials"); const choose = $("show-material");
  materials.replaceChildren(); choose.replaceChildren();
  for (const m of c.materials) {
    const who = m.origin === "party" ? `from party ${m.party_id}` : "evidence";
    materials.append(item(`${m.name} (${m.media_type}, ${m.size} bytes, ${who}) sha256 ${m.sha256.slice(0, 12)}…`));
    choose.append(Object.assign(document.createElement("option"), { value: m.id, textContent: m.name }));
  }

  const open = c.sessions.find((s) => !s.ended_at);
  con.session = open || null;
  $("session-none").hidden = Boolean(open) || c.status !== "open";
  $("session-open").hidden = !open;
  if (open) {
    $("session-room").textContent = open.room;
    const { token } = await api("POST", `/api/cases/${id}/sessions/${open.id}/token`);
    $("join-call").href = `/?token=${encodeURIComponent(token)}`;
  }
  renderParticipants();
  await loadPrejoin();

  const { audit } = await api("GET", `/api/cases/${id}/audit`);
  $("audit").replaceChildren(...audit.slice(-12).reverse().map((a) =>
    item(`${a.time.slice(11, 19)} ${a.actor} ${a.action}${a.reason ? " — " + a.reason : ""}`)));
}

$("new-party").onsubmit = async (e) => {
  e.preventDefault();
  try {
    const body = { role: $("party-role").value, name: $("party-name").value };
    if ($("party-id").value) body.id_number = $("party-id").value;
    if ($("party-phone").value) body.phone = $("party-phone").value;
    await api("POST", `/api/cases/${con.caseId}/parties`, body);
    for (const f of ["party-name", "party-id", "party-phone"]) $(f).value = "";
    await openCase(con.caseId);
  } catch (err) { showError(err.message); }
};

$("upload").onsubmit = async (e) => {
  e.preventDefault();
  const file = $("upload-file").files[0];
  if (!file) return;
  try {
    await api("POST", `/api/cases/${con.caseId}/materials?name=${encodeURIComponent(file.name)}`, undefined, file);
    $("upload-file").value = "";
    await openCase(con.caseId);
  } catch (err) { showError(err.message); }
};

// -- the session -------------------------------------------------------------------------
$("open-session").onsubmit = async (e) => {
  e.preventDefault();
  try {
    await api("POST", `/api/cases/${con.caseId}/sessions`, { purpose: $("session-purpose").value });
    con.participants = {};
    await openCase(con.caseId);
  } catch (err) { showError(err.message); }
};

function sessionPath(suffix) { return `/api/cases/${con.caseId}/sessions/${con.session.id}${suffix}`; }

$("show").onsubmit = async (e) => {
  e.preventDefault();
  try {
    // the event stream reports it (with the mode: stream copy, transcoded or still)
    await api("POST", sessionPath("/display"), {
      material_id: $("show-material").value, page: Number($("show-page").value) || 1,
      reason: $("show-reason").value,
    });
  } catch (err) { showError(err.message); }
};
$("stop-show").onclick = () => api("POST", sessionPath("/display/stop"), { reason: $("show-reason").value || "done" })
  .catch((err) => showError(err.message));

for (const b of document.querySelectorAll("#room-actions [data-action]")) {
  b.onclick = () => api("POST", sessionPath(`/${b.dataset.action}`), { reason: $("action-reason").value || b.dataset.action })
    .catch((err) => showError(err.message));
}
$("end-session").onclick = async () => {
  const reason = $("action-reason").value;
  if (!reason) { showError("say why the session ends"); return; }
  try {
    await api("POST", sessionPath("/end"), { reason });
    await openCase(con.caseId);
  } catch (err) { showError(err.message); }
};

function renderParticipants() {
  const list = $("participants");
  list.replaceChildren();
  for (const [pid, p] of Object.entries(con.participants)) {
    const state = document.createElement("span");
    state.className = `state-${p.state || "none"}`;
    // a picture too poor to judge is advice for the officer to pass on, not an alert
    state.textContent = p.state === "low_quality" && p.message
      ? `picture: ${p.message} — ${p.guidance || ""}`
      : p.state ? `face: ${p.state}${p.reason ? " (" + p.reason + ")" : ""}` : "";
    const li = item(`${p.name || pid} [${p.role || "?"}]`, state);
    li.dataset.participant = pid;
    if (p.role === "party") {
      li.append(" ",
        button("Mute", () => api("POST", sessionPath("/mute"), { participant: pid, reason: $("action-reason").value || "muted by the officer" })),
        // only the officer lifts the officer's mute: the party's own unmute is refused
        button("Unmute", () => api("POST", sessionPath("/unmute"), { participant: pid, reason: $("action-reason").value || "unmuted by the officer" })),
        button("Remove", () => api("POST", sessionPath("/remove"), { participant: pid, reason: $("action-reason").value || "removed by the officer" })));
    }
    list.append(li);
  }
}

// -- the identity check before joining ---------------------------------------------------
let prejoinTimer = null;
function schedulePrejoin() {
  if (prejoinTimer) return;
  prejoinTimer = setTimeout(() => { prejoinTimer = null; loadPrejoin().catch((err) => showError(err.message)); }, 200);
}

function describeVerdict(v) {
  return v.verdict + (v.score !== null && v.score !== undefined ? ` ${v.score.toFixed(2)}` : "") +
    (v.reason ? ` (${v.reason})` : "") + (v.dark ? " dark" : "");
}

async function loadPrejoin() {
  const list = $("prejoin");
  if (!con.session) { list.replaceChildren(); return; }
  const view = await api("GET", sessionPath("/prejoin"));
  con.prejoin = view.parties;
  list.replaceChildren();
  const choose = $("attest-party");
  const chosen = choose.value;
  choose.replaceChildren();
  for (const p of view.parties) {
    const how = p.route ? ` via ${p.route}` : "";
    const tries = p.attempt ? `, attempt ${p.attempt}, ${p.matches}/${view.rules.needed} matches of ${p.samples} stills` : "";
    const li = item(`${p.name}: ${p.status}${how}${p.reason ? " — " + p.reason : ""}${tries}` +
      (p.face_consent ? "" : " (declined face checks: check an ID document)"));
    li.dataset.partyId = p.party_id;
    li.dataset.status = p.status;
    li.className = `prejoin-${p.status}`;
    if (p.verdicts && p.verdicts.length) {
      li.append(Object.assign(document.createElement("div"), {
        className: "verdicts", textContent: p.verdicts.map(describeVerdict).join(", ") }));
    }
    if (p.attestation) {
      li.append(` ${p.attestation.document_type} …${p.attestation.document_last_digits} checked by ${p.attestation.by}`);
    }
    if (!p.admitted) {
      li.append(" ", button("人工准入 / Admit manually", async () => {
        const reason = $("action-reason").value;
        if (!reason) { showError("say why the party is admitted without a passed check (reason)"); return; }
        await api("POST", sessionPath(`/prejoin/${p.party_id}/admit`), { reason });
        await loadPrejoin();
      }));
      if (p.still) li.append(" ", button("查看画面 / Show picture", () => showStill(p.party_id)));
      choose.append(Object.assign(document.createElement("option"), { value: p.party_id, textContent: p.name }));
    }
    list.append(li);
  }
  if ([...choose.options].some((o) => o.value === chosen)) choose.value = chosen;
}

let stillUrl = null;
async function showStill(partyId) {
  const response = await fetch(sessionPath(`/prejoin/${partyId}/still`), { headers: { Authorization: `Bearer ${con.token}` } });
  if (!response.ok) { showError((await response.json()).message); return; }
  if (stillUrl) URL.revokeObjectURL(stillUrl);
  stillUrl = URL.createObjectURL(await response.blob());
  const img = $("prejoin-still");
  img.src = stillUrl; img.hidden = false; img.dataset.partyId = partyId;
  $("attest-party").value = String(partyId);
}

$("attest").onsubmit = async (e) => {
  e.preventDefault();
  try {
    await api("POST", sessionPath(`/prejoin/${$("attest-party").value}/attest`), {
      document_type: $("attest-type").value, document_last_digits: $("attest-digits").value,
      note: $("attest-note").value,
    });
    $("attest-digits").value = ""; $("attest-note").value = "";
    $("prejoin-still").hidden = true;
    await loadPrejoin();
  } catch (err) { showError(err.message); }
};

// -- events ------------------------------------------------------------------------------
function addEvent(event) {
  const text = `${(event.time || "").slice(11, 19)} #${event.case ?? ""} ${event.type}` +
    ["state", "status", "participant", "verdict", "reason", "mode", "recording"].filter((k) => event[k]).map((k) => ` ${k}=${event[k]}`).join("");
  const list = $("events");
  list.prepend(item(text));
  while (list.children.length > 200) list.lastChild.remove();
}

function connectEvents() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = con.events = new WebSocket(`${scheme}://${location.host}/api/events`);
  ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token: con.token }));
  ws.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "ready") { $("who").textContent = `${event.officer} (${event.role}, ${event.brigade})`; con.officer = event; return; }
    if (event.type === "error") { showError(event.message); return; }
    addEvent(event);
    if (event.case !== con.caseId) return;
    if (event.type === "participant_joined") con.participants[event.participant] = { name: event.name, role: event.role };
    if (event.type === "participant_left") delete con.participants[event.participant];
    if (event.type === "verification") {
      const p = con.participants[event.participant] ||= { role: "party" };
      p.state = event.state; p.reason = event.reason;
      p.message = event.message; p.guidance = event.guidance;
    }
    if (event.type === "prejoin") schedulePrejoin();
    if (event.type === "session" || event.type === "room_closed") con.participants = {};
    renderParticipants();
  };
  ws.onclose = () => { if (con.token) setTimeout(connectEvents, 2000); };
}

if (con.token) start().catch((err) => showError(err.message));
