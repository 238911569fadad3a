// The officer's call inside the case workspace: joins the session's room through the
// signalling WebSocket (docs/signalling.md) with the officer's session token, publishes the
// officer's camera and microphone when there are any (an officer without a camera still sees
// and hears everyone), receives every other participant on a second peer connection and shows
// each in a tile. The party page (client.js) speaks the same protocol; nothing is shared with
// it so that each page can change on its own. A reload during the call comes back as the same
// participant (the resume token is kept for this tab in sessionStorage); the leave button sends
// leave, and closing the tab says "unload" as the page goes, so the others see the officer away
// for a few seconds (media.unload_grace, which a reload's resume beats) and then "closed the
// page", instead of "reconnecting" for the whole grace period.
"use strict";

(() => {
  const con = window.remotecaseConsole;
  if (!con) return;
  const $ = (id) => document.getElementById(id);
  const t = (key, params) => I18N.t(key, params);

  const VIDEO = { width: { ideal: 1280 }, height: { ideal: 720 } };
  // why the server may close a call that the officer did not end: the page joins again
  const REJOIN = ["peer_closed", "connection_failed", "connect_timeout", "signalling_lost"];
  const REJOIN_TRIES = 5;
  let rejoins = 0;
  // {session, token}: the resume token of the last joined/resumed, to come back with; kept in
  // this tab's sessionStorage so that a reload resumes too (never localStorage: another tab
  // must not take the call over), forgotten on leave, on a final bye and on a refused resume
  const STORE = "remotecase.console.call";
  let resume = kept();
  let reloaded = Boolean(resume);  // join again by itself once the console shows that session

  function kept() {
    let value = null;
    try { value = JSON.parse(sessionStorage.getItem(STORE) || "null"); } catch (err) { value = null; }
    if (!value || !Number.isInteger(value.session) || typeof value.token !== "string") return null;
    // the page was left (pagehide) longer ago than the grace period: the call is over for this
    // officer, and coming back to the console later must not join it by itself
    if (value.leftAt && Date.now() - value.leftAt > (value.grace || 0) * 1000) {
      try { sessionStorage.removeItem(STORE); } catch (err) { /* nothing kept */ }
      return null;
    }
    return value;
  }

  function keep(value) {
    resume = value;
    try {
      if (value) sessionStorage.setItem(STORE, JSON.stringify(value));
      else sessionStorage.removeItem(STORE);
    } catch (err) { /* this page only */ }
  }
  let call = null;  // the call now: {ws, pub, sub, local, me, tracks, tiles, published, leaving}

  function send(msg) { if (call && call.ws.readyState === 1) call.ws.send(JSON.stringify(msg)); }
  con.callSend = send;  // for the workspace's other parts (see "remotecase:call-message")

  function waitForIce(pc, limitMs = 3000) {
    // complete descriptions: simpler for the server than trickling every candidate
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { pc.removeEventListener("icegatheringstatechange", check); resolve(); };
      const check = () => { if (pc.iceGatheringState === "complete") done(); };
      pc.addEventListener("icegatheringstatechange", check);
      setTimeout(done, limitMs);
    });
  }

  async function openCamera() {
    // a desk may have no camera, or a camera without a microphone: join with what there is
    for (const constraints of [{ video: VIDEO, audio: true }, { audio: true }, { video: VIDEO }]) {
      try { return await navigator.mediaDevices.getUserMedia(constraints); } catch (err) { /* next */ }
    }
    con.notice(t("call.no_camera"));
    return null;
  }

  function isParty(pid) {
    const p = con.participants[pid];
    return (p && p.role) ? p.role === "party" : pid.startsWith("party-");
  }

  function nameOf(pid) {
    if (pid === "server-evidence") return t("call.evidence");
    if (call && pid === call.me) return t("call.me");
    const p = con.participants[pid];
    return (p && p.name) || (call && call.names[pid]) || pid;
  }

  function tileFor(pid) {
    let tile = call.tiles[pid];
    if (!tile) {
      const video = con.el("video", { autoplay: true, playsInline: true });
      if (pid === call.me) video.muted = true;
      // a picture has arrived: the snapshot button can be offered
      video.addEventListener("loadeddata", () => con.renderParticipants());
      const label = con.el("span", { class: "label" });
      const face = con.el("span", { class: "tile-face" });
      const el = con.el("div", { class: "tile", "data-participant": pid }, video, label, face);
      $("grid").append(el);
      tile = call.tiles[pid] = { el, video, label, face, stream: new MediaStream() };
      video.srcObject = tile.stream;
    }
    labelTile(pid, tile);
    return tile;
  }

  function labelTile(pid, tile) {
    tile.label.textContent = nameOf(pid);
    const p = con.participants[pid];
    const text = p ? con.faceText(p) : "";
    tile.face.textContent = text;
    tile.face.className = `tile-face state-${(p && p.state) || "none"}`;
    tile.face.hidden = !text;
  }

  function removeTile(pid) {
    const tile = call && call.tiles[pid];
    if (tile) { tile.el.remove(); delete call.tiles[pid]; }
  }

  function syncMutes() {
    // the SFU's map of what each transceiver carries says whether it is muted: the state
    // holds after this page joined (or joined again), not only from track_muted onwards
    for (const info of Object.values(call.tracks)) {
      const p = con.participants[info.participant];
      if (p && info.kind && info.muted !== undefined) p.muted = { ...(p.muted || {}), [info.kind]: Boolean(info.muted) };
    }
  }

  function renderRemote() {
    // each remote participant's stream from the transceivers the SFU says carry them
    if (!call || !call.sub) return;
    syncMutes();
    const wanted = {};
    for (const tr of call.sub.getTransceivers()) {
      const info = call.tracks[tr.mid];
      if (!info || !tr.receiver.track || tr.currentDirection === "inactive") continue;
      (wanted[info.participant] ||= []).push(tr.receiver.track);
    }
    for (const [pid, tracks] of Object.entries(wanted)) {
      const tile = tileFor(pid);
      for (const old of tile.stream.getTracks()) if (!tracks.includes(old)) tile.stream.removeTrack(old);
      for (const track of tracks) if (!tile.stream.getTracks().includes(track)) tile.stream.addTrack(track);
      tile.video.play().catch(() => {});
    }
    for (const pid of Object.keys(call.tiles)) if (pid !== call.me && !wanted[pid]) removeTile(pid);
    con.renderParticipants();
  }

  async function publish() {
    const pc = call.pub = new RTCPeerConnection({ iceServers: call.iceServers });
    if (call.heartbeat) call.heartbeat.peer(pc);  // its ICE going bad is a sign to probe
    for (const track of call.local.getTracks()) {
      // video with VP8 temporal layers (L1T3) where the browser can, as the party page does:
      // the SFU then gives a weak receiver fewer frames instead of a frozen picture
      let added = false;
      if (track.kind === "video") {
        try {
          pc.addTransceiver(track, { direction: "sendonly", sendEncodings: [{ scalabilityMode: "L1T3" }] });
          added = true;
        } catch (err) { /* no layers in this browser: one layer */ }
      }
      if (!added) pc.addTransceiver(track, { direction: "sendonly" });
    }
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIce(pc);
    send({ type: "publish", sdp: pc.localDescription.sdp });
  }

  async function onOffer(msg) {
    if (!call.sub) {
      const pc = call.sub = new RTCPeerConnection({ iceServers: call.iceServers });
      pc.ontrack = () => renderRemote();
      if (call.heartbeat) call.heartbeat.peer(pc);
      pc.onconnectionstatechange = () => showState(pc.connectionState === "connected" ? "call.state.connected" : pc.connectionState === "failed" ? "call.state.failed" : "call.state.connecting");
    }
    call.tracks = msg.tracks || {};
    await call.sub.setRemoteDescription({ type: "offer", sdp: msg.sdp });
    await call.sub.setLocalDescription(await call.sub.createAnswer());
    await waitForIce(call.sub);
    send({ type: "answer", sdp: call.sub.localDescription.sdp });
    renderRemote();
  }

  function showState(key) { call && (call.stateKey = key); $("call-state").textContent = key ? t(key) : ""; }

  function trackKind(trackId) {
    for (const info of Object.values((call && call.tracks) || {})) if (info.id === trackId) return info.kind;
    const own = ((call && call.published) || []).find((p) => p.id === trackId);
    return own ? own.kind : null;
  }

  async function onMessage(msg) {
    // the workspace's other parts (an education panel, record.js) see every call message too
    window.dispatchEvent(new CustomEvent("remotecase:call-message", { detail: msg }));
    switch (msg.type) {
      case "joined":
      case "resumed":  // back as the same participant after a lost connection (docs/signalling.md, Resume)
        rejoins = 0;
        // the page, once left (pagehide), is kept by the server for the unload grace only
        keep(msg.resume_token ? { session: call.session, token: msg.resume_token, grace: msg.unload_grace ?? msg.resume_grace } : null);
        call.me = msg.participant.id;
        call.names[call.me] = msg.participant.name;
        for (const p of msg.participants) {
          call.names[p.id] = p.name;
          // already in the room before this page listened: known from here on
          con.participants[p.id] = { ...(con.faces[p.id] || {}), ...(con.participants[p.id] || {}), name: p.name, role: p.role };
        }
        call.iceServers = msg.ice_servers || [];
        showState("call.state.joined");
        if (call.local) {
          const tile = tileFor(call.me);
          tile.stream = call.local; tile.video.srcObject = call.local;
          await publish();
        }
        break;
      case "publish_answer":
        call.published = msg.tracks || [];
        for (const p of call.published) {
          // the officer's own mute as this page has it (after a reload: on again, while the
          // resumed tracks kept the mute of the page before)
          const own = call.local && call.local.getTracks().find((tr) => tr.kind === p.kind);
          if (own && Boolean(p.self_muted) !== !own.enabled) send({ type: "mute", track: p.id, muted: !own.enabled });
        }
        await call.pub.setRemoteDescription({ type: "answer", sdp: msg.sdp });
        break;
      case "offer": await onOffer(msg); break;
      case "tracks": call.tracks = msg.tracks || {}; renderRemote(); break;
      case "participant_joined": {
        const p = msg.participant;
        call.names[p.id] = p.name;
        con.participants[p.id] = { ...(con.faces[p.id] || {}), ...(con.participants[p.id] || {}), name: p.name, role: p.role };
        con.renderParticipants();
        break;
      }
      case "participant_left":
        removeTile(msg.participant);
        // its page said it was going and no reload came back: said at once, not "lost";
        // "gone": its connection ended without a close (the page closed or crashed unsaid)
        if (msg.reason === "closed") con.notice(t(isParty(msg.participant) ? "call.party_closed" : "call.peer_closed", { name: call.names[msg.participant] || msg.participant }));
        if (msg.reason === "gone") con.notice(t(isParty(msg.participant) ? "call.party_gone" : "call.peer_gone", { name: call.names[msg.participant] || msg.participant }));
        break;
      // lost their connection, may come back within the grace period (docs/signalling.md,
      // Resume); "closed": its page is closing or reloading, "gone": its page's connection
      // ended without a close: a few seconds each (the unload grace)
      case "participant_reconnecting": {
        const name = call.names[msg.participant] || msg.participant;
        const said = { closed: "call.peer_closing", gone: "call.peer_gone_away" }[msg.reason] || "call.peer_reconnecting";
        con.notice(t(said, { name }));
        break;
      }
      case "participant_resumed":
        con.notice(t("call.peer_resumed", { name: call.names[msg.participant.id] || msg.participant.id }));
        break;
      case "track_muted": {
        for (const info of Object.values(call.tracks)) if (info.id === msg.track) info.muted = msg.muted;
        const kind = trackKind(msg.track);
        const p = con.participants[msg.participant];
        if (p && kind) { p.muted = { ...(p.muted || {}), [kind]: msg.muted }; con.renderParticipants(); }
        break;
      }
      case "error":
        if (msg.code === "resume_refused") { keep(null); send({ type: "join", token: call.joinToken }); break; }
        con.showError(I18N.has(`error.${msg.code}`) ? t(`error.${msg.code}`) : msg.message || msg.code); break;
      case "bye":
        // the connection failed or timed out: come back by oneself; anything else is final
        call.leaving = !REJOIN.includes(msg.reason);
        if (call.leaving) keep(null);
        call.byeReason = msg.reason;
        con.notice(t("call.bye", { reason: I18N.has(`leave.${msg.reason}`) ? t(`leave.${msg.reason}`) : msg.reason }));
        break;
      default: break;  // the verifier's per-sample reports: the event stream has the changes
    }
  }

  async function join() {
    if (call) return;
    if (!con.session) throw new Error(t("call.need_session"));
    const { token } = await con.api("POST", con.sessionPath("/token"));
    call = { ws: null, pub: null, sub: null, local: null, me: null, tracks: {}, tiles: {}, names: {},
             published: [], iceServers: [], leaving: false, session: con.session.id, joinToken: token };
    showState("call.state.camera");
    buttons(true);
    call.local = await openCamera();
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = call.ws = new WebSocket(`${scheme}://${location.host}/ws`);
    const mine = call;
    ws.onopen = () => {
      showState("call.state.joining");
      // a lost connection: come back as the same participant, so the others see no leave
      const back = resume && resume.session === mine.session ? resume.token : null;
      // with the call token, so that the front routes the socket to the room's worker
      send(back ? { type: "resume", resume_token: back, token } : { type: "join", token });
    };
    ws.onmessage = (e) => onMessage(JSON.parse(e.data)).catch((err) => con.showError(err));
    const closed = (e) => {
      if (call !== mine) return;
      const expected = mine.leaving;
      cleanup();
      if (expected) return;
      if (con.session && con.session.id === mine.session && rejoins < REJOIN_TRIES) {
        rejoins += 1;
        con.notice(t("call.rejoining"));
        rejoinSoon(mine.session, e.dead ? 0 : 1500);  // found dead: its new network is up
      } else {
        con.showError(t("call.lost", { code: e.code }));
      }
    };
    ws.onclose = closed;
    // a socket the network left dead (the officer's Wi-Fi gone) is dropped and the call resumed
    // on a new one, as after a close (heartbeat.js)
    mine.heartbeat = window.remotecaseHeartbeat.watch(ws, {
      isCurrent: () => call === mine && mine.ws === ws,
      onDead: () => closed({ code: 1006, dead: true }),
    });
  }

  // again after a lost connection, with backoff while the network is still down (the token
  // request fails too); resume brings the same participant back within the grace period
  function rejoinSoon(session, delay) {
    setTimeout(() => {
      if (call || !con.session || con.session.id !== session) return;
      join().catch((err) => {
        if (call || rejoins >= REJOIN_TRIES) return con.showError(err);
        rejoins += 1;
        rejoinSoon(session, Math.min(Math.max(delay * 2, 1500), 8000));
      });
    }, delay);
  }

  function cleanup() {
    if (!call) return;
    const gone = call;
    call = null;
    for (const pc of [gone.pub, gone.sub]) if (pc) pc.close();
    if (gone.local) for (const track of gone.local.getTracks()) track.stop();
    $("grid").replaceChildren();
    showState("");
    buttons(false);
    con.renderParticipants();
  }

  function leave() {
    if (!call) return;
    call.leaving = true;
    keep(null);
    send({ type: "leave" });
    const ws = call.ws;
    cleanup();
    if (ws) ws.close();
  }

  function buttons(inCall) {
    $("join-call").hidden = inCall;
    for (const id of ["leave-call", "own-audio", "own-video"]) $(id).hidden = !inCall;
    $("own-audio").textContent = t("call.mic_off");
    $("own-video").textContent = t("call.camera_off");
  }

  function toggle(kind, id, onKey, offKey) {
    const track = call && call.local && call.local.getTracks().find((tr) => tr.kind === kind);
    if (!track) { con.showError(t(kind === "audio" ? "call.no_mic" : "call.no_camera")); return; }
    track.enabled = !track.enabled;
    $(id).textContent = t(track.enabled ? onKey : offKey);
    const published = call.published.find((p) => p.kind === kind);
    if (published) send({ type: "mute", track: published.id, muted: !track.enabled });
  }

  $("join-call").addEventListener("click", con.guard(join));
  $("leave-call").addEventListener("click", () => leave());
  $("own-audio").addEventListener("click", () => toggle("audio", "own-audio", "call.mic_off", "call.mic_on"));
  $("own-video").addEventListener("click", () => toggle("video", "own-video", "call.camera_off", "call.camera_on"));

  function hasVideo(pid) {
    const tile = call && call.tiles[pid];
    return Boolean(tile && tile.video.videoWidth > 0);
  }

  function snapshot(pid) {
    // one JPEG of the participant's picture as received, at its own size
    const tile = call && call.tiles[pid];
    if (!tile || !tile.video.videoWidth) return Promise.reject(new Error(t("reference.no_video")));
    const canvas = document.createElement("canvas");
    canvas.width = tile.video.videoWidth; canvas.height = tile.video.videoHeight;
    canvas.getContext("2d").drawImage(tile.video, 0, 0, canvas.width, canvas.height);
    return new Promise((resolve, reject) => canvas.toBlob(
      (blob) => (blob ? resolve(blob) : reject(new Error(t("reference.no_video")))), "image/jpeg", 0.92));
  }

  function relabel() {
    if (!call) return;
    for (const [pid, tile] of Object.entries(call.tiles)) labelTile(pid, tile);
  }

  con.call = {
    join, leave, hasVideo, snapshot, relabel,
    get joined() { return Boolean(call); },
    get state() { return call; },
  };
  con.part({
    name: "call",
    caseOpened() {
      if (call && (!con.session || con.session.id !== call.session)) leave();
      // reloaded during the call: back into it as the same participant, when the first case
      // the console opens (the one in the address) is that call's
      if (!reloaded) return;
      reloaded = false;
      if (!call && resume && con.session && con.session.id === resume.session) {
        con.notice(t("call.rejoining"));
        join().catch((err) => con.showError(err));
      } else {
        keep(null);
      }
    },
    lang() { if (call) { showState(call.stateKey); buttons(true); relabel(); } },
  });
  // no leave on pagehide: a reload must find the participant waiting for its resume. "unload"
  // instead: the server keeps it away for the unload grace only, then it leaves as "closed"
  // (a closed tab is not shown as "reconnecting" for the whole grace period). When it was left
  // is noted, so that only a return within that grace resumes by itself.
  window.addEventListener("pagehide", () => {
    if (!call || call.leaving) return;
    if (resume) keep({ ...resume, leftAt: Date.now() });
    send({ type: "unload" });
  });
})();
