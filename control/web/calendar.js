// Appointments as a week of slots (China time, Monday first): the brigade's published slots,
// free or booked, through the appointments API (control/appointments/). With a case open the
// officer books a free slot for one of its parties, moves a booking to another free slot or
// cancels it; anyone may publish a slot or withdraw a free one. Every change is audited by the
// server with its reason.
"use strict";

(() => {
  const con = window.remotecaseConsole;
  if (!con) return;
  const $ = (id) => document.getElementById(id);
  const t = (key, params) => I18N.t(key, params);
  const CHINA = 8 * 3600 * 1000;  // UTC+8 all year (no daylight saving)
  const DAY = 86400 * 1000;

  let weekStart = mondayOf(new Date());  // a Date at Monday 00:00 China time
  let slots = [];
  let moving = null;                      // the appointment being moved, or null
  let visible = false;

  function chinaDay(date) {
    // "YYYY-MM-DD" of this instant in China
    return new Date(date.getTime() + CHINA).toISOString().slice(0, 10);
  }

  function mondayOf(date) {
    const day = new Date(`${chinaDay(date)}T00:00:00+08:00`);
    const weekday = (new Date(day.getTime() + CHINA).getUTCDay() + 6) % 7;  // Monday 0
    return new Date(day.getTime() - weekday * DAY);
  }

  const dayLabel = (d) => I18N.dateTime(d, { weekday: "short", year: undefined, month: "numeric", day: "numeric", hour: undefined, minute: undefined });

  async function load() {
    const { slots: all } = await con.api("GET", "/api/slots");
    slots = all;
    render();
  }

  function appointmentOf(slot) {
    if (!con.case || slot.case_id !== con.caseId) return null;
    return (con.case.appointments || []).find((a) => a.slot_id === slot.id && a.status === "booked") || null;
  }

  function partyName(partyId) {
    const p = con.case && con.case.parties.find((x) => x.id === partyId);
    return p ? p.name : String(partyId);
  }

  function reason(required) {
    const text = $("calendar-reason").value.trim();
    if (required && !text) { $("calendar-reason").focus(); throw new Error(t("calendar.need_reason")); }
    return text;
  }

  async function changed(key, params) {
    $("calendar-reason").value = "";
    moving = null;
    if (con.caseId) await con.reload();
    await load();
    con.notice(t(key, params));
  }

  function slotCard(slot) {
    const when = `${I18N.time(slot.starts_at)}–${I18N.time(slot.ends_at)}`;
    const booked = slot.appointment_id !== null && slot.appointment_id !== undefined;
    const mine = appointmentOf(slot);
    const card = con.el("li", { class: `slot ${booked ? "booked" : "free"}${mine ? " mine" : ""}`, "data-slot-id": String(slot.id) },
      con.el("strong", { text: when }), " ");
    if (!booked) {
      card.append(con.el("span", { class: "ok", text: t("calendar.free") }));
      const actions = con.el("div", { class: "row" });
      if (moving) {
        actions.append(con.button(t("calendar.move_here"), async () => {
          await con.api("POST", `/api/cases/${con.caseId}/appointments/${moving.id}/reschedule`, { slot_id: slot.id, reason: reason(true) });
          await changed("calendar.moved", { when: I18N.dateTime(slot.starts_at) });
        }, "primary"));
      } else if (con.case && con.case.status === "open" && con.case.parties.length) {
        actions.append(con.button(t("calendar.book"), async () => {
          const partyId = Number($("calendar-party").value);
          const body = { party_id: partyId, slot_id: slot.id };
          const why = reason(false);
          if (why) body.reason = why;
          await con.api("POST", `/api/cases/${con.caseId}/appointments`, body);
          await changed("calendar.booked", { name: partyName(partyId), when: I18N.dateTime(slot.starts_at) });
        }, "primary"));
      }
      actions.append(con.button(t("calendar.withdraw"), async () => {
        await con.api("POST", `/api/slots/${slot.id}/withdraw`, { reason: reason(true) });
        await changed("calendar.withdrawn", { when: I18N.dateTime(slot.starts_at) });
      }));
      card.append(actions);
    } else if (mine) {
      card.append(con.el("span", { class: "warn", text: t("calendar.booked_for", { name: partyName(mine.party_id) }) }));
      card.append(con.el("div", { class: "row" },
        con.button(t("calendar.move"), async () => { moving = mine; render(); }),
        con.button(t("calendar.cancel"), async () => {
          await con.api("POST", `/api/cases/${con.caseId}/appointments/${mine.id}/cancel`, { reason: reason(true) });
          await changed("calendar.cancelled", { name: partyName(mine.party_id) });
        }, "danger")));
    } else {
      card.append(con.el("span", { class: "muted", text: t("calendar.booked_other", { id: slot.case_id }) }));
    }
    return card;
  }

  function render() {
    const end = new Date(weekStart.getTime() + 7 * DAY);
    $("week-label").textContent = t("calendar.week", { from: I18N.date(weekStart), to: I18N.date(new Date(end.getTime() - DAY)) });
    const c = con.case;
    $("calendar-for").textContent = c ? t("calendar.for_case", { id: c.id, title: c.title }) : t("calendar.no_case");
    const choose = $("calendar-party");
    const picked = choose.value;
    choose.replaceChildren(...((c && c.parties) || []).map((p) => con.el("option", { value: String(p.id), text: p.name })));
    if (picked && [...choose.options].some((o) => o.value === picked)) choose.value = picked;
    $("calendar-party-label").hidden = !choose.options.length;
    $("calendar-moving").hidden = !moving;
    if (moving) {
      $("calendar-moving").replaceChildren(t("calendar.moving", { name: partyName(moving.party_id), when: I18N.dateTime(moving.starts_at) }), " ",
        con.button(t("action.cancel"), async () => { moving = null; render(); }));
    }
    const week = $("week");
    week.replaceChildren();
    for (let i = 0; i < 7; i++) {
      const day = new Date(weekStart.getTime() + i * DAY);
      const key = chinaDay(day);
      const today = key === chinaDay(new Date());
      const list = con.el("ul", { class: "list" });
      for (const slot of slots.filter((s) => chinaDay(new Date(s.starts_at)) === key)) list.append(slotCard(slot));
      if (!list.children.length) list.append(con.el("li", { class: "muted", text: t("calendar.no_slots") }));
      week.append(con.el("section", { class: `day${today ? " today" : ""}`, "data-day": key },
        con.el("h3", { text: dayLabel(day) + (today ? ` · ${t("calendar.today")}` : "") }), list));
    }
    if (!$("slot-date").value) $("slot-date").value = chinaDay(new Date(Date.now() + DAY));
  }

  $("week-prev").addEventListener("click", con.guard(async () => { weekStart = new Date(weekStart.getTime() - 7 * DAY); await load(); }));
  $("week-next").addEventListener("click", con.guard(async () => { weekStart = new Date(weekStart.getTime() + 7 * DAY); await load(); }));
  $("slot-form").addEventListener("submit", con.guard(async () => {
    const starts = new Date(`${$("slot-date").value}T${$("slot-time").value}:00+08:00`);
    if (Number.isNaN(starts.getTime())) throw new Error(t("calendar.bad_time"));
    if (starts.getTime() <= Date.now()) throw new Error(t("calendar.past"));
    const ends = new Date(starts.getTime() + Number($("slot-length").value) * 60000);
    await con.api("POST", "/api/slots", { starts_at: starts.toISOString(), ends_at: ends.toISOString() });
    weekStart = mondayOf(starts);
    await load();
    con.notice(t("calendar.added", { when: I18N.dateTime(starts) }));
  }));

  con.part({
    name: "calendar",
    // opened again: the case too is read again, so a booking the party made from its page
    // since shows as the case's (with its name), not as some other case's
    async view(name) {
      visible = name === "calendar";
      if (!visible) return;
      if (con.caseId) await con.reload();
      await load();
    },
    async caseOpened() { moving = null; if (visible) render(); },
    lang() { if (visible) render(); },
  });
})();
