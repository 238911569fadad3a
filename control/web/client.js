// remotecase party page: from the SMS link to the call and back after a reload.
//
// The page walks through states, each shown with what to do next (docs/control-plane.md, "The
// party's page"): opening -> consent (camera preview) -> checking (the identity check before the
// call) -> waiting (for the officer) / in_call, and the ends: removed, ended, closed, left, the
// link's refusals (link_used, link_invalid, not_yet, no_session), the camera's (camera_denied,
// camera_missing, camera_busy), reconnecting, and replaced / superseded (another page of this
// device has the call; a button takes it back here). document.body.dataset.state names the
// current one. A reload in the call (or a phone's browser reopening a tab it dropped) comes
// back as the same participant: the resume token is kept for this tab (see "the call across a
// reload" below).
//
// It joins through the signalling WebSocket (docs/signalling.md), publishes camera and
// microphone on one peer connection and receives everyone else on another. The first
// redemption of the link sends a random device secret kept in localStorage; opening the link
// again on this device sends it again and the server lets the party back in (no consents
// asked again), while another device is refused. Every text comes from the catalogs (i18n.js).
"use strict";

const $ = (id) => document.getElementById(id);
const t = (key, params) => I18N.t(key, params);
const state = {
  ws: null, pub: null, sub: null, local: null, me: null, iceServers: [],
  tracks: {},          // subscriber mid -> {participant, kind, id, muted}
  names: {},           // participant id -> display name
  roles: {},           // participant id -> role
  publishedTracks: [], // our tracks as the SFU names them: [{id, kind, mid}]
  tiles: {},           // participant id -> {el, video, label, stream}
  phase: "opening", phaseParams: null, phases: [],  // the states passed through, for tests
  invite: null, callToken: null, officerMuted: {}, facing: "user",
  reconnects: 0, ending: false, view: null,
  resumeToken: null, resumeFor: null,  // to come back as the same participant (resume)
  away: {},            // participant id -> true while its connection is lost (it may resume)
};
window.remotecase = state;  // for tests and debugging

const STORE_DEVICE = "remotecase.device";
const STORE_REDEEMED = "remotecase.redeemed.";
const STORE_CALL = "remotecase.call";
const OFFICERS = ["officer", "supervisor"];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// -- states --------------------------------------------------------------------------------
// name -> the action button's text key and what it does (none: no button)
const ACTIONS = {
  // the camera states have their own retry under the steps to allow the camera (#camera-help)
  no_session: ["action.retry", () => location.reload()],
  not_yet: ["action.retry", () => location.reload()],
  failed: ["action.retry", () => location.reload()],
  left: ["state.left.rejoin", () => location.reload()],
  // of one link on this device, only the page opened last is in the call; this one can take it
  // back (the other page is then "replaced")
  replaced: ["state.replaced.here", () => takeCallHere()],
  superseded: ["state.superseded.here", () => takeCallHere()],
};

function setPhase(name, params) {
  if (!CALL_GOES_ON.includes(name)) forgetCall();
  state.phase = name;
  state.phaseParams = params || null;
  if (state.phases[state.phases.length - 1] !== name) state.phases.push(name);
  document.body.dataset.state = name;
  renderPhase();
}

async function takeCallHere() {
  // redeem the link again with this device's secret: a new grant for the same participant,
  // the page that had it is replaced (4010); a call token without a link can only reload.
  // The button stays disabled until the next state draws it again (no second redemption).
  if (!state.invite) { location.reload(); return; }
  const button = $("state-action");
  button.disabled = true;
  showError("");
  try {
    const live = state.local && state.local.getVideoTracks().some((tr) => tr.readyState === "live");
    if (!live) await ensureCamera();
    connect(await admitAgain());
  } catch (err) {
    // the network, most likely: nothing lost, the same button tries again
    console.warn("take the call here", err);
    showError(t("error.network"));
    button.disabled = false;
  }
}

function renderPhase() {
  const name = state.phase;
  $("state-title").textContent = t(`state.${name}.title`, state.phaseParams);
  $("state-text").textContent = t(`state.${name}.text`, state.phaseParams);
  const action = ACTIONS[name];
  const button = $("state-action");
  button.hidden = !action;
  button.disabled = false;
  if (action) {
    button.textContent = t(action[0]);
    button.onclick = action[1];
  }
  $("camera-help").hidden = !name.startsWith("camera_");
  // another page of this device holds the grant now: this page's token uploads nothing
  if (name === "replaced" || name === "superseded") $("upload-form").hidden = true;
  $("call").hidden = !["in_call", "waiting", "reconnecting"].includes(name);
  setStatus(t(`status.${name}`));
}

function setStatus(text) { $("status").textContent = text; }
function showGuidance(text) { $("guidance").textContent = text || ""; }
function showError(text) { $("error").textContent = text || ""; }
function send(msg) { if (state.ws && state.ws.readyState === 1) state.ws.send(JSON.stringify(msg)); }
state.send = send;  // for the page's other scripts (see "remotecase:message" below)

// a server text written "中文 / English" (the verifier's advice, the identity check's guidance):
// the page's language's half; any other text as it is
function words(text) {
  const at = String(text || "").indexOf(" / ");
  if (at < 0) return String(text || "");
  return I18N.lang === "zh-CN" ? text.slice(0, at) : text.slice(at + 3);
}

// the words for a signalling or HTTP error code: this page's own, else the server's message
function errorText(code, message) {
  const key = `error.${code}`;
  return I18N.has(key) ? t(key) : (message || t("error.unknown"));
}

// -- the camera ----------------------------------------------------------------------------
// The verified party's camera: at least 640x480 (a face too small in the picture cannot be
// checked), 1280x720 when the camera has it; the sender keeps the resolution under CPU or
// bandwidth pressure (it lowers the frame rate instead).
const VIDEO = { width: { min: 640, ideal: 1280 }, height: { min: 480, ideal: 720 } };

