// The recordings of the open case: each with its state, a player per track (decrypted by the
// server as it is sent), the custody verification and an export for a court. Every access to
// evidence needs a reason, which the server writes into the custody log with the officer.
"use strict";

(() => {
  const con = window.remotecaseConsole;
  if (!con) return;
  const $ = (id) => document.getElementById(id);
  const t = (key, params) => I18N.t(key, params);
  let recordings = [];
  let playing = null;  // object URL of the track in the player
  let timer = null;

  function reason() {
    const text = $("recordings-reason").value.trim();
    if (!text) { $("recordings-reason").focus(); throw new Error(t("recordings.need_reason")); }
    return text;
  }

  async function load() {
    if (!con.caseId) return;
    const { recordings: all } = await con.api("GET", "/api/recordings");
    recordings = all.filter((r) => String(r.case) === String(con.caseId));  // the recorder keeps it as text
    render();
  }

  function stateText(state) { return I18N.has(`recordings.state.${state}`) ? t(`recordings.state.${state}`) : state; }

  function render() {
    const list = $("recordings");
    list.replaceChildren();
    for (const r of recordings.slice().reverse()) {
      const sealed = r.state === "sealed";
      const when = r.started_at ? I18N.dateTime(r.started_at) : "";
      const li = con.el("li", { "data-recording": r.recording_id, "data-state": r.state || "" },
        con.el("strong", { text: when }), " ", con.el("span", { class: sealed ? "ok" : "warn", text: stateText(r.state) }), " ",
        con.el("code", { class: "muted", text: r.recording_id }));
      if (sealed) {
        li.append(con.el("div", { class: "row" },
          con.button(t("recordings.play"), () => play(r)),
          con.button(t("recordings.verify"), () => verify(r)),
          con.button(t("recordings.export"), () => exportIt(r))));
      }
      list.append(li);
    }
    if (!list.children.length) list.append(con.el("li", { class: "muted", text: t("recordings.empty") }));
  }

  async function play(r) {
    const why = reason();
    const manifest = await con.api("GET", `/api/recordings/${r.recording_id}/manifest?reason=${encodeURIComponent(why)}`);
    const tracks = (manifest.tracks || []).filter((tr) => tr.kind === "video" && tr.frames > 0);
    const track = tracks.find((tr) => String(tr.participant).startsWith("party")) || tracks[0] || (manifest.tracks || [])[0];
    if (!track) throw new Error(t("recordings.no_tracks"));
    const blob = await con.api("GET", `/api/recordings/${r.recording_id}/tracks/${track.track_id}/media?reason=${encodeURIComponent(why)}`);
    if (playing) URL.revokeObjectURL(playing);
    playing = URL.createObjectURL(blob);
    const video = $("recording-video");
    video.src = playing;
    video.dataset.recording = r.recording_id;
    video.dataset.track = track.track_id;
    $("recording-player").hidden = false;
    const name = (con.participants[track.participant] || {}).name || track.participant;
    $("recording-info").textContent = t("recordings.playing", { who: name, kind: t(`recordings.kind.${track.kind}`), frames: track.frames, others: (manifest.tracks || []).length - 1 });
    video.play().catch(() => {});
    await con.loadAudit();
  }

  // a check in the page's language: the server words each one in Chinese and in English
  function finding(f) {
    const zh = I18N.lang === "zh-CN" && f.check_zh;
    const check = zh ? f.check_zh : f.check;
    const detail = zh ? f.detail_zh : f.detail;
    const mark = f.ok ? "✓" : "✗";
    return detail ? t("recordings.finding", { mark, check, detail }) : `${mark} ${check}`;
  }

  let verified = null;  // the last verification shown, written again after a language switch

  async function verify(r) {
    showVerified(await con.api("GET", `/api/recordings/${r.recording_id}/verify?reason=${encodeURIComponent(reason())}`));
  }

  function showVerified(result) {
    verified = result;
    const box = $("recording-result");
    const failed = result.findings.filter((f) => !f.ok);
    box.replaceChildren(con.el("p", { class: result.ok ? "ok" : "danger", "data-verified": result.ok ? "ok" : "fail",
      text: result.ok ? t("recordings.verified_ok", { n: result.findings.length }) : t("recordings.verified_fail", { n: failed.length }) }),
      con.el("ul", { class: "list muted" }, ...result.findings.map((f) => con.el("li", { text: finding(f) }))));
  }

  async function exportIt(r) {
    const why = reason();
    const made = await con.api("POST", `/api/recordings/${r.recording_id}/export`, { reason: why });
    const box = $("recording-result");
    const files = con.el("ul", { class: "list" });
    for (const file of made.files) {
      files.append(con.el("li", {}, con.button(file, async () => {
        const blob = await con.api("GET", `/api/recordings/${r.recording_id}/exports/${made.export}/${file}?reason=${encodeURIComponent(reason())}`);
        const a = con.el("a", { href: URL.createObjectURL(blob), download: file.split("/").pop() });
        document.body.append(a); a.click(); a.remove();
        setTimeout(() => URL.revokeObjectURL(a.href), 10000);
      })));
    }
    verified = null;
    box.replaceChildren(con.el("p", { class: "ok", "data-export": made.export, text: t("recordings.exported", { name: made.export, n: made.files.length }) }), files);
  }

  function soon() {
    if (timer) return;
    timer = setTimeout(() => { timer = null; load().catch(con.showError); }, 300);
  }

  con.part({
    name: "recordings",
    async caseOpened() {
      $("recording-player").hidden = true; $("recording-result").replaceChildren(); verified = null;
      await load();
    },
    event(ev) { if (ev.type === "recording" || ev.type === "session") soon(); },
    lang() { render(); if (verified) showVerified(verified); },
  });
})();
