// The officer's panel of an education session (远程宣教) in the console's call: the raised hands
// in order with "give the floor", who holds it with "take it back", viewers' questions (mark
// answered, answer for everyone), announcements, the quiz (define it, see each viewer's score)
// and the attendance flags (someone else in front of a camera). It shows itself only in an
// education room (the server's first "floor" message says it is one). Live state comes from
// call.js's socket as "remotecase:call-message" events; the officer's acts go through the HTTP
// API (so they are audited with the officer's login): POST .../floor, .../questions/{id}/answer,
// .../announcements, PUT .../quiz, GET .../live (docs/education.md). Viewers' texts are shown
// with textContent only. Its last part makes the attendance records and sends each company its
// own (POST .../attendance/records, .../records/send) and shows per company whether it went
// out, was opened and downloaded, or why not (GET .../records/sends).
"use strict";

(() => {
  const con = window.remotecaseConsole;
  const mount = document.getElementById("education-desk");
  if (!con || !mount) return;
  const t = (key, params) => I18N.t(key, params);
  const el = con.el;

  const desk = { room: null, holders: [], hands: [], messages: [], quiz: null, results: {}, flags: [], sends: [] };
  const path = (suffix) => `/api/cases/${con.caseId}/sessions/${con.session.id}${suffix}`;
  const nameOf = (pid) => (con.participants && con.participants[pid] && con.participants[pid].name) || pid;

  function act(label, fn, cls) {
    const b = el("button", { type: "button", text: label, class: cls || "" });
    b.addEventListener("click", con.guard(fn));
    return b;
  }

  async function load() {
    const live = await con.api("GET", path("/live"));
    desk.messages = live.messages || [];
    desk.quiz = live.quiz;
    desk.results = live.results || {};
    if (live.floor) { desk.holders = live.floor.holders; desk.hands = live.floor.hands; }
    desk.sends = (await con.api("GET", path("/attendance/records/sends"))).companies || [];
    render();
  }

  async function loadSends() {
    desk.sends = (await con.api("GET", path("/attendance/records/sends"))).companies || [];
    render("records");
  }

  // each company's record: made, then sent to the company's address, then opened and
  // downloaded through its link (or no address on the roster, or the provider's failure)
  function sendDetail(c) {
    const s = c.send;
    if (c.state === "no_address") return t("edu.desk.send.add_address");
    if (!s) return "";
    if (c.state === "failed") return t("edu.desk.send.why", { reason: s.failure });
    const times = [t("edu.desk.send.to", { address: s.address })];
    if (s.sent_at) times.push(t("edu.desk.send.sent_at", { time: I18N.dateTime(s.sent_at) }));
    if (s.opened_at) times.push(t("edu.desk.send.opened_at", { time: I18N.dateTime(s.opened_at) }));
    if (s.downloaded_at) times.push(t("edu.desk.send.downloaded_at", { time: I18N.dateTime(s.downloaded_at) }));
    if (s.superseded) times.push(t("edu.desk.send.superseded"));
    return times.join(t("edu.desk.send.separator"));
  }

  function renderRecords() {
    const list = el("ul", { class: "list", id: "edu-sends" }, ...desk.sends.map((c) => el("li", { "data-company": String(c.company_id), "data-state": c.state },
      el("strong", { text: `${c.company} ` }),
      el("span", { class: { downloaded: "ok", opened: "ok", sent: "ok", failed: "danger", no_address: "warn", expired: "warn" }[c.state] || "muted", text: t(`edu.desk.send.${c.state}`) }), " ",
      el("span", { class: "muted", text: sendDetail(c) }))));
    if (!desk.sends.length) list.append(el("li", { class: "muted", text: t("edu.desk.records.none") }));
    const buttons = el("div", { class: "row" },
      act(t("edu.desk.records.make"), async () => {
        const made = await con.api("POST", path("/attendance/records"), {});
        con.notice(t("edu.desk.records.made", { n: made.records.length }));
        await loadSends();
      }),
      act(t("edu.desk.records.send"), async () => {
        const sent = await con.api("POST", path("/attendance/records/send"), {});
        const n = sent.companies.filter((c) => c.state === "sent").length;
        con.notice(t("edu.desk.records.sent", { n, total: sent.companies.length }));
        await loadSends();
      }, "primary"),
      act(t("edu.desk.records.refresh"), loadSends));
    return [el("h4", { text: t("edu.desk.records") }), buttons, list];
  }

  function renderFloor() {
    const holders = el("ul", { class: "list", id: "edu-holders" }, ...desk.holders.map((h) => el("li", { "data-participant": h.participant },
      el("strong", { text: h.name }), " ",
      el("span", { class: "muted", text: h.until ? t("edu.desk.until", { time: I18N.time(h.until * 1000) }) : "" }), " ",
      act(t("edu.desk.take"), async () => { await con.api("POST", path("/floor"), { action: "take", participant: h.participant }); }, "danger"))));
    if (!desk.holders.length) holders.append(el("li", { class: "muted", text: t("edu.desk.nobody") }));
    const hands = el("ol", { class: "list", id: "edu-hands" }, ...desk.hands.map((h) => el("li", { "data-participant": h.participant },
      el("span", { text: `${h.name} ` }),
      el("span", { class: "muted", text: I18N.time(h.raised_at * 1000) }), " ",
      act(t("edu.desk.give"), async () => { await con.api("POST", path("/floor"), { action: "give", participant: h.participant }); }, "primary"))));
    if (!desk.hands.length) hands.append(el("li", { class: "muted", text: t("edu.desk.no_hands") }));
    return [el("h4", { text: t("edu.desk.floor") }), holders, el("h4", { text: t("edu.desk.hands", { n: desk.hands.length }) }), hands];
  }

  function renderQuestions() {
    const questions = desk.messages.filter((m) => m.kind === "question");
    const list = el("ul", { class: "list", id: "edu-questions" }, ...questions.map((q) => {
      const answer = el("input", { maxLength: 300, "data-keep": `answer-${q.id}` });
      answer.setAttribute("aria-label", t("edu.desk.answer.label"));
      answer.placeholder = t("edu.desk.answer.placeholder");
      const form = el("form", { class: "row" }, el("label", { class: "grow" }, answer),
        el("button", { type: "submit", text: q.answered_at ? t("edu.desk.answer.again") : t("edu.desk.answer.send") }));
      form.addEventListener("submit", con.guard(async () => {
        const text = answer.value.trim();
        await con.api("POST", path(`/questions/${q.id}/answer`), text ? { text } : {});
      }));
      return el("li", { "data-question": String(q.id) },
        el("strong", { text: t("text.said", { name: q.name }) }), el("span", { text: q.text }), " ",
        el("span", { class: q.answered_at ? "ok" : "warn", text: q.answered_at ? t("edu.desk.answered") : t("edu.desk.open") }),
        form);
    }));
    if (!questions.length) list.append(el("li", { class: "muted", text: t("edu.desk.no_questions") }));
    return [el("h4", { text: t("edu.desk.questions", { n: questions.filter((q) => !q.answered_at).length }) }), list];
  }

  function renderAnnounce() {
    const text = el("input", { maxLength: 300, required: true });
    text.setAttribute("aria-label", t("edu.desk.announce.label"));
    const announce = el("form", { class: "row", id: "edu-announce" }, el("label", { class: "grow" }, text),
      el("button", { type: "submit", text: t("edu.desk.announce.send") }));
    announce.addEventListener("submit", con.guard(async () => {
      await con.api("POST", path("/announcements"), { text: text.value.trim() });
      text.value = "";
    }));
    return [el("h4", { text: t("edu.desk.announce") }), announce];
  }

  // the quiz editor: one block per question (text, one choice a line, a leading * marks a right
  // choice, "multiple" for several right ones)
  function questionBlock(q) {
    const text = el("input", { maxLength: 200, value: q ? q.text : "", class: "edu-q-text" });
    text.setAttribute("aria-label", t("edu.desk.quiz.question"));
    const choices = el("textarea", { rows: 3, class: "edu-q-choices",
      value: q ? q.choices.map((c, i) => (q.correct.includes(i) ? `*${c}` : c)).join("\n") : "" });
    choices.setAttribute("aria-label", t("edu.desk.quiz.choices"));
    choices.placeholder = t("edu.desk.quiz.choices.hint");
    const multiple = el("input", { type: "checkbox", class: "edu-q-multiple", checked: Boolean(q && q.multiple) });
    return el("fieldset", { class: "stack edu-q" }, text, choices,
      el("label", {}, multiple, el("span", { text: ` ${t("edu.desk.quiz.multiple")}` })));
  }

  function resultItems() {
    return Object.entries(desk.results).map(([party, r]) =>
      el("li", {}, el("span", { text: t("text.said", { name: nameOf(`party-${party}`) }) }),
        el("span", { class: r.passed ? "ok" : "danger", text: t(r.passed ? "edu.desk.quiz.pass" : "edu.desk.quiz.fail", { score: r.score, total: r.total }) })));
  }
  function renderResults() {
    const list = mount.querySelector("#edu-results");
    if (list) list.replaceChildren(...resultItems());
  }

  function renderQuiz() {
    const answered = Object.keys(desk.results).length > 0;
    const out = [el("h4", { text: t("edu.desk.quiz") })];
    if (desk.quiz) {
      out.push(el("p", { class: "muted", text: t("edu.desk.quiz.set", { n: desk.quiz.questions.length, mark: desk.quiz.pass_mark }) }));
    }
    const results = el("ul", { class: "list", id: "edu-results" }, ...resultItems());
    if (answered) { out.push(results); return out; }
    const blocks = el("div", { class: "stack" }, ...(desk.quiz ? desk.quiz.questions.map(questionBlock) : [questionBlock(null)]));
    const mark = el("input", { type: "number", min: 1, max: 100, value: desk.quiz ? desk.quiz.pass_mark : 60 });
    mark.setAttribute("aria-label", t("edu.desk.quiz.pass_mark"));
    const form = el("form", { class: "stack", id: "edu-quiz-editor" }, blocks,
      el("div", { class: "row" }, act(t("edu.desk.quiz.add"), () => blocks.append(questionBlock(null))),
        el("label", {}, el("span", { text: `${t("edu.desk.quiz.pass_mark")} ` }), mark),
        el("button", { type: "submit", class: "primary", text: t("edu.desk.quiz.save") })));
    form.addEventListener("submit", con.guard(async () => {
      const questions = [...blocks.querySelectorAll(".edu-q")].map((b) => {
        const lines = b.querySelector(".edu-q-choices").value.split("\n").map((s) => s.trim()).filter(Boolean);
        return {
          text: b.querySelector(".edu-q-text").value.trim(),
          choices: lines.map((s) => s.replace(/^\*\s*/, "")),
          correct: lines.flatMap((s, i) => (s.startsWith("*") ? [i] : [])),
          multiple: b.querySelector(".edu-q-multiple").checked,
        };
      });
      desk.quiz = await con.api("PUT", path("/quiz"), { questions, pass_mark: Number(mark.value) });
      con.notice(t("edu.desk.quiz.saved"));
      render("quiz");
    }));
    out.push(form, results);
    return out;
  }

  function renderFlags() {
    const list = el("ul", { class: "list", id: "edu-flags" }, ...desk.flags.map((f) => el("li", { class: "danger" },
      el("strong", { text: `${nameOf(f.participant)} ` }),
      el("span", { text: `${I18N.time(f.at * 1000)} ${t(`edu.desk.flag.${f.reason}`)}` }))));
    if (!desk.flags.length) list.append(el("li", { class: "muted", text: t("edu.desk.no_flags") }));
    return [el("h4", { text: t("edu.desk.flags") }), list];
  }

  // each part in its own box, drawn again only when its state changed; what the officer is
  // typing (an answer, an announcement, the quiz) is not lost when a message arrives
  const PARTS = { flags: renderFlags, floor: renderFloor, questions: renderQuestions, announce: renderAnnounce, quiz: renderQuiz, records: renderRecords };
  function render(...names) {
    if (mount.hidden) return;
    if (!mount.querySelector("#edu-box-flags")) {
      mount.replaceChildren(el("h3", { text: t("edu.desk.title") }),
        ...Object.keys(PARTS).map((name) => el("div", { id: `edu-box-${name}` })));
      names = Object.keys(PARTS);
    }
    for (const name of names.length ? names : Object.keys(PARTS)) {
      const box = mount.querySelector(`#edu-box-${name}`);
      const typed = {};
      for (const input of box.querySelectorAll("[data-keep]")) typed[input.dataset.keep] = input.value;
      box.replaceChildren(...PARTS[name]());
      for (const input of box.querySelectorAll("[data-keep]")) {
        if (typed[input.dataset.keep]) input.value = typed[input.dataset.keep];
      }
    }
  }

  window.addEventListener("remotecase:call-message", (event) => {
    const msg = event.detail || {};
    switch (msg.type) {
      case "joined":
        desk.room = msg.room;
        desk.flags = [];
        mount.hidden = true;
        break;
      case "floor":
        desk.holders = msg.holders || [];
        if (mount.hidden) { mount.hidden = false; mount.replaceChildren(); load().catch((err) => con.showError(err)); }
        render("floor");
        break;
      case "hands":
        desk.hands = msg.hands || [];
        render("floor");
        break;
      case "question":
        desk.messages.push(msg.message);
        render("questions");
        break;
      case "announcement":
        desk.messages.push(msg.message);
        break;
        break;
      case "answered":
        desk.messages = desk.messages.map((m) => (m.id === msg.question.id ? msg.question : m));
        if (msg.answer) desk.messages.push(msg.answer);
        render("questions");
        break;
      case "quiz_answered": {
        const first = Object.keys(desk.results).length === 0;
        desk.results[String(msg.participant).replace(/^party-/, "")] = msg;
        // the editor goes once someone answered (the quiz can no longer change)
        if (first) render("quiz"); else renderResults();
        break;
      }
      case "attendance_flag":
        desk.flags.push(msg);
        render("flags");
        break;
      case "bye":
        mount.hidden = true;
        break;
      default:
        break;
    }
  });
  document.addEventListener("remotecase:lang", () => { mount.replaceChildren(); render(); });
})();