async function openCamera(facing) {
  const video = facing ? { ...VIDEO, facingMode: facing } : VIDEO;
  try {
    return await navigator.mediaDevices.getUserMedia({ video, audio: true });
  } catch (err) {
    if (err.name !== "OverconstrainedError") throw err;
    showGuidance(t("camera.low"));
    const loose = { width: { ideal: 1280 }, height: { ideal: 720 } };
    if (facing) loose.facingMode = facing;
    return navigator.mediaDevices.getUserMedia({ video: loose, audio: true });
  }
}

// DOMException names -> the page's state
function cameraPhase(err) {
  if (!navigator.mediaDevices) return "camera_missing";
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "SecurityError") return "camera_denied";
  if (name === "NotFoundError" || name === "OverconstrainedError") return "camera_missing";
  return "camera_busy";  // NotReadableError, AbortError: another app holds it
}

let cameraWaiter = null;  // resolves when a retry opened the camera

async function ensureCamera() {
  // open the camera, or stay in a camera state until a retry succeeds: no new link needed
  for (;;) {
    try {
      if (!navigator.mediaDevices) throw new Error("no mediaDevices");
      state.local = await openCamera();
      watchLocal();
      await offerCameraSwitch();
      return state.local;
    } catch (err) {
      console.warn("camera", err);
      setPhase(cameraPhase(err));
      await new Promise((resolve) => { cameraWaiter = resolve; });
    }
  }
}

function retryCamera() {
  if (cameraWaiter) { const go = cameraWaiter; cameraWaiter = null; go(); }
}
$("camera-retry").onclick = retryCamera;

// The cameras the device has, after the permission (before it, labels and IDs are empty).
// A phone's cameras say which way they face; a laptop's, or some phones', do not: the switch
// then goes to the next camera by deviceId. A camera that opens but whose frames the encoder
// does not take (a depth camera, say) is skipped and not offered again.
state.cameras = [];      // videoinput devices: {deviceId, label}
state.deadCameras = {};  // deviceId -> true: opened but sent nothing
state.facingById = {};   // deviceId -> the way it faces, as said or assumed
state.switching = false;

function usableCameras() {
  return state.cameras.filter((c) => !state.deadCameras[c.deviceId]);
}

function currentCamera() {
  const track = state.local && state.local.getVideoTracks()[0];
  return track ? track.getSettings().deviceId || null : null;
}

// which way a camera faces: what it says, else its label, else unknown (null)
function facingOf(track, label) {
  const said = track && track.getSettings().facingMode;
  if (said === "user" || said === "environment") return said;
  if (/back|rear|environment|后置|後置/i.test(label || "")) return "environment";
  if (/front|user|前置/i.test(label || "")) return "user";
  return null;
}

async function offerCameraSwitch() {
  try {
    const devices = await navigator.mediaDevices.enumerateDevices();
    state.cameras = devices.filter((d) => d.kind === "videoinput")
      .map((d) => ({ deviceId: d.deviceId, label: d.label }));
  } catch (err) {
    state.cameras = [];
  }
  const track = state.local && state.local.getVideoTracks()[0];
  if (track && !state.cameraKnown) {
    // the camera the browser opened first is the one facing the party unless it says otherwise
    state.cameraKnown = true;
    state.facing = facingOf(track, track.label) || "user";
    state.facingById[currentCamera()] = state.facing;
  }
  showCamera();
}

function showCamera() {
  // the switch only where there is another camera to switch to; the one in use is named
  $("switch-camera").hidden = usableCameras().length < 2;
  const id = currentCamera();
  const cameras = usableCameras();
  const index = cameras.findIndex((c) => c.deviceId === id);
  const track = state.local && state.local.getVideoTracks()[0];
  const label = (index >= 0 && cameras[index].label) || (track && track.label) || "";
  const name = state.facing === "user" ? t("camera.front")
    : state.facing === "environment" ? t("camera.back")
    : label || t("camera.numbered", { n: index + 1 });
  const using = $("camera-name");
  using.hidden = !track || cameras.length < 2;
  using.textContent = using.hidden ? ""
    : t("camera.using", { name, n: index + 1, count: cameras.length });
  state.cameraName = using.textContent;
}

function watchLocal() {
  const track = state.local && state.local.getVideoTracks()[0];
  if (!track) return;
  const update = () => { if (state.me) markTile(state.me); };
  track.addEventListener("ended", update);
  track.addEventListener("mute", update);
  track.addEventListener("unmute", update);
}

// the frames a sender has encoded so far: a camera whose frames the encoder refuses (Chromium
// takes no Y16 depth frames) adds none, although a <video> shows it
async function framesEncoded(sender) {
  let frames = 0;
  try {
    (await sender.getStats()).forEach((r) => { if (r.type === "outbound-rtp") frames += r.framesEncoded || 0; });
  } catch (err) { /* a closed connection */ }
  return frames;
}

async function sends(track) {
  const sender = state.videoSender;
  if (sender && state.pub && state.pub.connectionState === "connected") {
    const before = await framesEncoded(sender);
    for (let i = 0; i < 20; i++) {
      await sleep(250);
      if (await framesEncoded(sender) > before + 2) return true;
    }
    return false;
  }
  // not in a call (yet): a frame on a <video> is what can be seen
  const video = document.createElement("video");
  if (!video.requestVideoFrameCallback) return true;  // cannot tell: take it
  video.muted = true;
  video.srcObject = new MediaStream([track]);
  video.play().catch(() => {});
  const ok = await new Promise((resolve) => {
    const limit = setTimeout(() => resolve(false), 5000);
    video.requestVideoFrameCallback(() => { clearTimeout(limit); resolve(true); });
  });
  video.srcObject = null;
  return ok;
}

async function openVideo(constraint) {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { ...VIDEO, ...constraint } });
    return stream.getVideoTracks()[0];
  } catch (err) {
    if (err.name !== "OverconstrainedError" || constraint.facingMode) return null;
    // a camera under 640x480 still shows the party (the check may say it is too small)
    const stream = await navigator.mediaDevices.getUserMedia({ video: constraint }).catch(() => null);
    return stream ? stream.getVideoTracks()[0] : null;
  }
}

