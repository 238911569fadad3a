// The party page's view of its compensation mediation (docs/mediation.md): the draft agreement
// as the officer writes it, read again whenever the call says a step happened (a signalling
// message {"type": "mediation"}, heard as a "remotecase:message" window event from client.js).
// Read only: the agreement itself is read and signed with the page's documents (sign.js).
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const token = params.get("invite") || params.get("token");
  if (!token) return;
  const t = (key, p) => I18N.t(key, p);
  const device = () => {
    try {
      const secret = localStorage.getItem("remotecase.device");
      return secret ? { "X-Remotecase-Device": secret } : {};
    } catch (err) { return {}; }
  };
  const el = (tag, text, attrs = {}) => {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  };
  // the page's mount point (index.html, above the papers to sign), else a section of its own
  let box = document.getElementById("party-mediation");
  if (!box) {
    box = el("section", undefined, { id: "party-mediation", class: "card", hidden: "", "aria-live": "polite" });
    document.body.append(box);
  }

  let asked = 0;  // the latest read: an older answer arriving after a newer one is dropped
  async function load() {
    const mine = ++asked;
    const headers = I18N.headers({ Authorization: `Bearer ${token}`, ...device() });
    const response = await fetch("/api/party/mediation", { headers });
    if (mine !== asked) return;
    if (!response.ok) { box.hidden = true; return; }  // no mediation in this case (404)
    const m = await response.json();
    if (mine !== asked) return;
    box.replaceChildren(el("h2", t("mediation.party.heading")));
    box.append(el("p", t(`mediation.status.${m.status}`), { class: "muted" }));
    if (!m.draft) {
      box.append(el("p", t("mediation.party.none")));
    } else {
      const text = m.draft_text;
      const heading = m.status === "open" ? "mediation.party.draft" : "mediation.party.final";
      box.append(el("h3", t(heading, { n: m.draft.revision })));
      for (const [key, value] of [["losses", text.losses], ["items", text.items],
        ["shares", text.shares], ["payment", text.payment]]) {
        box.append(el("h4", t(`mediation.party.${key}`)), el("p", value));
      }
    }
    if (m.status === "effective") box.append(el("p", t("mediation.party.effective"), { class: "ok" }));
    else if (m.status === "open" && m.agreement_id) box.append(el("p", t("mediation.party.sign")));
    box.hidden = false;
  }

  // a step's message, and entering the call (again): what was said while the page was not in
  // the call (before joining, while reconnecting) reached it through no message
  const READ_ON = ["mediation", "joined", "resumed"];
  window.addEventListener("remotecase:message", (e) => {
    if (e.detail && READ_ON.includes(e.detail.type)) load().catch(() => {});
  });
  // the words first (the catalog loads with the page's: until then a text would be its key)
  const start = () => I18N.use("mediation").then(() => load()).catch(() => {});
  document.addEventListener("remotecase:lang", () => { load().catch(() => {}); });
  if (document.readyState === "complete") start(); else window.addEventListener("load", start);
})();
