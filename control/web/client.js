// remotecase web client: joins a room through the signalling WebSocket (docs/signalling.md),
// publishes camera and microphone on one peer connection, receives everyone else on another.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  ws: null, pub: null, sub: null, local: null, me: null, iceServers: [],
  tracks: {},          // subscriber mid -> {participant, kind, id}
  names: { "server-evidence": "Evidence shown by the officer" },           // participant id -> display name
  publishedTracks: [], // our tracks as the SFU names them: [{id, kind, mid}]
  tiles: {},           // participant id -> {el, stream}
};
window.remotecase = state;  // for tests and debugging

function setStatus(text) { $("status").textContent = text; }
function showError(text) { $("error").textContent = text; }
function send(msg) { if (state.ws && state.ws.readyState === 1) state.ws.send(JSON.stringify(msg)); }

function waitForIce(pc, limitMs = 3000) {
  // Send complete descriptions: simpler for the server than trickling every candidate.
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { pc.removeEventListener("icegatheringstatechange", check); resolve(); };
    const check = () => { if (pc.iceGatheringState === "complete") done(); };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(done, limitMs);
  });
}

function tileFor(pid) {
  let tile = state.tiles[pid];
  if (!tile) {
    const el = document.createElement("div");
    el.className = "tile";
    el.dataset.participant = pid;
    const video = document.createElement("video");
    video.autoplay = true; video.playsInline = true;
    if (pid === state.me) video.muted = true;
    const label = document.createElement("span");
    label.className = "label";
    el.append(video, label);
    $("grid").append(el);
    tile = state.tiles[pid] = { el, video, label, stream: new MediaStream() };
    video.srcObject = tile.stream;
  }
  tile.label.textContent = (state.names[pid] || pid) + (pid === state.me ? " (you)" : "");
  return tile;
}

function removeTile(pid) {
  const tile = state.tiles[pid];
  if (tile) { tile.el.remove(); delete state.tiles[pid]; }
}

function renderRemote() {
  // Rebuild each remote participant's stream from the transceivers the SFU says carry them.
  if (!state.sub) return;
  const wanted = {};
  for (const t of state.sub.getTransceivers()) {
    const info = state.tracks[t.mid];
    if (!info || !t.receiver.track) continue;
    (wanted[info.participant] ||= []).push(t.receiver.track);
  }
  for (const [pid, tracks] of Object.entries(wanted)) {
    const tile = tileFor(pid);
    for (const old of tile.stream.getTracks()) {
      if (!tracks.includes(old)) tile.stream.removeTrack(old);
    }
    for (const track of tracks) {
      if (!tile.stream.getTracks().includes(track)) tile.stream.addTrack(track);
    }
    tile.video.play().catch(() => {});
  }
  for (const pid of Object.keys(state.tiles)) {
    if (pid !== state.me && !wanted[pid]) removeTile(pid);
  }
}

async function publish() {
  const pc = state.pub = new RTCPeerConnection({ iceServers: state.iceServers });
  pc.onconnectionstatechange = () => setStatus("sending: " + pc.connectionState);
  for (const track of state.local.getTracks()) pc.addTransceiver(track, { direction: "sendonly" });
  await pc.setLocalDescription(await pc.createOffer());
  await waitForIce(pc);
  send({ type: "publish", sdp: pc.localDescription.sdp });
}

async function onOffer(msg) {
  if (!state.sub) {
    const pc = state.sub = new RTCPeerConnection({ iceServers: state.iceServers });
    pc.ontrack = () => renderRemote();
  }
  state.tracks = msg.tracks || {};
  await state.sub.setRemoteDescription({ type: "offer", sdp: msg.sdp });
  await state.sub.setLocalDescription(await state.sub.createAnswer());
  await waitForIce(state.sub);
  send({ type: "answer", sdp: state.sub.localDescription.sdp });
  renderRemote();
}

async function onMessage(event) {
  const msg = JSON.parse(event.data);
  switch (msg.type) {
    case "joined":
      state.me = msg.participant.id;
      state.names[state.me] = msg.participant.name;
      for (const p of msg.participants) state.names[p.id] = p.name;
      state.iceServers = msg.ice_servers || [];
      $("room-label").textContent = "room " + msg.room;
      tileFor(state.me).stream = state.local;
      tileFor(state.me).video.srcObject = state.local;
      await publish();
      break;
    case "publish_answer":
      state.publishedTracks = msg.tracks || [];
      await state.pub.setRemoteDescription({ type: "answer", sdp: msg.sdp });
      break;
    case "offer":
      await onOffer(msg);
      break;
    case "tracks":
      state.tracks = msg.tracks || {};
      renderRemote();
      break;
    case "participant_joined":
      state.names[msg.participant.id] = msg.participant.name;
      break;
    case "participant_left":
      removeTile(msg.participant);
      break;
    case "error":
      showError(`${msg.code}: ${msg.message}`);
      break;
    case "track_muted":
      if (msg.participant === state.me) showMute(msg);
      break;
    case "bye":
      setStatus("closed: " + msg.reason);
      break;
  }
}