async function switchCamera() {
  // a new video track replaces the old one on the same sender: the officer keeps one track
  if (state.switching || !state.local) return;
  state.switching = true;
  $("switch-camera").disabled = true;
  showError("");
  const old = state.local.getVideoTracks()[0];
  const oldId = currentCamera();
  try {
    await offerCameraSwitch();  // cameras plugged in or out since
    const tries = [];
    const told = old && old.getSettings().facingMode;
    if (told === "user" || told === "environment") {
      // a phone that says which way its cameras face: the other way first
      tries.push({ facingMode: { exact: told === "user" ? "environment" : "user" } });
    }
    const cameras = usableCameras();
    const from = cameras.findIndex((c) => c.deviceId === oldId);  // -1: from the first
    for (let i = 1; i <= cameras.length; i++) {
      const next = cameras[(from + i) % cameras.length];
      if (next.deviceId !== oldId) tries.push({ deviceId: { exact: next.deviceId } });
    }
    for (const constraint of tries) {
      const fresh = await openVideo(constraint);
      if (!fresh) continue;
      const freshId = fresh.getSettings().deviceId;
      if (freshId && freshId === oldId) { fresh.stop(); continue; }
      if (old) fresh.enabled = old.enabled;
      if (state.videoSender) await state.videoSender.replaceTrack(fresh);
      if (!fresh.enabled || await sends(fresh)) {
        if (old) { state.local.removeTrack(old); old.stop(); }
        state.local.addTrack(fresh);
        const camera = state.cameras.find((c) => c.deviceId === freshId);
        state.facing = facingOf(fresh, camera ? camera.label : fresh.label) ||
          state.facingById[freshId] || null;
        state.facingById[freshId] = state.facing;
        watchLocal();
        for (const id of ["preview", "check-video"]) if ($(id).srcObject) $(id).srcObject = state.local;
        const tile = state.tiles[state.me];
        if (tile) { tile.el.classList.toggle("self", state.facing === "user"); markTile(state.me); }
        return;
      }
      // it opened but sends nothing: back to the camera that did, and not offered again
      if (freshId) state.deadCameras[freshId] = true;
      if (state.videoSender && old) await state.videoSender.replaceTrack(old);
      fresh.stop();
    }
    showError(t("camera.switch.failed"));
  } finally {
    state.switching = false;
    $("switch-camera").disabled = false;
    showCamera();
  }
}
$("switch-camera").onclick = switchCamera;
// a camera plugged in or out: the switch and the name follow (after the permission only)
if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
  navigator.mediaDevices.addEventListener("devicechange", () => { if (state.local) offerCameraSwitch(); });
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

// A viewer of an education session who does not hold the floor sends a light picture
// (education-viewer.js asks for it): nobody watches it but the attendance checks, which take a
// frame every few seconds, and an hour of it costs the phone's data plan a fifth of the full
// camera. null: the camera's full picture. Kept across reconnections (each new sender gets it).
state.videoLimits = null;
async function applyVideoLimits(sender) {
  if (!sender) return;
  try {
    const params = sender.getParameters();
    if (!params.encodings || !params.encodings.length) return;
    for (const encoding of params.encodings) {
      if (state.videoLimits) Object.assign(encoding, state.videoLimits);
      else { delete encoding.maxFramerate; delete encoding.maxBitrate; }
    }
    await sender.setParameters(params);
  } catch (err) {
    console.warn("video limits not applied", err);
  }
}
state.limitVideo = async (limits) => {
  state.videoLimits = limits || null;
  await applyVideoLimits(state.videoSender);
};

// -- tiles ---------------------------------------------------------------------------------
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

function displayName(pid) {
  if (pid === "server-evidence") return t("call.evidence");
  const name = state.names[pid] || pid;
  if (pid === state.me) return t("call.you", { name });
  if (isOfficer(pid)) return t("call.officer", { name });
  return name;
}

function tileFor(pid) {
  let tile = state.tiles[pid];
  if (!tile) {
    const el = document.createElement("div");
    el.className = "tile";
    el.dataset.participant = pid;
    if (pid === state.me && state.facing === "user") el.classList.add("self");
    const video = document.createElement("video");
    video.autoplay = true; video.playsInline = true;
    if (pid === state.me) video.muted = true;
    const placeholder = document.createElement("div");
    placeholder.className = "placeholder";
    const avatar = document.createElement("span");
    avatar.className = "avatar";
    const note = document.createElement("span");
    note.className = "note";
    placeholder.append(avatar, note);
    const label = document.createElement("span");
    label.className = "label";
    el.append(video, placeholder, label);
    $("grid").append(el);
    tile = state.tiles[pid] = { el, video, label, avatar, note, stream: new MediaStream() };
    video.srcObject = tile.stream;
  }
  tile.label.textContent = displayName(pid);
  tile.avatar.textContent = Array.from(state.names[pid] || "?")[0];
  return tile;
}

// A stopped camera shows a placeholder, never its last frame: our own when the track is off or
// ended, another's when the SFU says its video is muted or its track stopped delivering.
function markTile(pid) {
  const tile = state.tiles[pid];
  if (!tile) return;
  let off;
  if (pid === state.me) {
    const track = state.local && state.local.getVideoTracks()[0];
    off = !track || !track.enabled || track.readyState === "ended" || track.muted ||
          Boolean(state.officerMuted.video);
  } else {
    const videos = tile.stream.getVideoTracks();
    const infos = Object.values(state.tracks).filter((i) => i.participant === pid && i.kind === "video");
    off = videos.length === 0 || videos.every((v) => v.readyState === "ended" || v.muted) ||
          (infos.length > 0 && infos.every((i) => i.muted));
  }
  // another participant whose connection was lost, until it resumes or leaves
  const away = pid !== state.me && Boolean(state.away[pid]);
  const awayText = t({ closed: "call.peer_closing", gone: "call.peer_gone" }[state.away[pid]] || "call.peer_reconnecting");
  tile.el.classList.toggle("off", off || away);
  tile.note.textContent = away ? awayText : off ? t("call.camera.stopped") : "";
}

function removeTile(pid) {
  const tile = state.tiles[pid];
  if (tile) { tile.el.remove(); delete state.tiles[pid]; }
}

