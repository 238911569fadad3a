// The officer console's compensation mediation (损害赔偿调解, docs/mediation.md): open one on
// the case's mediation session, add agents and insurers to the sides, check a power of
// attorney, write the draft agreement (each save a revision everyone in the call sees), generate
// the 调解书 and see who signed, record a walk-out, terminate. Everything goes through the HTTP
// API; texts from the "mediation" catalog (control/web/i18n/<lang>/mediation.json).
"use strict";

(() => {
  const con = window.remotecaseConsole;
  if (!con) return;
  const $ = (id) => document.getElementById(id);
  const t = (key, params) => I18N.t(key, params);
  const el = (...args) => con.el(...args);
  let mediation = null;   // the case's latest mediation
  let agreement = null;   // its agreement document, with its state
  let materials = [];
  let items = [];         // the draft's items being edited
  let edits = {};         // the losses and shares typed and not yet saved (an item added or
                          // removed draws the form again: they are kept)

  const base = () => `/api/cases/${con.caseId}/mediations`;
  const today = () => new Date(Date.now() + 8 * 3600e3).toISOString().slice(0, 10);  // China

  function field(labelKey, input) {
    return el("label", {}, el("span", { text: t(labelKey) }), " ", input);
  }
  function input(attrs) { return el("input", attrs); }
  function select(options, value) {
    const s = el("select", {});
    for (const [v, text] of options) s.append(el("option", { value: String(v), text, selected: String(v) === String(value) }));
    return s;
  }

  async function load() {
    mediation = null; agreement = null;
    if (!con.caseId) { render(); return; }
    const { mediations } = await con.api("GET", base());
    mediation = mediations.length ? mediations[mediations.length - 1] : null;
    const doc = mediation && (mediation.agreement_id || null);
    if (doc) agreement = await con.api("GET", `/api/cases/${con.caseId}/documents/${doc}`);
    try {
      materials = (await con.api("GET", `/api/cases/${con.caseId}/materials`)).materials;
    } catch (err) { materials = []; }
    items = mediation && mediation.draft ? mediation.draft.draft.items.map((i) => ({ ...i })) : [];
    edits = {};
    render();
  }

  const kindText = (k) => t(`mediation.kind.${k}`);
  const statusText = (s) => t(`mediation.status.${s}`);
  const people = () => (mediation ? mediation.participants : []);
  const sides = () => people().filter((p) => p.kind === "party");
  const yuan = (fen) => `${Math.floor(fen / 100)}.${String(fen % 100).padStart(2, "0")}`;

  function renderOpen(box) {
    const parties = (con.case && con.case.parties || []).filter((p) => p.role !== "agent" && p.role !== "insurer");
    const checks = parties.map((p) => {
      const c = input({ type: "checkbox", value: String(p.id), checked: true });
      return el("label", { class: "row" }, c, " ", p.name);
    });
    const notified = input({ type: "date", required: true, max: today() });
    const received = input({ type: "date", max: today() });
    const applied = input({ type: "date", value: today(), max: today() });
    const form = el("form", { class: "stack", id: "mediation-open" },
      el("p", { class: "muted", text: t("mediation.open.help") }),
      el("fieldset", {}, el("legend", { text: t("mediation.sides") }), ...checks),
      field("mediation.notified_on", notified),
      field("mediation.received_on", received),
      field("mediation.applied_on", applied),
      el("button", { type: "submit", class: "primary", text: t("mediation.open") }));
    form.addEventListener("submit", con.guard(async (e) => {
      e.preventDefault();
      if (!con.session) throw new Error(t("mediation.need_session"));
      const body = {
        session_id: con.session.id,
        sides: checks.map((l) => l.querySelector("input")).filter((c) => c.checked).map((c) => Number(c.value)),
        notified_on: notified.value, applied_on: applied.value || undefined,
      };
      if (received.value) body.determination_received_on = received.value;
      await con.api("POST", base(), body);
      await load();
    }));
    box.append(form);
  }

  function renderPeople(box) {
    const open = mediation.status === "open";
    const list = el("ul", { class: "list", id: "mediation-people" });
    for (const p of people()) {
      const side = sides().find((s) => s.side === p.side);
      const li = el("li", { "data-participant": String(p.id) },
        el("strong", { text: p.name }), " ",
        el("span", { class: "muted", text: `${kindText(p.kind)} · ${t("mediation.side_of", { name: side ? side.name : "" })}` }));
      if (p.kind === "agent") {
        const cls = p.attorney_status === "accepted" ? "ok" : p.attorney_status === "rejected" ? "warn" : "";
        li.append(" ", el("span", { class: cls, text: t(`mediation.attorney.${p.attorney_status}`) }));
        if (p.attorney_reason) li.append(" ", el("span", { class: "muted", text: p.attorney_reason }));
        if (open && p.attorney_status !== "accepted") {
          li.append(el("div", { class: "row" },
            con.button(t("mediation.attorney.accept"), async () => {
              await con.api("POST", `${base()}/${mediation.id}/participants/${p.id}/attorney`, { decision: "accepted" });
              await load();
            }),
            con.button(t("mediation.attorney.reject"), async () => {
              const reason = prompt(t("mediation.attorney.reason"));
              if (!reason) return;
              await con.api("POST", `${base()}/${mediation.id}/participants/${p.id}/attorney`, { decision: "rejected", reason });
              await load();
            })));
        }
      }
      if (p.left_at) li.append(" ", el("span", { class: "warn", text: t("mediation.left") }));
      else if (open) {
        li.append(" ", con.button(t("mediation.walkout"), async () => {
          const note = prompt(t("mediation.walkout.note"));
          if (!note) return;
          await con.api("POST", `${base()}/${mediation.id}/participants/${p.id}/walkout`, { note });
          await load();
        }, "danger"));
      }
      list.append(li);
    }
    box.append(el("h4", { text: t("mediation.people") }), list);
    if (!open) return;
    const side = select(sides().map((s) => [s.side, s.name]));
    const kind = select([["agent", kindText("agent")], ["insurer", kindText("insurer")]]);
    const name = input({ maxLength: 100 });
    const phone = input({ maxLength: 30, inputMode: "tel" });
    const poa = select([["", t("mediation.attorney.pick")], ...materials.map((m) => [m.id, m.name])]);
    const form = el("form", { class: "stack", id: "mediation-add" },
      field("mediation.side", side), field("mediation.kind", kind), field("mediation.name", name),
      field("mediation.phone", phone), field("mediation.attorney.material", poa),
      el("button", { type: "submit", text: t("mediation.add") }));
    form.addEventListener("submit", con.guard(async (e) => {
      e.preventDefault();
      const body = { side: Number(side.value), kind: kind.value, name: name.value, phone: phone.value };
      if (kind.value === "agent") body.attorney_material = poa.value;
      await con.api("POST", `${base()}/${mediation.id}/participants`, body);
      await load();
    }));
    box.append(form);
  }

  function renderDraft(box) {
    const open = mediation.status === "open";
    const current = mediation.draft;
    box.append(el("h4", { text: t("mediation.draft") }),
      el("p", { class: "muted", text: current ? t("mediation.revision", { n: current.revision }) : t("mediation.no_draft") }));
    if (!open) return;
    const payers = people().filter((p) => p.kind !== "agent" && !p.left_at).map((p) => [p.id, p.name]);
    const payees = sides().filter((p) => !p.left_at).map((p) => [p.id, p.name]);
    const losses = el("textarea", { rows: 2, maxLength: 2000,
      value: edits.losses ?? (current ? current.draft.losses : "") });
    losses.addEventListener("input", () => { edits.losses = losses.value; });
    const rows = el("div", { class: "stack" });
    if (!items.length) items.push({ what: "", amount_fen: 0, payer: payers[0] && payers[0][0], payee: payees[1] && payees[1][0], method: "", due: "" });
    items.forEach((item, n) => {
      const what = input({ value: item.what, maxLength: 200, required: true });
      const amount = input({ value: item.amount_fen ? yuan(item.amount_fen) : "", inputMode: "decimal", pattern: "[0-9]+(\\.[0-9]{1,2})?", required: true });
      const payer = select(payers, item.payer);
      const payee = select(payees, item.payee);
      const method = input({ value: item.method, maxLength: 200, required: true });
      const due = input({ type: "date", value: item.due, min: today(), required: true });
      const sync = () => Object.assign(item, { what: what.value, amount: amount.value, payer: Number(payer.value), payee: Number(payee.value), method: method.value, due: due.value });
      for (const i of [what, amount, payer, payee, method, due]) {
        i.addEventListener("input", sync);
        i.addEventListener("change", sync);
      }
      sync();
      rows.append(el("fieldset", { class: "stack" }, el("legend", { text: t("mediation.item", { n: n + 1 }) }),
        field("mediation.item.what", what), field("mediation.item.amount", amount),
        field("mediation.item.payer", payer), field("mediation.item.payee", payee),
        field("mediation.item.method", method), field("mediation.item.due", due),
        con.button(t("mediation.item.remove"), async () => { items.splice(n, 1); render(); })));
    });
    const shareInputs = sides().map((s) => {
      const found = current && current.draft.shares.find((x) => x.side === s.side);
      const typed = (edits.shares || {})[s.side];
      const share = input({ value: typed ?? (found ? found.percent : ""), inputMode: "decimal", required: true, size: 6 });
      share.addEventListener("input", () => { edits.shares = { ...(edits.shares || {}), [s.side]: share.value }; });
      return [s.side, share, s.name];
    });
    const form = el("form", { class: "stack", id: "mediation-draft" },
      field("mediation.losses", losses), rows,
      con.button(t("mediation.item.add"), async () => { items.push({ what: "", amount_fen: 0, payer: payers[0] && payers[0][0], payee: payees[1] && payees[1][0], method: "", due: "" }); render(); }),
      el("fieldset", {}, el("legend", { text: t("mediation.shares") }),
        ...shareInputs.map(([, i, name]) => el("label", { class: "row" }, el("span", { text: name }), " ", i, " %"))),
      el("button", { type: "submit", class: "primary", text: t("mediation.draft.save") }));
    form.addEventListener("submit", con.guard(async (e) => {
      e.preventDefault();
      const draft = {
        losses: losses.value,
        items: items.map(({ what, amount, payer, payee, method, due }) => ({ what, amount, payer, payee, method, due })),
        shares: shareInputs.map(([side, i]) => ({ side, percent: i.value.trim() })),
      };
      await con.api("POST", `${base()}/${mediation.id}/drafts`, { draft });
      con.notice(t("mediation.draft.saved"));
      await load();
    }));
    box.append(form);
  }

  function renderAgreement(box) {
    box.append(el("h4", { text: t("mediation.agreement") }));
    if (agreement) {
      const st = agreement.state;
      box.append(el("p", { id: "mediation-agreement-state", class: st.effective ? "ok" : "" },
        `${agreement.number} · ${st.effective ? t("mediation.agreement.effective") : t("mediation.agreement.missing", { names: st.missing.map((m) => m.name).join(t("list.sep")) })}`));
    }
    if (mediation.status !== "open" || !mediation.draft) return;
    const facts = el("textarea", { rows: 2, maxLength: 5000, required: true });
    const form = el("form", { class: "stack", id: "mediation-agreement" },
      field("mediation.facts", facts),
      el("button", { type: "submit", text: t("mediation.agreement.generate") }));
    form.addEventListener("submit", con.guard(async (e) => {
      e.preventDefault();
      await con.api("POST", `${base()}/${mediation.id}/agreement`, { facts: facts.value });
      await load();
    }));
    box.append(form);
  }

  function renderEnd(box) {
    if (mediation.status !== "open") {
      if (mediation.end_reason) box.append(el("p", { class: "warn", text: t("mediation.ended", { reason: mediation.end_reason }) }));
      return;
    }
    const reason = input({ maxLength: 500, required: true });
    const form = el("form", { class: "row", id: "mediation-terminate" },
      field("mediation.terminate.reason", reason),
      el("button", { type: "submit", class: "danger", text: t("mediation.terminate") }));
    form.addEventListener("submit", con.guard(async (e) => {
      e.preventDefault();
      await con.api("POST", `${base()}/${mediation.id}/terminate`, { reason: reason.value });
      await load();
    }));
    box.append(form);
  }

  function render() {
    const box = $("mediation");
    if (!box) return;
    box.replaceChildren();
    if (!con.case || con.case.kind !== "accident") { box.append(el("p", { class: "muted", text: t("mediation.accident_only") })); return; }
    if (!mediation || (mediation.status !== "open" && !mediation.id)) { renderOpen(box); return; }
    const l = mediation.limits;
    box.append(el("p", { id: "mediation-status" },
      el("strong", { text: statusText(mediation.status) }), " ",
      el("span", { class: mediation.overdue ? "warn" : "muted",
        text: t("mediation.limits", { closes: l.application_closes, start: l.earliest_start, by: l.concludes_by }) })));
    renderPeople(box);
    renderDraft(box);
    renderAgreement(box);
    renderEnd(box);
    if (mediation.status !== "open") {
      box.append(con.button(t("mediation.new"), async () => { mediation = null; const b = $("mediation"); b.replaceChildren(); renderOpen(b); }));
    }
  }

  con.part({
    name: "mediation",
    caseOpened: () => load(),
    event: (ev) => {
      if (typeof ev.type === "string" && (ev.type.startsWith("mediation.") || ev.type === "document.signed")) {
        load().catch(con.showError);
      }
    },
    lang: () => render(),
  });
})();
