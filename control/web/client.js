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

// The verified party's camera: at least 640x480 (a face too small in the picture cannot be
// checked), 1280x720 when the camera has it; the sender keeps the resolution under CPU or
// bandwidth pressure (it lowers the frame rate instead).
const VIDEO = { width: { min: 640, ideal: 1280 }, height: { min: 480, ideal: 720 } };

async function openCamera() {
  try {
    return await navigator.mediaDevices.getUserMedia({ video: VIDEO, audio: true });
  } catch (err) {
    if (err.name !== "OverconstrainedError") throw err;
    showGuidance("摄像头分辨率低于 640x480，人脸核验可能无法进行 / the camera gives less than 640x480: the face check may not work");
    return navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 1280 }, height: { ideal: 720 } }, audio: true });
  }
}

async function keepResolution(sender) {
  if (!sender) return;
  try {
    const params = sender.getParameters();
    params.degradationPreference = "maintain-resolution";
    await sender.setParameters(params);
  } catch (err) {
    console.warn("degradationPreference not applied", err);
  }
  state.degradation = sender.getParameters().degradationPreference;
}

function setStatus(text) { $("status").textContent = text; }
function showGuidance(text) { $("guidance").textContent = text || ""; }
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
  for (const track of state.local.getTracks()) {
    const transceiver = pc.addTransceiver(track, { direction: "sendonly" });
    if (track.kind === "video") state.videoSender = transceiver.sender;
  }
  await keepResolution(state.videoSender);
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
      await keepResolution(state.videoSender);  // once negotiated, the encoding is there too
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
    case "verification_guidance":
      // what to do about a picture too small or blurred to check (never a score): advice,
      // not an alarm
      showGuidance(msg.state === "low_quality" ? `${msg.message} — ${msg.guidance}` : "");
      break;
    case "bye":
      setStatus("closed: " + msg.reason);
      break;
  }
}

async function redeemInvitation(invite) {
  // a party's link: explicit consents, a camera preview, then the invitation is used once
  const form = $("consent-form");
  // listen before the camera opens: a click meanwhile must not submit the form to the page
  const submitted = new Promise((resolve) => form.addEventListener("submit", (e) => { e.preventDefault(); resolve(); }, { once: true }));
  form.hidden = false;
  try {
    state.local = await openCamera();
    $("preview").srcObject = state.local;
  } catch (err) {
    showError("camera or microphone unavailable: " + err);
  }
  await submitted;
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
  await checkBeforeJoining(body.token);
  return body.token;
}

// -- the identity check before the call (docs/verifier.md) --------------------------------
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
state.prejoin = { status: null, route: null, verdicts: [], guidance: "", said: [] };

function still(video) {
  // one JPEG of the camera at its own size (at most 1920x1080, the server's limit)
  const scale = Math.min(1, 1920 / (video.videoWidth || 1), 1080 / (video.videoHeight || 1));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(video.videoWidth * scale);
  canvas.height = Math.round(video.videoHeight * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
}

function showCheck(body) {
  state.prejoin.status = body.status;
  state.prejoin.route = body.route;
  state.prejoin.guidance = body.guidance || "";
  const said = state.prejoin.said;
  if (body.guidance && said[said.length - 1] !== body.guidance) said.push(body.guidance);
  $("check-guidance").textContent = body.guidance || "";
  $("check-message").textContent = body.message || "";
  $("check-progress").textContent = body.route === "face" && body.status === "checking"
    ? `${body.matches} / ${body.needed}` : "";
  $("check-frame").classList.toggle("passed", Boolean(body.admitted));
}

async function prejoinCall(token, path, blob) {
  const init = { method: blob ? "POST" : "GET", headers: { Authorization: `Bearer ${token}` } };
  if (blob) { init.body = blob; init.headers["Content-Type"] = "image/jpeg"; }
  if (path === "/retry") init.method = "POST";
  try {
    const response = await fetch(`/api/party/prejoin${path}`, init);
    return { status: response.status, body: await response.json() };
  } catch (err) {
    // a lost connection or a proxy's page: say so and try again, the check is not lost
    return { status: 0, body: { error: "network", message: `网络错误，正在重试 / network error, retrying (${err})` } };
  }
}

async function checkBeforeJoining(token) {
  // after consent, before joining: the face check, or the officer's check of a document
  const section = $("prejoin");
  const video = $("check-video");
  let first = await prejoinCall(token, "");
  while (first.status !== 200) {
    showError(first.body.message || `error ${first.status}`);
    await sleep(2000);
    first = await prejoinCall(token, "");
  }
  showError("");
  let body = first.body;
  if (body.required === false) return;  // this server lets parties join without it
  video.srcObject = state.local;
  section.hidden = false;
  showCheck(body);
  let waiting = false;  // the officer decides: no reference, no face checks on this server
  while (!body.admitted) {
    if (!waiting && body.route === "face" && body.status === "checking") {
      await sleep(600);
      if (!video.videoWidth) continue;
      const answer = await prejoinCall(token, "/sample", await still(video));
      if (answer.status === 200) {
        body = answer.body;
        state.prejoin.verdicts.push(body.verdict);
        showCheck(body);
      } else if (answer.status === 429) {
        continue;
      } else if (["no_reference", "verifier_disabled", "no_face_consent"].includes(answer.body.error)) {
        waiting = true;
        $("check-guidance").textContent = answer.body.message;
        $("check-progress").textContent = "";
      } else if (answer.body.error === "already_admitted" || answer.body.error === "attempt_over") {
        const now = await prejoinCall(token, "");
        if (now.status === 200) { body = now.body; showCheck(body); }
      } else {
        $("check-message").textContent = answer.body.message || `error ${answer.status}`;
        await sleep(1000);
      }
    } else if (!waiting && body.route === "face" && body.status === "failed" && body.attempts_left > 0) {
      // gave up with its reason: the party decides when to try again
      const retry = $("check-retry");
      retry.hidden = false;
      await new Promise((resolve) => { retry.onclick = resolve; });
      retry.hidden = true;
      state.prejoin.verdicts = [];
      const answer = await prejoinCall(token, "/retry");
      if (answer.status === 200) { body = answer.body; showCheck(body); }
      else $("check-message").textContent = answer.body.message || `error ${answer.status}`;
    } else {
      // the officer decides (a document shown to the camera, or a manual admission) and
      // sees the latest picture, which is not face-processed
      await sleep(1500);
      if (video.videoWidth) await prejoinCall(token, "/still", await still(video));
      const answer = await prejoinCall(token, "");
      if (answer.status !== 200) {
        $("check-message").textContent = answer.body.message || `error ${answer.status}`;
      } else if (answer.body.admitted || !waiting) {
        body = answer.body;
        showCheck(body);
      }
    }
  }
  await sleep(500);
  section.hidden = true;
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
      state.local = await openCamera();
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