function renderRemote() {
  // Rebuild each remote participant's stream from the transceivers the SFU says carry them.
  if (!state.sub) return;
  const wanted = {};
  for (const tr of state.sub.getTransceivers()) {
    const info = state.tracks[tr.mid];
    if (!info || !tr.receiver.track) continue;
    (wanted[info.participant] ||= []).push(tr.receiver.track);
  }
  for (const [pid, tracks] of Object.entries(wanted)) {
    const tile = tileFor(pid);
    for (const old of tile.stream.getTracks()) {
      if (!tracks.includes(old)) tile.stream.removeTrack(old);
    }
    for (const track of tracks) {
      if (!tile.stream.getTracks().includes(track)) {
        tile.stream.addTrack(track);
        for (const ev of ["mute", "unmute", "ended"]) track.addEventListener(ev, () => markTile(pid));
      }
    }
    tile.video.play().catch(() => {});
    markTile(pid);
  }
  for (const pid of Object.keys(state.tiles)) {
    if (pid !== state.me && !wanted[pid]) removeTile(pid);
  }
}

// the SFU names others without their role; officers' participant IDs are "officer-<login>"
function isOfficer(pid) {
  return OFFICERS.includes(state.roles[pid]) || pid.startsWith("officer-");
}

function officerPresent() {
  return Object.keys(state.roles).some((pid) => pid !== state.me && isOfficer(pid));
}

function callPhase() {
  if (["removed", "ended", "closed", "left", "replaced", "superseded"].includes(state.phase)) return;
  setPhase(officerPresent() ? "in_call" : "waiting");
}

// -- signalling ----------------------------------------------------------------------------
// Video goes with VP8 temporal layers (L1T3) where the browser can: the SFU then gives a weak
// receiver fewer frames instead of a frozen picture (docs/architecture.md, temporal layers).
function addSending(pc, track) {
  if (track.kind === "video") {
    try {
      return pc.addTransceiver(track, { direction: "sendonly", sendEncodings: [{ scalabilityMode: "L1T3" }] });
    } catch (err) { /* no layers in this browser: one layer, as before */ }
  }
  return pc.addTransceiver(track, { direction: "sendonly" });
}

async function publish() {
  const pc = state.pub = new RTCPeerConnection({ iceServers: state.iceServers });
  if (state.heartbeat) state.heartbeat.peer(pc);  // its ICE going bad is a sign to probe
  for (const track of state.local.getTracks()) {
    const transceiver = addSending(pc, track);
    if (track.kind === "video") state.videoSender = transceiver.sender;
  }
  await keepResolution(state.videoSender);
  await applyVideoLimits(state.videoSender);
  await pc.setLocalDescription(await pc.createOffer());
  await waitForIce(pc);
  send({ type: "publish", sdp: pc.localDescription.sdp });
}

async function onOffer(msg) {
  if (!state.sub) {
    const pc = state.sub = new RTCPeerConnection({ iceServers: state.iceServers });
    pc.ontrack = () => renderRemote();
    if (state.heartbeat) state.heartbeat.peer(pc);
  }
  state.tracks = msg.tracks || {};
  await state.sub.setRemoteDescription({ type: "offer", sdp: msg.sdp });
  await state.sub.setLocalDescription(await state.sub.createAnswer());
  await waitForIce(state.sub);
  send({ type: "answer", sdp: state.sub.localDescription.sdp });
  renderRemote();
}

function showOfficerMute() {
  // an officer's mute is the officer's: say so, and the buttons cannot lift it
  const kinds = ["audio", "video"].filter((k) => state.officerMuted[k]);
  document.body.dataset.officerMuted = kinds.join(" ");
  const banner = $("officer-muted");
  banner.hidden = kinds.length === 0;
  banner.textContent = kinds.length === 2 ? t("call.officer_muted.both")
    : kinds[0] === "audio" ? t("call.officer_muted.audio")
    : kinds[0] === "video" ? t("call.officer_muted.video") : "";
  for (const [kind, id] of [["audio", "mute-audio"], ["video", "mute-video"]]) {
    $(id).title = state.officerMuted[kind] ? t("call.officer_muted.button") : "";
  }
  if (state.me) markTile(state.me);
}

function trackMuted(msg) {
  for (const info of Object.values(state.tracks)) {
    if (info.id === msg.track) info.muted = msg.muted;
  }
  if (msg.participant === state.me) {
    const track = state.publishedTracks.find((p) => p.id === msg.track);
    if (track) {
      state.officerMuted = { ...state.officerMuted, [track.kind]: Boolean(msg.officer_muted) };
      showOfficerMute();
    }
  } else {
    markTile(msg.participant);
  }
}

async function onMessage(event) {
  const msg = JSON.parse(event.data);
  // every message reaches the page's other scripts too (sign.js, an education panel): they
  // listen for this event and answer through window.remotecase.send
  window.dispatchEvent(new CustomEvent("remotecase:message", { detail: msg }));
  switch (msg.type) {
    case "joined":
    case "resumed":  // back as the same participant after a lost connection (docs/signalling.md, Resume)
      state.reconnects = 0;
      state.resumeToken = msg.resume_token || null;
      state.me = msg.participant.id;
      keepCall(msg.room);
      state.names[state.me] = msg.participant.name;
      state.roles[state.me] = msg.participant.role;
      for (const p of msg.participants) { state.names[p.id] = p.name; state.roles[p.id] = p.role; }
      state.iceServers = msg.ice_servers || [];
      $("room-label").textContent = t("call.room", { room: msg.room });
      tileFor(state.me).stream = state.local;
      tileFor(state.me).video.srcObject = state.local;
      markTile(state.me);
      for (const b of ["leave", "mute-audio", "mute-video"]) $(b).disabled = false;
      callPhase();
      await publish();
      break;
    case "publish_answer":
      state.publishedTracks = msg.tracks || [];
      for (const p of state.publishedTracks) {
        if (p.officer_muted) state.officerMuted = { ...state.officerMuted, [p.kind]: true };
        // the party's own mute as this page has it: after a reload the camera and microphone
        // are on again, while the resumed tracks kept the mute of the page before
        const own = state.local && state.local.getTracks().find((tr) => tr.kind === p.kind);
        if (own && Boolean(p.self_muted) !== !own.enabled) send({ type: "mute", track: p.id, muted: !own.enabled });
      }
      showOfficerMute();
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
      state.roles[msg.participant.id] = msg.participant.role;
      callPhase();
      break;
    case "participant_reconnecting":
      // why: "closed" is a page that said it was going (its tab closed, or it reloads), "gone"
      // one whose connection ended without a close (closed or crashed without saying so)
      state.away[msg.participant] = msg.reason || true;
      markTile(msg.participant);
      break;
    case "participant_resumed":
      delete state.away[msg.participant.id];
      markTile(msg.participant.id);
      break;
    case "participant_left":
      delete state.away[msg.participant];
      removeTile(msg.participant);
      delete state.roles[msg.participant];
      callPhase();
      break;
    case "error":
      if (msg.code === "resume_refused") {
        // too late, or no longer ours: join as after opening the page
        state.resumeToken = null;
        forgetCall();
        send({ type: "join", token: state.callToken });
        break;
      }
      state.lastError = msg.code;
      if (msg.code === "muted_by_officer") showError(t("call.officer_muted.button"));
      else if (!REFUSAL_PHASES[msg.code]) showError(errorText(msg.code, msg.message));
      break;
    case "track_muted":
      trackMuted(msg);
      break;
    case "verification_guidance":
      // what to do about a picture too small or blurred to check (never a score): advice,
      // not an alarm
      showGuidance(msg.state === "low_quality" ? `${words(msg.message)} — ${words(msg.guidance)}` : "");
      break;
    case "bye":
      state.bye = msg.reason;
      break;
  }
}

