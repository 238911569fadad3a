// The party page's own case papers: the documents delivered to the party (open = read the PDF,
// then acknowledge, or refuse with a reason), the receipt (电子送达凭证) once acknowledged, and
// asking for a review (复核) of a determination within its window, with reasons and the
// party's own materials (uploaded with the page's materials form). Through the party API with
// the link's token (docs/delivery.md); texts from /static/i18n/<lang>/party-case.json.
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const token = params.get("invite") || params.get("token");
  if (!token) return;  // the development page without a link: no case
  const $ = (id) => document.getElementById(id);
  const t = (key, p) => I18N.t(key, p);
  const day = (iso) => (iso ? I18N.date(`${iso}T12:00:00+08:00`) : "");
  const kindName = (kind) => (I18N.has(`pc.kind.${kind}`) ? t(`pc.kind.${kind}`) : kind);
  // a server text written "中文 / English": the page's language's half
  const words = (text) => {
    const at = String(text || "").indexOf(" / ");
    if (at < 0) return String(text || "");
    return I18N.lang === "zh-CN" ? text.slice(0, at) : text.slice(at + 3);
  };
  let seen = "";
  let last = null;

  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") node.textContent = v;
      else if (k === "onclick") node.addEventListener("click", v);
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  };

  // the device secret client.js keeps: a link the page redeemed answers only this device
  const device = () => {
    try {
      const secret = localStorage.getItem("remotecase.device");
      return secret ? { "X-Remotecase-Device": secret } : {};
    } catch (err) { return {}; }
  };

  class Refused extends Error {
    constructor(body) { super(words(I18N.error(body))); this.body = body; }
  }

  async function call(method, path, body) {
    const response = await fetch(path, {
      method,
      headers: I18N.headers({ Authorization: `Bearer ${token}`, ...device(),
                              ...(body ? { "Content-Type": "application/json" } : {}) }),
      body: body ? JSON.stringify(body) : undefined,
    });
    const type = response.headers.get("Content-Type") || "";
    const data = type.includes("json") ? await response.json() : await response.blob();
    if (!response.ok) throw new Refused(data instanceof Blob ? {} : data);
    return data;
  }

  const say = (text, good) => {
    const box = $("pc-message");
    box.textContent = text || "";
    box.className = good ? "banner ok" : "banner warn";
    box.hidden = !text;
  };
  const act = (fn) => async (e) => {
    if (e && e.preventDefault) e.preventDefault();
    const button = e && e.currentTarget instanceof HTMLButtonElement ? e.currentTarget : null;
    if (button) button.disabled = true;
    say("");
    try { await fn(e); } catch (err) {
      say(err instanceof TypeError ? t("pc.error.network") : err.message);
    } finally { if (button) button.disabled = false; }
    seen = "";
    await tick();
  };

  async function showPdf(documentId) {
    const blob = await call("GET", `/api/party/documents/${documentId}/pdf`);
    // a link clicked, not window.open: phones let it through as the person's own tap
    const link = el("a", { href: URL.createObjectURL(blob), target: "_blank", rel: "noopener" });
    document.body.append(link);
    link.click();
    link.remove();
  }

  function status(d) {
    if (d.refused_at) return "refused";
    if (d.acknowledged_at) return "acknowledged";
    if (d.opened_at) return "opened";
    return "new";
  }

  function deliveryItem(d, reviews, materials) {
    const state = status(d);
    const li = el("li", { class: `pc-delivery status-${state}`, "data-delivery": String(d.id), "data-status": state },
      el("strong", { text: t("pc.document", { kind: kindName(d.kind), number: d.document_number }) }),
      el("div", { class: "muted", text: t("pc.sent", { when: I18N.dateTime(d.sent_at) }) }),
      el("div", { class: "pc-state", text: t(`pc.state.${state}`, {
        opened: I18N.dateTime(d.opened_at), acknowledged: I18N.dateTime(d.acknowledged_at),
        refused: I18N.dateTime(d.refused_at) }) }));
    const buttons = el("div", { class: "pc-actions" });
    buttons.append(el("button", { type: "button", class: "primary open", onclick: act(async () => {
      await call("POST", `/api/party/deliveries/${d.id}/open`);
      await showPdf(d.document_id);
    }) }, t(d.opened_at ? "pc.open.again" : "pc.open")));
    if (state === "opened") {
      buttons.append(el("button", { type: "button", class: "primary acknowledge", onclick: act(async () => {
        await call("POST", `/api/party/deliveries/${d.id}/acknowledge`);
        say(t("pc.acknowledged"), true);
      }) }, t("pc.acknowledge")));
    }
    li.append(buttons);
    if (state === "new") li.append(el("p", { class: "muted", text: t("pc.open.first") }));
    if (state === "new" || state === "opened") {
      const reason = el("textarea", { class: "refuse-reason", rows: "2", maxlength: "500" });
      const box = el("details", { class: "pc-refuse" }, el("summary", { text: t("pc.refuse.open") }),
        el("label", {}, el("span", { text: t("pc.refuse.reason") }), reason),
        el("button", { type: "button", class: "danger refuse", onclick: act(async () => {
          if (!reason.value.trim()) throw new Error(t("pc.refuse.need_reason"));
          await call("POST", `/api/party/deliveries/${d.id}/refuse`, { reason: reason.value.trim() });
          say(t("pc.refused"), true);
        }) }, t("pc.refuse")));
      li.append(box);
    }
    if (d.receipt_id) {
      li.append(el("div", { class: "pc-receipt" },
        el("span", { text: t("pc.receipt", { when: I18N.dateTime(d.acknowledged_at) }) }), " ",
        el("button", { type: "button", class: "receipt", onclick: act(async () => showPdf(d.receipt_id)) }, t("pc.receipt.open"))));
    }
    if (d.review_closes !== undefined && d.review_closes !== null) li.append(reviewBox(d, reviews, materials));
    return li;
  }

  function reviewBox(d, reviews, materials) {
    const asked = reviews.find((r) => r.delivery_id === d.id);
    const box = el("div", { class: "pc-review" }, el("h3", { text: t("pc.review.heading") }));
    if (asked) {
      box.append(el("p", { class: "ok asked", text: t("pc.review.asked", { when: I18N.dateTime(asked.requested_at) }) }),
        el("p", { text: t("pc.review.reasons", { reasons: asked.reasons }) }));
      box.append(el("p", { class: "outcome", text: asked.outcome
        ? t("pc.review.outcome", { outcome: t(`pc.outcome.${asked.outcome}`), note: asked.outcome_note })
        : t("pc.review.pending") }));
      return box;
    }
    if (!d.review_open) {
      box.append(el("p", { class: "warn closed", text: t("pc.review.closed", { day: day(d.review_closes) }) }));
      return box;
    }
    box.append(el("p", { class: "window", text: t("pc.review.window", { day: day(d.review_closes) }) }));
    const reasons = el("textarea", { class: "review-reasons", rows: "4", maxlength: "5000" });
    const picks = el("fieldset", { class: "review-materials" }, el("legend", { text: t("pc.review.materials") }));
    for (const m of materials) {
      picks.append(el("label", { class: "check" }, el("input", { type: "checkbox", value: m.id }),
        el("span", { text: m.name || m.id })));
    }
    if (!materials.length) picks.append(el("p", { class: "muted", text: t("pc.review.materials.none") }));
    box.append(el("label", {}, el("span", { text: t("pc.review.reasons.label") }), reasons), picks,
      el("button", { type: "button", class: "primary ask-review", onclick: act(async () => {
        if (!reasons.value.trim()) throw new Error(t("pc.review.need_reasons"));
        const chosen = [...picks.querySelectorAll("input:checked")].map((i) => i.value);
        try {
          await call("POST", "/api/party/reviews", { delivery_id: d.id, reasons: reasons.value.trim(), materials: chosen });
        } catch (err) {
          if (err.body && err.body.error === "review_window_closed") {
            throw new Error(t("pc.review.refused", { delivered: day(err.body.delivered_on), closed: day(err.body.closed_on), why: words(err.body.message) }));
          }
          throw err;
        }
        say(t("pc.review.sent"), true);
      }) }, t("pc.review.ask")));
    return box;
  }

  async function tick() {
    let deliveries, reviews, materials;
    try {
      [deliveries, reviews, materials] = await Promise.all([
        call("GET", "/api/party/deliveries"), call("GET", "/api/party/reviews"),
        call("GET", "/api/party/materials").catch(() => ({ materials: [] }))]);
    } catch (err) { return; }  // not yet redeemed, or the link no longer valid: client.js says
    last = { deliveries: deliveries.deliveries, reviews: reviews.reviews, materials: materials.materials || [] };
    render();
  }

  function render(force) {
    if (!last) return;
    const section = $("party-case");
    const now = JSON.stringify(last);
    const typing = section.contains(document.activeElement) &&
      ["TEXTAREA", "INPUT"].includes(document.activeElement.tagName);
    if (!force && (now === seen || typing)) return;
    seen = now;
    section.hidden = !last.deliveries.length;
    const list = $("pc-deliveries");
    list.replaceChildren(...last.deliveries.map((d) => deliveryItem(d, last.reviews, last.materials)));
  }

  function mount() {
    const section = $("party-case");
    if (!section) return false;
    section.replaceChildren(el("h2", { text: t("pc.heading") }),
      el("p", { class: "muted", text: t("pc.intro") }),
      el("div", { id: "pc-message", role: "status", hidden: "" }),
      el("ul", { id: "pc-deliveries", class: "pc-list" }));
    return true;
  }

  document.addEventListener("remotecase:lang", () => { if (mount()) render(true); });
  I18N.use("party-case").then(() => {
    if (!mount()) return;
    tick();
    setInterval(() => { if (!document.hidden) tick(); }, 4000);
  });
})();
