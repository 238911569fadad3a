// The party's inquiry record (read live during the call), its corrections, and signing the
// documents of the party's case with a key only this browser holds.
//
// The key: WebCrypto ECDSA P-256, generated non-extractable for each signing; the server gets
// its public key (SPKI) and the signature value (r||s), never the private key. The mark drawn
// with a finger or the mouse is kept as strokes (lists of [x, y] points); they become the
// signature's visible appearance and are signed with it. The server certifies the key only
// right after a face match in the call (409 face_match_required otherwise).
"use strict";

(() => {
  // the invitation link (?invite=) names the party, as its call token (?token=) does
  const params = new URLSearchParams(location.search);
  const token = params.get("invite") || params.get("token");
  if (!token) return;  // development page without a link: nothing of a case to show

  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "onclick") node.addEventListener("click", v); else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  };
  // the page's words: the "sign" catalog (control/web/i18n/<lang>/sign.json), Chinese first
  const t = (key, params) => I18N.t(key, params);
  const b64 = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)));
  const unb64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

  // the device secret client.js keeps: a link the page redeemed answers only this device
  const device = () => {
    try {
      const secret = localStorage.getItem("remotecase.device");
      return secret ? { "X-Remotecase-Device": secret } : {};
    } catch (err) { return {}; }
  };

  async function call(method, path, body) {
    const response = await fetch(path, {
      method, headers: { ...I18N.headers(), Authorization: `Bearer ${token}`, ...device(),
                         ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const type = response.headers.get("Content-Type") || "";
    const data = type.includes("json") ? await response.json() : await response.blob();
    if (!response.ok) throw new Error(I18N.error(data && typeof data === "object" && !(data instanceof Blob) ? data : {}));
    return data;
  }

  let panel = null;
  function build() {
    // texts that stay are named by key (data-i18n): a language switch rewrites them (I18N.apply)
    panel = el("section", { id: "party-papers" },
      el("h2", { "data-i18n": "sign.record.heading" }, t("sign.record.heading")),
      el("div", { id: "record-live" },
        el("p", { class: "muted", "data-i18n": "sign.record.none" }, t("sign.record.none"))),
      el("h2", { "data-i18n": "sign.documents.heading" }, t("sign.documents.heading")),
      el("ul", { id: "party-documents" }),
      el("div", { id: "sign-error", role: "alert" }));
    document.body.append(panel);
  }
  const say = (text) => { document.getElementById("sign-error").textContent = text; };

  // -- the record, live ----------------------------------------------------------------------
  async function showRecord() {
    let record;
    try { record = await call("GET", "/api/party/record"); } catch { return; }
    const box = document.getElementById("record-live");
    box.replaceChildren(el("p", {}, t("sign.record.phase", { phase: t(`sign.phase.${record.phase}`) })));
    for (const turn of record.turns) {
      box.append(el("p", { class: "turn" }, t("sign.record.q", { time: turn.time, q: turn.q })),
        el("p", {}, t("sign.record.a", { a: turn.a })));
    }
    for (const c of record.corrections) {
      const row = el("p", { class: "correction" }, t("sign.correction", {
        id: c.id, turn: c.turn, field: t(c.field === "q" ? "sign.correction.q" : "sign.correction.a"),
        before: c.before, after: c.after,
        status: I18N.has(`sign.correction.${c.status}`) ? t(`sign.correction.${c.status}`) : c.status }));
      if (c.status === "proposed") {
        for (const [label, ok] of [[t("sign.correction.confirm"), true], [t("sign.correction.reject"), false]]) {
          row.append(" ", el("button", { onclick: async () => {
            try { await call("POST", `/api/party/record/corrections/${c.id}`, { confirmed: ok }); }
            catch (e) { say(e.message); }
            showRecord();
          } }, label));
        }
      }
      box.append(row);
    }
  }

  // -- the signature pad ---------------------------------------------------------------------
  function pad() {
    const canvas = el("canvas", { width: "300", height: "120", class: "signature-pad" });
    canvas.style.border = "1px solid #888";
    canvas.style.touchAction = "none";
    const strokes = [];
    const ctx = canvas.getContext("2d");
    let current = null;
    const point = (e) => {
      const r = canvas.getBoundingClientRect();
      return [Math.round((e.clientX - r.left) * 10) / 10, Math.round((e.clientY - r.top) * 10) / 10];
    };
    canvas.addEventListener("pointerdown", (e) => {
      canvas.setPointerCapture(e.pointerId);
      current = [point(e)];
      strokes.push(current);
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!current) return;
      const [x0, y0] = current[current.length - 1];
      const p = point(e);
      current.push(p);
      ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(p[0], p[1]); ctx.stroke();
    });
    canvas.addEventListener("pointerup", () => { current = null; });
    const clear = () => { strokes.length = 0; ctx.clearRect(0, 0, canvas.width, canvas.height); };
    return { canvas, strokes, clear };
  }

  async function sign(docId, field, strokes) {
    // a fresh key for this signing; the private half cannot leave this browser
    const keys = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false,
                                                 ["sign"]);
    const spki = await crypto.subtle.exportKey("spki", keys.publicKey);
    const prep = await call("POST", `/api/party/documents/${docId}/sign/prepare`,
                            { field, public_key: b64(spki), strokes });
    const signature = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" },
                                               keys.privateKey, unb64(prep.to_be_signed));
    return call("POST", `/api/party/documents/${docId}/sign/finish`,
                { request_id: prep.request_id, signature: b64(signature) });
  }

  async function showDocuments() {
    let listing;
    try { listing = await call("GET", "/api/party/documents"); } catch { return; }
    const list = document.getElementById("party-documents");
    if (list.dataset.seen === JSON.stringify(listing.documents.map((d) => d.sha256))) return;
    list.dataset.seen = JSON.stringify(listing.documents.map((d) => d.sha256));
    list.replaceChildren();
    for (const d of listing.documents) {
      const doc = await call("GET", `/api/party/documents/${d.id}`);
      const item = el("li", { "data-document": String(d.id) },
        el("strong", {}, `${doc.title} ${doc.number}`), " ",
        doc.state.effective ? t("sign.effective") : t("sign.missing", {
          boxes: doc.state.missing.map((m) => t("sign.missing.box", { name: m.name, field: m.field })).join(t("sign.list.sep")) }), " ",
        el("button", { onclick: async () => {
          const blob = await call("GET", `/api/party/documents/${d.id}/pdf`);
          window.open(URL.createObjectURL(blob), "_blank", "noopener");
        } }, t("sign.view")));
      // the party's own boxes still to sign: one per page for a record
      const mine = doc.required.filter((r) => r.role === "party" && r.signer_id === doc.you &&
        !r.refused &&
        !doc.state.signed.includes(r.field) && doc.state.missing.some((m) => m.field === r.field));
      // a refusal to sign, in the party's own words: printed on the document (拒绝签名记录),
      // it does not block the case; only before the document's first signature
      const refusedMine = doc.required.some((r) => r.signer_id === doc.you && r.refused);
      if (refusedMine) {
        item.append(el("p", { class: "refused" },
          t("sign.refused")));
      } else if (mine.length && !doc.signatures.length) {
        const reason = el("textarea", { class: "refuse-reason", rows: "2", maxlength: "500",
          placeholder: t("sign.refuse.reason") });
        const refuse = el("button", { class: "refuse", onclick: async () => {
          if (!reason.value.trim()) {
            say(t("sign.refuse.need_reason")); return;
          }
          refuse.disabled = true;
          try {
            await call("POST", `/api/party/documents/${d.id}/refusals`,
                       { field: mine[0].field, reason: reason.value.trim() });
            say(t("sign.refuse.done"));
            list.dataset.seen = "";
          } catch (e) { say(e.message); refuse.disabled = false; }
          showDocuments();
        } }, t("sign.refuse"));
        item.append(el("div", { class: "refuse-box" }, reason, refuse));
      }
      for (const r of mine) {
        const p = pad();
        const button = el("button", { class: "sign", onclick: async () => {
          if (!p.strokes.length) { say(t("sign.draw_first")); return; }
          button.disabled = true;
          try { await sign(d.id, r.field, p.strokes); say(t("sign.signed")); list.dataset.seen = ""; }
          catch (e) { say(e.message); button.disabled = false; }
          showDocuments();
        } }, t("sign.sign_page", { page: r.page }));
        item.append(el("div", { class: "sign-box", "data-field": r.field },
          t("sign.box", { label: r.label, name: r.name, page: r.page }), p.canvas,
          el("button", { onclick: p.clear }, t("sign.clear")), button));
      }
      list.append(item);
    }
  }

  const tick = () => Promise.all([showRecord(), showDocuments()]).catch((e) => say(e.message));
  // after a language switch the panel is written again in the new words
  document.addEventListener("remotecase:lang", () => {
    if (!panel) return;
    document.getElementById("party-documents").dataset.seen = "";
    tick();
  });
  I18N.use("sign").then(() => {
    build();
    tick();
    setInterval(tick, 3000);
  });
})();