// signalling refusals (4003, docs/signalling.md) -> the page's state
const REFUSAL_PHASES = {
  removed: "removed", session_ended: "ended", case_closed: "closed",
  invitation_revoked: "link_invalid", identity_unchecked: "checking",
  superseded: "superseded",  // the link was opened again on this device: another page has it
};

function closePeers() {
  for (const pc of [state.pub, state.sub]) if (pc) pc.close();
  state.pub = state.sub = null;
  state.tracks = {};
  state.publishedTracks = [];
  for (const pid of Object.keys(state.tiles)) removeTile(pid);
  for (const b of ["leave", "mute-audio", "mute-video"]) $(b).disabled = true;
}

async function endedOrClosed() {
  // the room closed: the case's view tells a closed case from an ended session
  const view = await partyView(state.invite || state.callToken).catch(() => null);
  if (view && view.case && view.case.status !== "open") setPhase("closed");
  else setPhase("ended");
}

async function onClose(event) {
  const bye = state.bye;
  const code = state.lastError;
  state.ws = null;
  state.bye = null;
  state.lastError = null;
  closePeers();
  if (state.ending) return setPhase("left");
  if (bye === "removed") return setPhase("removed");
  if (bye === "duplicate" || event.code === 4010) return setPhase("replaced");
  if (bye === "room_closed" || bye === "room_empty") return endedOrClosed();
  if (event.code === 4003 && REFUSAL_PHASES[code]) {
    if (code === "identity_unchecked") return connect(await admitAgain());
    return setPhase(REFUSAL_PHASES[code]);
  }
  if (event.code === 4001 && state.invite) return connect(await admitAgain());  // token expired
  if (event.code === 4001 || event.code === 4002 || event.code === 4003) {
    return setPhase("failed", { reason: errorText(code || "unknown") });
  }
  // the network, the server restarting, a lost connection: try again with backoff
  state.reconnects += 1;
  if (state.reconnects > 8) return setPhase("failed", { reason: t("error.network") });
  setPhase("reconnecting", { attempt: state.reconnects });
  // a socket the heartbeat found dead (its network changed: the new one is up) is tried
  // again at once the first time; a socket the server or the network closed, after a second
  const first = event.dead ? 0 : 1000;
  await sleep(state.reconnects === 1 ? first : Math.min(1000 * 2 ** (state.reconnects - 1), 15000));
  connect(await renewCallToken(state.callToken));
}

// A fresh call token of this page's admission (the link and this device's secret: the server
// gives one while the party is still admitted, docs/signalling.md "Resume"), asked before every
// resume as the console does: a call more than a token's hour old resumes instead of being
// refused token_expired and admitted again (a face check again, the others seeing it leave).
// Without a link (a call token in the address), or when the server cannot say, the old one.
async function renewCallToken(token) {
  if (!state.invite || !token) return token;
  try {
    // with the token this page holds: after the link was opened again in another page, the
    // server renews nothing here (409 superseded) and the resume with the old one says so
    const headers = partyHeaders(state.invite, { "Content-Type": "application/json" });
    const response = await fetch("/api/party/call-token", { method: "POST", headers, body: JSON.stringify({ token }) });
    if (!response.ok) return token;  // refused (removed, ended, superseded): the resume with the old says why
    const body = await response.json();
    if (typeof body.token !== "string") return token;
    if (state.resumeFor === token) state.resumeFor = body.token;  // the same participant: resume
    if (state.partyToken === token) state.partyToken = body.token;  // uploads, the record
    return body.token;
  } catch (err) {
    return token;  // the network: the resume tries with what it has
  }
}

function connect(token) {
  if (!token) return;
  state.callToken = token;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = state.ws = new WebSocket(`${scheme}://${location.host}/ws`);
  // a lost connection: come back as the same participant (the others see no leave); a new
  // call token (admitted again) joins afresh
  const back = token === state.resumeFor ? state.resumeToken : null;
  state.resumeFor = token;
  // the call token goes with a resume too: the front routes a socket to the worker of the
  // room its token names (the worker checks only the resume token)
  ws.onopen = () => send(back ? { type: "resume", resume_token: back, token } : { type: "join", token });
  ws.onmessage = (e) => onMessage(e).catch((err) => { console.error(err); showError(t("error.unknown")); });
  ws.onclose = (e) => { onClose(e).catch((err) => console.error(err)); };
  // a socket the network left dead is dropped and the call resumed on a new one (heartbeat.js);
  // the media connections made on it tell it when their path goes bad
  state.heartbeat = window.remotecaseHeartbeat.watch(ws, {
    isCurrent: () => state.ws === ws,
    onDead: () => { onClose({ code: 1006, dead: true }).catch((err) => console.error(err)); },
  });
}

