// The case workspace's procedure panel: the case's deadlines (the next one highlighted, a
// warning before it), the delivery of each document to each party (after the party's signed
// 送达地址确认书; sent, opened, acknowledged, refused or failed; the receipt; post and public notice
// when electronic delivery failed), the review requests with their outcome, and the penalty
// procedure's steps with what the server refuses and why. For an accident case, the end of
// its investigation (调查取证结束), recorded once and corrected with a reason: the ordinary
// determination's 10 working days count from it. Everything through the HTTP API
// (docs/delivery.md); texts from /static/i18n/<lang>/procedure.json.
"use strict";

(() => {
  const con = window.remotecaseConsole;
  if (!con) return;
  const $ = (id) => document.getElementById(id);
  const t = (key, params) => I18N.t(key, params);
  const el = (...args) => con.el(...args);
  // documents that are not themselves delivered (docs/delivery.md: receipts and consents)
  const NOT_DELIVERED = new Set(["delivery_receipt", "delivery_consent"]);
  const STEPS = ["statement", "waiver", "hearing_requested", "hearing_held", "payment"];
  const OUTCOMES = ["upheld", "reinvestigate", "not_accepted"];
  let data = null;  // what the panel last read for the open case
  let shown = "";   // ... and rendered (a poll that brings nothing new leaves the forms alone)
  let busy = false;

  // "2026-10-09" as a Beijing date in the page's language
  const day = (iso) => (iso ? I18N.date(`${iso}T12:00:00+08:00`) : "");
  const kindName = (kind) => (I18N.has(`proc.kind.${kind}`) ? t(`proc.kind.${kind}`) : kind);
  const partyName = (id) => {
    const p = ((con.case && con.case.parties) || []).find((x) => x.id === id);
    return p ? p.name : `#${id}`;
  };
  // a server text written "中文 / English": the page's language's half
  const words = (text) => {
    const at = String(text || "").indexOf(" / ");
    if (at < 0) return String(text || "");
    return I18N.lang === "zh-CN" ? text.slice(0, at) : text.slice(at + 3);
  };
  // the server's refusal in words: the page's own text for its code, else the server's message
  const refusal = (err) => words((err && err.body && err.body.message && !I18N.has(`error.${err.body.error}`)
    ? err.body.message : err && err.message) || t("error.unknown"));
  const say = (text, good) => {
    const box = $("proc-message");
    box.textContent = text || "";
    box.className = good ? "ok" : "warn";
  };
  const act = (fn) => async (e) => {
    if (e && e.preventDefault) e.preventDefault();
    say("");
    try { await fn(e); } catch (err) { say(refusal(err)); }
    if (document.activeElement) document.activeElement.blur();
    await refresh(true);
  };

  function mount() {
    const slot = $("procedure");
    if (!slot || slot.dataset.built) return;
    slot.dataset.built = "1";
    slot.append(
      el("p", { id: "proc-message", role: "status" }),
      el("h4", { "data-i18n": "proc.deadlines" }),
      el("p", { id: "proc-next", class: "muted" }),
      el("div", { id: "proc-investigation" }),
      el("ul", { id: "proc-deadlines", class: "list" }),
      el("h4", { "data-i18n": "proc.deliveries" }),
      el("ul", { id: "proc-deliveries", class: "list" }),
      el("h4", { "data-i18n": "proc.reviews" }),
      el("ul", { id: "proc-reviews", class: "list" }),
      el("h4", { "data-i18n": "proc.penalty" }),
      el("div", { id: "proc-penalty" }));
    I18N.apply(slot);
  }

  async function load() {
    const id = con.caseId;
    const base = `/api/cases/${id}`;
    const [deadlines, deliveries, documents, reviews, penalty] = await Promise.all([
      con.api("GET", `${base}/deadlines`).catch((err) => ({ error: refusal(err) })),
      con.api("GET", `${base}/deliveries`),
      con.api("GET", `${base}/documents`),
      con.api("GET", `${base}/reviews`),
      con.api("GET", `${base}/penalty`).catch((err) => ({ error: refusal(err) })),
    ]);
    return { id, deadlines, deliveries: deliveries.deliveries, documents: documents.documents,
             reviews: reviews.reviews, penalty };
  }

  async function refresh(force) {
    if (!con.caseId || !con.token || busy) return;
    mount();
    busy = true;
    try { data = await load(); } catch (err) { say(refusal(err)); return; } finally { busy = false; }
    if (data.id !== con.caseId) return;
    const seen = JSON.stringify(data);
    // nothing new, or the officer is typing in one of the panel's forms: leave it as it is
    const typing = document.activeElement && $("procedure").contains(document.activeElement) &&
      ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName);
    if (seen === shown || (typing && !force)) return;
    render();
  }

  function render() {
    if (!data || !$("procedure")) return;
    shown = JSON.stringify(data);
    renderDeadlines();
    renderInvestigation();
    renderDeliveries();
    renderReviews();
    renderPenalty();
  }

  // -- deadlines ---------------------------------------------------------------------------
  function renderDeadlines() {
    const list = $("proc-deadlines");
    list.replaceChildren();
    const d = data.deadlines;
    if (d.error) { $("proc-next").textContent = d.error; return; }
    const next = d.next;
    $("proc-next").textContent = next
      ? t("proc.next", { name: limitName(next), due: day(next.due), today: day(d.today) })
      : t("proc.next.none", { today: day(d.today) });
    for (const item of d.deadlines) {
      const isNext = next && item.limit === next.limit && item.due === next.due &&
        item.document === next.document && item.party === next.party;
      const li = el("li", { class: ["deadline", `status-${item.status}`, isNext ? "next" : "",
                                    item.warn ? "warn" : ""].filter(Boolean).join(" "),
                            "data-limit": item.limit, "data-status": item.status },
        el("strong", { text: limitName(item) }), " ",
        el("span", { class: "badge", text: t(`proc.status.${item.status}`) }), " ",
        el("span", { text: t("proc.due", { due: day(item.due), start: day(item.start),
          days: t(item.unit === "working" ? "proc.days.working" : "proc.days.calendar", { n: item.days }) }) }),
        el("div", { class: "muted", text: [
          item.number ? t("proc.about.document", { number: item.number }) : "",
          item.party ? t("proc.about.party", { name: partyName(item.party) }) : "",
          t(item.who === "party" ? "proc.who.party" : "proc.who.department"),
          item.basis].filter(Boolean).join(" · ") }));
      if (isNext) li.prepend(el("span", { class: "badge next-badge", text: t("proc.next.badge") }), " ");
      if (item.warn) li.append(el("div", { class: "warn", role: "note", text: t("proc.warn", { due: day(item.due) }) }));
      list.append(li);
    }
    if (!d.deadlines.length) list.append(el("li", { class: "muted", text: t("proc.deadlines.none") }));
  }

  // -- the investigation's end (accident cases) -------------------------------------------
  function renderInvestigation() {
    const box = $("proc-investigation");
    box.replaceChildren();
    const d = data.deadlines;
    if (d.error || !con.case || con.case.kind !== "accident") return;
    const row = d.investigation;
    const opened = con.case.created_at ? String(con.case.created_at) : "";
    const today = d.today || "";
    const pick = el("input", { type: "date", value: row ? row.done_on : today, max: today,
                               required: true, class: "investigation-day" });
    if (opened) pick.min = minDay(opened);
    const reason = el("input", { maxLength: 500, required: true, class: "investigation-reason" });
    const form = el("form", { class: "stack investigation", "data-recorded": row ? "1" : "0" },
      el("p", { class: row ? "ok" : "muted", text: row
        ? t("proc.investigation.recorded", { day: day(row.done_on), revision: row.revision })
        : t("proc.investigation.none") }),
      el("label", {}, el("span", { text: t("proc.investigation.day") }), pick));
    if (row) form.append(el("label", {}, el("span", { text: t("proc.investigation.reason") }), reason));
    form.append(el("button", { type: "submit",
      text: t(row ? "proc.investigation.correct" : "proc.investigation.submit") }));
    form.addEventListener("submit", act(async () => {
      const path = `/api/cases/${data.id}/investigation`;
      const after = row
        ? await con.api("PUT", path, { day: pick.value, reason: reason.value.trim() })
        : await con.api("POST", path, { day: pick.value });
      say(t(row ? "proc.investigation.corrected" : "proc.investigation.done",
            { day: day(after.done_on) }), true);
    }));
    box.append(el("h4", { text: t("proc.investigation") }), form);
  }

  // the Beijing date a stored UTC time falls on, for the date input's minimum
  function minDay(iso) {
    const at = new Date(String(iso));  // stored with its offset (now_iso)
    if (Number.isNaN(at.getTime())) return "";
    return new Date(at.getTime() + 8 * 3600 * 1000).toISOString().slice(0, 10);
  }

  function limitName(item) {
    return I18N.has(`proc.limit.${item.limit}`) ? t(`proc.limit.${item.limit}`) : item.name;
  }

  // -- deliveries --------------------------------------------------------------------------
  function deliveryStatus(row) {
    if (row.refused_at) return "refused";
    if (row.acknowledged_at) return "acknowledged";
    if (row.opened_at) return "opened";
    return row.status;  // sent, failed, sending
  }

  // the party's signed consent: a 送达地址确认书 whose party box is signed by the party
  function consentOf(partyId) {
    let unsigned = null;
    for (const doc of data.documents) {
      if (doc.kind !== "delivery_consent") continue;
      const box = (doc.required || []).find((r) => r.role === "party" && r.signer_id === `p${partyId}`);
      if (!box) continue;
      if ((doc.signatures || []).some((s) => s.field === box.field)) return { signed: doc };
      const refused = (doc.refusals || []).some((r) => r.signer_id === box.signer_id) || Boolean(box.refused);
      unsigned = unsigned || { unsigned: doc, refused };
    }
    return unsigned || {};
  }

  async function pdf(documentId) {
    const blob = await con.api("GET", `/api/cases/${data.id}/documents/${documentId}/pdf`);
    window.open(URL.createObjectURL(blob), "_blank", "noopener");
  }

  function renderDeliveries() {
    const list = $("proc-deliveries");
    list.replaceChildren();
    const docs = data.documents.filter((d) => !NOT_DELIVERED.has(d.kind));
    const parties = (con.case && con.case.parties) || [];
    for (const party of parties) {
      const consent = consentOf(party.id);
      const li = el("li", { class: "party-deliveries", "data-party-id": String(party.id) },
        el("strong", { text: party.name }), " ");
      if (consent.signed) {
        li.append(el("span", { class: "ok", text: t("proc.consent.signed", { number: consent.signed.number }) }));
      } else {
        li.append(el("div", { class: "warn consent-missing", role: "note", text: t(
          consent.unsigned ? (consent.refused ? "proc.consent.refused" : "proc.consent.unsigned") : "proc.consent.none",
          { number: consent.unsigned ? consent.unsigned.number : "" }) }));
      }
      const rows = el("ul", { class: "list" });
      for (const doc of docs) rows.append(documentRow(doc, party, consent));
      if (!docs.length) rows.append(el("li", { class: "muted", text: t("proc.documents.none") }));
      li.append(rows);
      list.append(li);
    }
    if (!parties.length) list.append(el("li", { class: "muted", text: t("proc.parties.none") }));
  }

  function documentRow(doc, party, consent) {
    const made = data.deliveries.filter((d) => d.document_id === doc.id && d.party_id === party.id);
    const li = el("li", { class: "delivery-doc", "data-document": String(doc.id) },
      el("span", { text: t("proc.document", { kind: kindName(doc.kind), number: doc.number }) }), " ");
    for (const row of made) li.append(deliveryBox(row));
    const last = made[made.length - 1];
    // one more electronic delivery only when none is under way or done
    if (!last || (last.status === "failed" && !last.fallbacks.length)) {
      const send = con.button(t(last ? "proc.deliver.again" : "proc.deliver"), act(async () => {
        const row = await con.api("POST", `/api/cases/${data.id}/deliveries`,
                                  { document_id: doc.id, party_id: party.id });
        say(row.status === "sent" ? t("proc.deliver.sent", { address: row.address })
          : t("proc.deliver.failed", { failure: words(row.failure) }), row.status === "sent");
      }), "deliver");
      if (!consent.signed) send.title = t("proc.deliver.needs_consent");
      li.append(send);
    }
    return li;
  }

  function deliveryBox(row) {
    const status = deliveryStatus(row);
    const box = el("div", { class: `delivery status-${status}`, "data-delivery": String(row.id), "data-status": status },
      el("span", { class: "badge", text: t(`proc.delivery.${status}`) }), " ",
      el("span", { class: "muted", text: t("proc.delivery.via", { channel: t(`proc.channel.${row.channel}`), address: row.address }) }));
    const times = [
      row.sent_at && t("proc.time.sent", { when: I18N.dateTime(row.sent_at) }),
      row.opened_at && t("proc.time.opened", { when: I18N.dateTime(row.opened_at) }),
      row.acknowledged_at && t("proc.time.acknowledged", { when: I18N.dateTime(row.acknowledged_at) }),
      row.refused_at && t("proc.time.refused", { when: I18N.dateTime(row.refused_at), reason: row.refusal }),
      row.failure && t("proc.time.failed", { failure: words(row.failure) }),
      row.delivered_on && t("proc.delivered_on", { day: day(row.delivered_on) }),
    ].filter(Boolean);
    box.append(el("div", { class: "muted", text: times.join(" · ") }));
    if (row.receipt_id) {
      box.append(con.button(t("proc.receipt"), async () => pdf(row.receipt_id), "receipt"));
    }
    for (const f of row.fallbacks || []) {
      box.append(el("div", { class: "fallback-done", "data-action": f.action, text: t(`proc.fallback.done.${f.action}`, {
        reference: f.reference, day: day(f.done_on), ends: day(f.notice_ends), note: f.note || "" }) }));
    }
    if (row.fallback && row.fallback.needed) {
      if (row.fallback.next) box.append(fallbackForm(row, row.fallback.next));
      else box.append(el("div", { class: "ok", text: t("proc.fallback.complete", { day: day(row.delivered_on) }) }));
    }
    return box;
  }

  function fallbackForm(row, action) {
    const today = data.deadlines && data.deadlines.today ? data.deadlines.today : "";
    const reference = el("input", { required: true, maxLength: 200, class: "fallback-reference" });
    const done = el("input", { type: "date", value: today, max: today, class: "fallback-day" });
    const note = el("input", { maxLength: 1000, class: "fallback-note" });
    const form = el("form", { class: "stack fallback", "data-action": action },
      el("p", { class: "warn", text: t(`proc.fallback.need.${action}`) }),
      el("label", {}, el("span", { text: t(`proc.fallback.reference.${action}`) }), reference),
      el("label", {}, el("span", { text: t(`proc.fallback.day.${action}`) }), done),
      el("label", {}, el("span", { text: t("proc.fallback.note") }), note),
      el("button", { type: "submit", text: t(`proc.fallback.submit.${action}`) }));
    form.addEventListener("submit", act(async () => {
      const body = { action, reference: reference.value.trim() };
      if (done.value) body.done_on = done.value;
      if (note.value.trim()) body.note = note.value.trim();
      const after = await con.api("POST", `/api/cases/${data.id}/deliveries/${row.id}/fallback`, body);
      say(t("proc.fallback.recorded", { day: day(after.delivered_on) }), true);
    }));
    return form;
  }

  // -- reviews -----------------------------------------------------------------------------
  function renderReviews() {
    const list = $("proc-reviews");
    list.replaceChildren();
    for (const r of data.reviews) {
      const doc = data.documents.find((d) => d.id === r.document_id);
      const li = el("li", { class: "review", "data-review": String(r.id) },
        el("strong", { text: t("proc.review.item", { name: partyName(r.party_id),
          document: doc ? `${kindName(doc.kind)} ${doc.number}` : `#${r.document_id}` }) }),
        el("div", { class: "muted", text: t("proc.review.when", { when: I18N.dateTime(r.requested_at), closes: day(r.window_closes) }) }),
        el("p", { class: "reasons", text: t("proc.review.reasons", { reasons: r.reasons }) }));
      if (r.materials.length) {
        li.append(el("div", { class: "muted", text: t("proc.review.materials", { list: r.materials.join(t("list.sep")) }) }));
      }
      if (r.outcome) {
        li.append(el("div", { class: "ok outcome", text: t("proc.review.outcome", {
          outcome: t(`proc.outcome.${r.outcome}`), note: r.outcome_note, when: I18N.dateTime(r.decided_at), by: r.decided_by }) }));
      } else {
        li.append(outcomeForm(r));
      }
      list.append(li);
    }
    if (!data.reviews.length) list.append(el("li", { class: "muted", text: t("proc.reviews.none") }));
  }

  function outcomeForm(r) {
    const pick = el("select", { class: "outcome-pick" },
      ...OUTCOMES.map((o) => el("option", { value: o, text: t(`proc.outcome.${o}`) })));
    const note = el("textarea", { rows: 2, maxLength: 5000, required: true, class: "outcome-note" });
    const form = el("form", { class: "stack" },
      el("label", {}, el("span", { text: t("proc.review.outcome.pick") }), pick),
      el("label", {}, el("span", { text: t("proc.review.outcome.note") }), note),
      el("button", { type: "submit", text: t("proc.review.outcome.submit") }));
    form.addEventListener("submit", act(async () => {
      await con.api("POST", `/api/cases/${data.id}/reviews/${r.id}/outcome`, { outcome: pick.value, note: note.value.trim() });
      say(t("proc.review.outcome.done"), true);
    }));
    return form;
  }

  // -- the penalty procedure ---------------------------------------------------------------
  function renderPenalty() {
    const box = $("proc-penalty");
    box.replaceChildren();
    const p = data.penalty;
    if (p.error) { box.append(el("p", { class: "warn", text: p.error })); return; }
    const n = p.notice;
    if (!n) {
      box.append(el("p", { class: "muted", text: t("proc.penalty.no_notice") }));
    } else {
      box.append(el("p", { text: t("proc.penalty.notice", { number: n.number, day: day(n.notified_on),
        amount: n.amount === null ? t("proc.penalty.amount.none") : t("proc.penalty.amount", { amount: n.amount }) }) }));
      box.append(el("p", { class: "muted", text: t("proc.penalty.statement_closes", { day: day(n.statement_closes) }) }));
      box.append(el("p", { class: n.hearing_offered ? "" : "muted", text: n.hearing_offered
        ? t("proc.penalty.hearing_offered", { day: day(n.hearing_closes) }) : t("proc.penalty.hearing_not_offered") }));
      if (n.waived.length) {
        box.append(el("p", { text: t("proc.penalty.waived", { rights: n.waived.map((w) => t(`proc.right.${w}`)).join(t("list.sep")) }) }));
      }
    }
    const steps = el("ul", { class: "list penalty-steps" });
    for (const s of p.steps) {
      const detail = s.detail.reference || s.detail.text || "";
      steps.append(el("li", { "data-step": s.step }, el("strong", { text: t(`proc.step.${s.step}`) }),
        s.detail.right ? ` (${t(`proc.right.${s.detail.right}`)})` : "", " ",
        el("span", { class: "muted", text: t("proc.step.when", { when: I18N.dateTime(s.recorded_at), by: s.recorded_by }) }),
        detail ? el("div", { text: detail }) : null));
    }
    if (p.steps.length) box.append(steps);
    if (p.decision) {
      box.append(el("p", { class: "ok", text: t("proc.penalty.decision", { number: p.decision.number }) }));
    } else if (n) {  // without a notice the line above says what is missing
      box.append(el("p", { id: "proc-decision", class: p.decision_allowed ? "ok" : "warn", text: p.decision_allowed
        ? t("proc.penalty.decision_allowed") : t("proc.penalty.decision_refused", { why: words(p.refusal.message) }) }));
    }
    if (p.payment) box.append(el("p", { class: "ok", text: t("proc.penalty.paid", { reference: p.payment.detail.reference }) }));
    if (n) box.append(stepForm(n));
  }

  function stepForm(notice) {
    const offered = STEPS.filter((s) => notice.hearing_offered || !s.startsWith("hearing"));
    const step = el("select", { class: "step-pick" }, ...offered.map((s) => el("option", { value: s, text: t(`proc.step.${s}`) })));
    const right = el("select", { class: "step-right" },
      ...["statement", "hearing"].filter((r) => notice.hearing_offered || r === "statement")
        .map((r) => el("option", { value: r, text: t(`proc.right.${r}`) })));
    const text = el("textarea", { rows: 2, maxLength: 5000, class: "step-text" });
    const reference = el("input", { maxLength: 200, class: "step-reference" });
    const rightLabel = el("label", {}, el("span", { text: t("proc.step.right") }), right);
    const textLabel = el("label", {}, el("span", { text: t("proc.step.text") }), text);
    const refLabel = el("label", {}, el("span", { text: t("proc.step.reference") }), reference);
    const shown = () => {
      rightLabel.hidden = step.value !== "waiver";
      refLabel.hidden = step.value !== "payment";
      textLabel.hidden = step.value === "payment";
    };
    step.addEventListener("change", shown);
    const form = el("form", { class: "stack penalty-step" },
      el("label", {}, el("span", { text: t("proc.step.pick") }), step), rightLabel, textLabel, refLabel,
      el("button", { type: "submit", text: t("proc.step.submit") }));
    shown();
    form.addEventListener("submit", act(async () => {
      const body = { step: step.value };
      if (step.value === "payment") body.reference = reference.value.trim();
      else if (text.value.trim()) body.text = text.value.trim();
      if (step.value === "waiver") body.right = right.value;
      await con.api("POST", `/api/cases/${data.id}/penalty/steps`, body);
      say(t("proc.step.done", { step: t(`proc.step.${step.value}`) }), true);
    }));
    return form;
  }

  con.part({
    name: "procedure",
    caseOpened: async () => { data = null; shown = ""; await refresh(true); },
    event: (ev) => {
      if (!ev || typeof ev.type !== "string") return;
      if (/^(delivery|review|penalty|document|case\.investigation)/.test(ev.type)) refresh();
    },
    lang: () => { const slot = $("procedure"); if (slot) I18N.apply(slot); render(); },
  });
  I18N.use("procedure").then(() => {
    const slot = $("procedure");
    if (slot) I18N.apply(slot);
    render();
  });
  // the party's steps (opened, acknowledged, a review asked) arrive without an officer's click
  setInterval(() => { if (con.caseId && !document.hidden) refresh(); }, 5000);
})();