async function redeemInvitation(invite) {
  // a party's link: explicit consents, a camera preview, then the invitation is used once
  const form = $("consent-form");
  form.hidden = false;
  try {
    state.local = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: true });
    $("preview").srcObject = state.local;
  } catch (err) {
    showError("camera or microphone unavailable: " + err);
  }
  await new Promise((resolve) => form.addEventListener("submit", (e) => { e.preventDefault(); resolve(); }, { once: true }));
  form.hidden = true;
  const response = await fetch("/api/invitations/redeem", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      token: invite,
      consent: {
        recording: $("consent-recording").checked,
        face: $("consent-face").checked,
        electronic_delivery: $("consent-delivery").checked,
      },
    }),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(body.message || "the invitation cannot be used");
  enableUploads(body.token);
  return body.token;
}

function enableUploads(token) {
  // a party sends materials with its call token; the server types, hashes and logs them
  const form = $("upload-form");
  form.hidden = false;
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const file = $("material-file").files[0];
    if (!file) return;
    $("upload-status").textContent = "uploading…";
    const response = await fetch(`/api/party/materials?name=${encodeURIComponent(file.name)}`, {
      method: "POST", headers: { Authorization: `Bearer ${token}` }, body: file,
    });
    const body = await response.json();
    $("upload-status").textContent = response.ok
      ? `received: ${file.name} (SHA-256 ${body.sha256.slice(0, 16)}…)`
      : `not accepted: ${body.message}`;
    if (response.ok) $("material-file").value = "";
  });
}

async function getToken() {
  const params = new URLSearchParams(location.search);
  if (params.get("token")) return params.get("token");
  if (params.get("invite")) return redeemInvitation(params.get("invite"));
  // without a link, only a development server lets the page mint its own token
  const health = await fetch("/healthz").then((r) => r.json()).catch(() => ({}));
  if (health.dev_join === false) {
    $("no-dev").hidden = false;
    return new Promise(() => {});  // nothing to join: the page only explains
  }
  const form = $("join-form");
  if (params.get("room")) $("room").value = params.get("room");
  form.hidden = false;
  await new Promise((resolve) => form.addEventListener("submit", (e) => { e.preventDefault(); resolve(); }, { once: true }));
  form.hidden = true;
  const response = await fetch("/dev/token", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ room: $("room").value, name: $("name").value }),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(body.message || "cannot get a token");
  return body.token;
}

async function main() {
  try {
    const token = await getToken();
    if (!state.local) {
      state.local = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: true });
    }
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = state.ws = new WebSocket(`${scheme}://${location.host}/ws`);
    ws.onopen = () => { setStatus("joining"); send({ type: "join", token }); };
    ws.onmessage = (e) => onMessage(e).catch((err) => showError(String(err)));
    ws.onclose = (e) => { setStatus(`disconnected (${e.code})`); for (const b of ["leave", "mute-audio", "mute-video"]) $(b).disabled = true; };
    for (const b of ["leave", "mute-audio", "mute-video"]) $(b).disabled = false;
  } catch (err) {
    showError(String(err));
  }
}

$("leave").onclick = () => {
  send({ type: "leave" });
  for (const pc of [state.pub, state.sub]) if (pc) pc.close();
  if (state.local) for (const t of state.local.getTracks()) t.stop();
};

function showMute(msg) {
  // an officer's mute is the officer's: say so, and the button cannot lift it
  const track = state.publishedTracks.find((t) => t.id === msg.track);
  if (!track) return;
  const button = $(track.kind === "audio" ? "mute-audio" : "mute-video");
  state.officerMuted = { ...(state.officerMuted || {}), [track.kind]: msg.officer_muted };
  button.title = msg.officer_muted ? "民警已静音 / muted by the officer" : "";
  if (msg.officer_muted) setStatus("民警已将您静音 / the officer muted you");
}

function toggle(kind, button, onText, offText) {
  const track = state.local && state.local.getTracks().find((t) => t.kind === kind);
  if (!track) return;
  if (!track.enabled && (state.officerMuted || {})[kind]) {
    showError("民警已将您静音，只有民警可以解除 / the officer muted you; only the officer can unmute");
    return;
  }
  track.enabled = !track.enabled;
  button.textContent = track.enabled ? onText : offText;
  const published = state.publishedTracks.find((t) => t.kind === kind);
  if (published) send({ type: "mute", track: published.id, muted: !track.enabled });
}
$("mute-audio").onclick = (e) => toggle("audio", e.target, "Mute mic", "Unmute mic");
$("mute-video").onclick = (e) => toggle("video", e.target, "Stop camera", "Start camera");

main();