// -- the call across a reload ------------------------------------------------------------------
// The resume token of this tab's call is kept in sessionStorage with the link (or call token) it
// belongs to and the call token it joined with: a reload, or a phone's browser reopening a tab
// it dropped, resumes as the same participant within the grace period (the others see it
// reconnecting, never a leave and a join; the recording keeps its tracks). sessionStorage is
// this tab's only; never localStorage, where another tab of the device would find the token and
// take the participant over. Forgotten on leave, on every end of the call (the states not in
// CALL_GOES_ON) and when the server refuses the resume; kept through "failed" (a reload while
// the network is down fails before it can resume: its retry, a reload, tries again). Duplicating
// a tab copies sessionStorage: the copy then takes the call over, and the original says
// "replaced".
const CALL_GOES_ON = ["opening", "consent", "checking", "waiting", "in_call", "reconnecting",
  "camera_denied", "camera_missing", "camera_busy", "no_session", "not_yet", "failed"];

function callKey() { return state.invite || state.partyToken || null; }

function keepCall(room) {
  const key = callKey();
  if (!key || !state.resumeToken || !state.callToken) return;
  const kept = { key, token: state.callToken, resume: state.resumeToken, room, participant: state.me };
  try { sessionStorage.setItem(STORE_CALL, JSON.stringify(kept)); } catch (err) { /* this page only */ }
}

function forgetCall() {
  try { sessionStorage.removeItem(STORE_CALL); } catch (err) { /* nothing kept */ }
}

function resumeKept(key) {
  // the kept call of this link, made ready for connect(): it sends resume, not join
  let kept = null;
  try { kept = JSON.parse(sessionStorage.getItem(STORE_CALL) || "null"); } catch (err) { kept = null; }
  if (!kept || kept.key !== key || typeof kept.token !== "string" || typeof kept.resume !== "string") return null;
  state.resumeFor = kept.token;
  state.resumeToken = kept.resume;
  return kept;
}

// -- the link: the case, consents, redemption ------------------------------------------------
// The headers of a request made with the link (or a call token): the device secret goes with it,
// since a link this page redeemed answers only the device that redeemed it.
function partyHeaders(token, extra) {
  const headers = { Authorization: `Bearer ${token}`, ...(extra || {}) };
  const secret = storedDevice();
  if (secret) headers["X-Remotecase-Device"] = secret;
  return I18N.headers(headers);
}

function storedDevice() {
  try { return localStorage.getItem(STORE_DEVICE) || undefined; } catch (err) { return undefined; }
}

async function partyView(token) {
  const response = await fetch("/api/party", { headers: partyHeaders(token) });
  state.viewRefused = null;
  if (!response.ok) {
    // a link bound to another device answers 403 other_device: it was used there
    const body = await response.json().catch(() => ({}));
    state.viewRefused = body.detail || body.error || String(response.status);
    return null;
  }
  return response.json();
}

function showCase(view) {
  state.view = view;
  if (!view) return;
  $("case-card").hidden = false;
  $("case-title").textContent = view.case.title;
  $("case-unit").textContent = view.unit || view.case.brigade || "";
  const appt = view.appointment;
  $("case-appointment").textContent = appt
    ? t("appointment.at", { start: I18N.dateTime(appt.starts_at), end: I18N.time(appt.ends_at) })
    : t("appointment.none");
  renderAppointment();
}

function deviceSecret() {
  try {
    let secret = localStorage.getItem(STORE_DEVICE);
    if (!secret) {
      const bytes = crypto.getRandomValues(new Uint8Array(32));
      secret = btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
      localStorage.setItem(STORE_DEVICE, secret);
    }
    return secret;
  } catch (err) {
    return undefined;  // storage off: the link is single use, as without this page's help
  }
}

async function inviteKey(invite) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(invite));
  return STORE_REDEEMED + Array.from(new Uint8Array(digest).slice(0, 12), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function remember(invite) {
  try { localStorage.setItem(await inviteKey(invite), "1"); } catch (err) { /* single use */ }
}

async function redeemed(invite) {
  try { return localStorage.getItem(await inviteKey(invite)) === "1"; } catch (err) { return false; }
}

async function redeem(body) {
  const response = await fetch("/api/invitations/redeem", {
    method: "POST", headers: I18N.headers({ "Content-Type": "application/json" }),
    body: JSON.stringify({ token: state.invite, device: deviceSecret(), ...body }),
  });
  let answer = {};
  try { answer = await response.json(); } catch (err) { /* a proxy's page */ }
  return { ok: response.ok, status: response.status, body: answer };
}

// the link's refusals (control/sessions/invitations.py) -> the page's state
const REDEEM_PHASES = {
  used: "link_used", unknown: "link_invalid", revoked: "link_invalid", expired: "link_invalid",
  not_yet: "not_yet", no_session: "no_session", session_ended: "ended", case_closed: "closed",
  removed: "removed",
};

function refusedLink(answer) {
  const phase = REDEEM_PHASES[answer.body.error];
  if (phase) setPhase(phase);
  else setPhase("failed", { reason: errorText(answer.body.error, answer.body.message) });
  return new Promise(() => {});  // the state says what to do next
}

async function admitAgain() {
  // this device used the link before (a reload, an expired call token): back in, no consents
  const answer = await redeem({});
  if (!answer.ok) return refusedLink(answer);
  return afterRedeem(answer.body);
}

async function afterRedeem(body) {
  await remember(state.invite);
  state.partyToken = body.token;
  enableUploads();
  setPhase("checking");
  await checkBeforeJoining(body.token);
  return body.token;
}

async function redeemInvitation(invite) {
  state.invite = invite;
  setPhase("opening");
  const view = await partyView(invite);
  if (!view) return refusedLink({ body: { error: state.viewRefused === "other_device" ? "used" : "unknown" } });
  showCase(view);
  listMaterials();
  if (view.case.status !== "open") return refusedLink({ body: { error: "case_closed" } });
  // this tab was in the call before a reload: back with the same call token and its resume
  // token, no redemption (a readmission would supersede that call token and end the call)
  const kept = resumeKept(invite);
  if (kept) {
    state.partyToken = kept.token;
    const token = await renewCallToken(kept.token);  // the kept one may be past its hour
    enableUploads();
    await ensureCamera();
    return token;
  }
  const mine = await redeemed(invite);
  if (mine || (view.invitation && view.invitation.used)) {
    // used before: by this device (back in, no consents asked again) or by another (refused)
    const again = await redeem({});
    if (again.ok) {
      await ensureCamera();
      return afterRedeem(again.body);
    }
    if (again.body.error !== "consent_required") return refusedLink(again);
  }
  // a party's link: explicit consents, a camera preview, then the invitation is used
  await ensureCamera();
  const form = $("consent-form");
  $("preview").srcObject = state.local;
  setPhase("consent");
  form.hidden = false;
  for (;;) {
    await new Promise((resolve) => form.addEventListener("submit", (e) => { e.preventDefault(); resolve(); }, { once: true }));
    const consent = {
      recording: $("consent-recording").checked,
      face: $("consent-face").checked,
      electronic_delivery: $("consent-delivery").checked,
    };
    let answer = await redeem({ consent });
    while (answer.body.error === "no_session") {
      // the officer has not opened the session yet: say so and try again by itself
      form.hidden = true;
      setPhase("no_session");
      await sleep(5000);
      answer = await redeem({ consent });
    }
    if (answer.ok) { form.hidden = true; return afterRedeem(answer.body); }
    if (answer.body.error === "consent_required" || answer.status === 429) {
      showError(errorText(answer.body.error, answer.body.message));
      continue;
    }
    form.hidden = true;
    return refusedLink(answer);
  }
}

// -- the identity check before the call (docs/verifier.md) --------------------------------
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
  const guidance = words(body.guidance);
  state.prejoin.guidance = guidance;
  const said = state.prejoin.said;
  if (guidance && said[said.length - 1] !== guidance) said.push(guidance);
  $("check-guidance").textContent = guidance;
  $("check-message").textContent = words(body.message);
  $("check-progress").textContent = body.route === "face" && body.status === "checking"
    ? t("check.progress", { matches: body.matches, needed: body.needed }) : "";
  $("check-frame").classList.toggle("passed", Boolean(body.admitted));
}

