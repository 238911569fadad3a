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
  // the page's words: from the "sign" catalog when the page loaded it with the i18n loader
  // (control/web/i18n/<lang>/sign.json), else the Chinese / English text given here
  const tr = (key, both, params = {}) => {
    const text = window.I18N && I18N.has(key) ? I18N.t(key, params) : both;
    return text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
  };
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
      method, headers: { Authorization: `Bearer ${token}`, ...device(),
                         ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const type = response.headers.get("Content-Type") || "";
    const data = type.includes("json") ? await response.json() : await response.blob();
    if (!response.ok) throw new Error((data && data.message) || `HTTP ${response.status}`);
    return data;
  }

  const panel = el("section", { id: "party-papers" },
    el("h2", {}, "询问笔录 / Inquiry record"), el("div", { id: "record-live" }, "（暂无 / none yet）"),
    el("h2", {}, "文书与签名 / Documents to sign"), el("ul", { id: "party-documents" }),
    el("div", { id: "sign-error", role: "alert" }));
  document.body.append(panel);
  const say = (text) => { document.getElementById("sign-error").textContent = text; };

  // -- the record, live ----------------------------------------------------------------------
  async function showRecord() {
    let record;
    try { record = await call("GET", "/api/party/record"); } catch { return; }
    const box = document.getElementById("record-live");
    box.replaceChildren(el("p", {}, `状态 / phase：${{ writing: "记录中 / being written",
      review: "请您审阅 / please review", final: "已定稿 / final" }[record.phase]}`));
    for (const t of record.turns) {
      box.append(el("p", { class: "turn" }, `${t.time} 问：${t.q}`), el("p", {}, `答：${t.a}`));
    }
    for (const c of record.corrections) {
      const row = el("p", { class: "correction" },
        `更正 ${c.id}（第${c.turn}问答，${c.field === "q" ? "问" : "答"}）：“${c.before}” → “${c.after}” — ${c.status}`);
      if (c.status === "proposed") {
        for (const [label, ok] of [["确认 / confirm", true], ["拒绝 / reject", false]]) {
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
        doc.state.effective ? "已生效 / in effect" : `待签 / missing：${doc.state.missing.map((m) => m.name + "（" + m.field + "）").join("、")}`, " ",
        el("button", { onclick: async () => {
          const blob = await call("GET", `/api/party/documents/${d.id}/pdf`);
          window.open(URL.createObjectURL(blob), "_blank", "noopener");
        } }, "查看 PDF / view"));
      // the party's own boxes still to sign: one per page for a record
      const mine = doc.required.filter((r) => r.role === "party" && r.signer_id === doc.you &&
        !r.refused &&
        !doc.state.signed.includes(r.field) && doc.state.missing.some((m) => m.field === r.field));
      // a refusal to sign, in the party's own words: printed on the document (拒绝签名记录),
      // it does not block the case; only before the document's first signature
      const refusedMine = doc.required.some((r) => r.signer_id === doc.you && r.refused);
      if (refusedMine) {
        item.append(el("p", { class: "refused" },
          tr("sign.refused", "已记录拒绝签名 / the refusal to sign is recorded")));
      } else if (mine.length && !doc.signatures.length) {
        const reason = el("textarea", { class: "refuse-reason", rows: "2", maxlength: "500",
          placeholder: tr("sign.refuse.reason", "拒签理由 / why you refuse to sign") });
        const refuse = el("button", { class: "refuse", onclick: async () => {
          if (!reason.value.trim()) {
            say(tr("sign.refuse.need_reason", "请写明拒签理由 / please give a reason")); return;
          }
          refuse.disabled = true;
          try {
            await call("POST", `/api/party/documents/${d.id}/refusals`,
                       { field: mine[0].field, reason: reason.value.trim() });
            say(tr("sign.refuse.done", "已记录拒绝签名 / your refusal is recorded"));
            list.dataset.seen = "";
          } catch (e) { say(e.message); refuse.disabled = false; }
          showDocuments();
        } }, tr("sign.refuse", "拒绝签名 / refuse to sign"));
        item.append(el("div", { class: "refuse-box" }, reason, refuse));
      }
      for (const r of mine) {
        const p = pad();
        const button = el("button", { class: "sign", onclick: async () => {
          if (!p.strokes.length) { say("请先在框内签名 / draw your signature first"); return; }
          button.disabled = true;
          try { await sign(d.id, r.field, p.strokes); say("已签名 / signed"); list.dataset.seen = ""; }
          catch (e) { say(e.message); button.disabled = false; }
          showDocuments();
        } }, `签名（第${r.page}页）/ sign page ${r.page}`);
        item.append(el("div", { class: "sign-box", "data-field": r.field },
          `${r.label} ${r.name}，第${r.page}页：`, p.canvas,
          el("button", { onclick: p.clear }, "重写 / clear"), button));
      }
      list.append(item);
    }
  }

  const tick = () => Promise.all([showRecord(), showDocuments()]).catch((e) => say(e.message));
  tick();
  setInterval(tick, 3000);
})();