async function prejoinCall(token, path, blob) {
  const init = { method: blob ? "POST" : "GET", headers: partyHeaders(token) };
  if (blob) { init.body = blob; init.headers["Content-Type"] = "image/jpeg"; }
  if (path === "/retry") init.method = "POST";
  try {
    const response = await fetch(`/api/party/prejoin${path}`, init);
    return { status: response.status, body: await response.json() };
  } catch (err) {
    // a lost connection or a proxy's page: say so and try again, the check is not lost
    return { status: 0, body: { error: "network", message: t("error.network") } };
  }
}

async function checkBeforeJoining(token) {
  // after consent, before joining: the face check, or the officer's check of a document
  const section = $("prejoin");
  const video = $("check-video");
  let first = await prejoinCall(token, "");
  while (first.status !== 200) {
    showError(errorText(first.body.error, first.body.message));
    await sleep(2000);
    first = await prejoinCall(token, "");
  }
  showError("");
  let body = first.body;
  if (body.required === false || body.admitted) return;  // not asked, or passed before a reload
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
        $("check-guidance").textContent = words(answer.body.message);
        $("check-progress").textContent = "";
      } else if (answer.body.error === "already_admitted" || answer.body.error === "attempt_over") {
        const now = await prejoinCall(token, "");
        if (now.status === 200) { body = now.body; showCheck(body); }
      } else {
        $("check-message").textContent = errorText(answer.body.error, answer.body.message);
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
      else $("check-message").textContent = errorText(answer.body.error, answer.body.message);
    } else {
      // the officer decides (a document shown to the camera, or a manual admission) and
      // sees the latest picture, which is not face-processed
      await sleep(1500);
      if (video.videoWidth) await prejoinCall(token, "/still", await still(video));
      const answer = await prejoinCall(token, "");
      if (answer.status !== 200) {
        $("check-message").textContent = errorText(answer.body.error, answer.body.message);
      } else if (answer.body.admitted || !waiting) {
        body = answer.body;
        showCheck(body);
      }
    }
  }
  await sleep(500);
  section.hidden = true;
}

// -- materials and appointments --------------------------------------------------------------
function partyAuth() {
  const headers = { Authorization: `Bearer ${state.partyToken || state.invite}` };
  const secret = storedDevice();
  if (secret) headers["X-Remotecase-Device"] = secret;
  return headers;
}

async function listMaterials() {
  if (!state.invite && !state.partyToken) return;
  $("materials-panel").hidden = false;
  try {
    const response = await fetch("/api/party/materials", { headers: I18N.headers(partyAuth()) });
    if (response.ok) state.materials = (await response.json()).materials || [];
  } catch (err) { /* offline: the list as it was */ }
  renderMaterials();  // a refused read (a superseded token) keeps the list, in today's language
}

function renderMaterials() {
  const list = $("materials-list");
  list.replaceChildren();
  for (const m of state.materials || []) {
    const li = document.createElement("li");
    li.textContent = t("materials.item", { name: m.name || m.id, kind: m.media_type || "" });
    list.append(li);
  }
  if (!list.children.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = t("materials.none");
    list.append(li);
  }
}

let uploadsOn = false;
function enableUploads() {
  // a party sends materials with its call token; the server types, hashes and logs them
  $("materials-panel").hidden = false;
  $("upload-form").hidden = false;
  if (uploadsOn) return;
  uploadsOn = true;
  $("upload-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const file = $("material-file").files[0];
    if (!file) return;
    $("upload-status").textContent = t("materials.uploading");
    const response = await fetch(`/api/party/materials?name=${encodeURIComponent(file.name)}`, {
      method: "POST", headers: I18N.headers(partyAuth()), body: file,
    });
    const body = await response.json().catch(() => ({}));
    $("upload-status").textContent = response.ok
      ? t("materials.received", { name: file.name, sha: String(body.sha256 || "").slice(0, 16) })
      : t("materials.refused", { reason: body.message || t("error.unknown") });
    if (response.ok) { $("material-file").value = ""; listMaterials(); }
  });
}

// drawn again on every language event (another panel's catalog arriving sends one too): only
// the latest drawing writes the slots, or two would each add theirs to the list
let appointmentDraw = 0;

async function renderAppointment() {
  const draw = ++appointmentDraw;
  const view = state.view;
  if (!view || !state.invite || view.case.status !== "open") return;
  $("appointment-panel").hidden = false;
  const appt = view.appointment;
  $("appointment-now").textContent = appt
    ? t("appointment.at", { start: I18N.dateTime(appt.starts_at), end: I18N.time(appt.ends_at) })
    : t("appointment.none");
  $("appointment-book").textContent = t(appt ? "appointment.move" : "appointment.book");
  $("appointment-cancel").hidden = !appt;
  let slots = [];
  try {
    const response = await fetch("/api/party/slots", { headers: I18N.headers(partyAuth()) });
    if (response.ok) slots = (await response.json()).slots || [];
  } catch (err) { /* offline: no slots offered for now */ }
  if (draw !== appointmentDraw) return;  // a later drawing is under way
  const select = $("appointment-slot");
  select.replaceChildren();
  for (const s of slots) {
    const option = document.createElement("option");
    option.value = String(s.id);
    option.textContent = t("appointment.at", { start: I18N.dateTime(s.starts_at), end: I18N.time(s.ends_at) });
    select.append(option);
  }
  $("appointment-form").hidden = slots.length === 0;
  if (!slots.length) $("appointment-status").textContent = t("appointment.no_slots");
}

async function changeAppointment(path, body) {
  const response = await fetch(path, {
    method: "POST", headers: I18N.headers({ ...partyAuth(), "Content-Type": "application/json" }),
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  // "saved" once the case card shows the new time, not before
  if (response.ok) showCase(await partyView(state.invite));
  $("appointment-status").textContent = response.ok ? t("appointment.saved") : I18N.error(answer);
}

$("appointment-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const slot = Number($("appointment-slot").value);
  if (slot) changeAppointment("/api/party/appointment", { slot_id: slot });
});
$("appointment-cancel").addEventListener("submit", (e) => {
  e.preventDefault();
  changeAppointment("/api/party/appointment/cancel", { reason: $("cancel-reason").value });
  $("cancel-reason").value = "";
});

// -- the page --------------------------------------------------------------------------------
async function getToken() {
  const params = new URLSearchParams(location.search);
  if (params.get("token")) {
    state.partyToken = params.get("token");
    resumeKept(params.get("token"));
    return params.get("token");
  }
  if (params.get("invite")) return redeemInvitation(params.get("invite"));
  // without a link, only a development server lets the page mint its own token
  $("state-panel").hidden = true;
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
  $("state-panel").hidden = false;
  const response = await fetch("/dev/token", {
    method: "POST", headers: I18N.headers({ "Content-Type": "application/json" }),
    body: JSON.stringify({ room: $("room").value, name: $("name").value }),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(errorText(body.error, body.message));
  return body.token;
}

function toggle(kind, button) {
  const track = state.local && state.local.getTracks().find((tr) => tr.kind === kind);
  if (!track) return;
  if (!track.enabled && state.officerMuted[kind]) {
    showError(t("call.officer_muted.button"));
    return;
  }
  track.enabled = !track.enabled;
  labelButtons();
  button.setAttribute("aria-pressed", String(!track.enabled));
  const published = state.publishedTracks.find((p) => p.kind === kind);
  if (published) send({ type: "mute", track: published.id, muted: !track.enabled });
  if (kind === "video" && state.me) markTile(state.me);
}

function labelButtons() {
  const on = (kind) => { const tr = state.local && state.local.getTracks().find((x) => x.kind === kind); return !tr || tr.enabled; };
  $("mute-audio").textContent = on("audio") ? t("call.mic.off") : t("call.mic.on");
  $("mute-video").textContent = on("video") ? t("call.camera.off") : t("call.camera.on");
}

$("mute-audio").onclick = (e) => toggle("audio", e.currentTarget);
$("mute-video").onclick = (e) => toggle("video", e.currentTarget);
$("leave").onclick = () => {
  // the leave message, not the socket's close: a closed socket is a lost connection, which
  // the others see as "reconnecting" for the grace period
  state.ending = true;
  forgetCall();
  send({ type: "leave" });
  for (const pc of [state.pub, state.sub]) if (pc) pc.close();
  if (state.local) for (const tr of state.local.getTracks()) tr.stop();
  setPhase("left");
};

// The page is going: its tab closes, or it reloads (a page cannot tell which). It says so on its
// socket, and the server keeps the participant for media.unload_grace only (a few seconds, which
// a reload's resume beats) instead of the whole resume grace: the others see "closed the page"
// instead of a long "reconnecting" (docs/signalling.md, "A page reload"). Chromium delivers a
// WebSocket message sent in pagehide before the socket's 1001 close, on a tab closed as on a
// reload. Not after the leave button (left already), nor from a page not in a call.
window.addEventListener("pagehide", () => {
  if (!state.ending && state.me && state.ws && state.ws.readyState === 1) send({ type: "unload" });
});

$("lang-switch").onclick = () => I18N.setLang(I18N.lang === "en" ? "zh-CN" : "en");
document.addEventListener("remotecase:lang", () => {
  // re-render what the page wrote itself
  renderPhase();
  labelButtons();
  showOfficerMute();
  for (const pid of Object.keys(state.tiles)) { tileFor(pid); markTile(pid); }
  showCamera();
  if (state.view) showCase(state.view);
  renderMaterials();  // at once in the new language; then read again
  listMaterials();
});

async function main() {
  await I18N.load(["party", "mediation", "education"]).catch((err) => console.error(err));
  document.title = t("party.title");
  setPhase("opening");
  labelButtons();
  try {
    const token = await getToken();
    if (!state.local) await ensureCamera();
    setPhase("waiting");
    connect(token);
  } catch (err) {
    console.error(err);
    setPhase("failed", { reason: err.message || t("error.unknown") });
  }
}

main();
