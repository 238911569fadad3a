// The viewer's side of an education session (远程宣教) on the party page: whether the watch time
// is counting (and why not), the raised hand and the floor, questions to the officer with the
// officers' answers and announcements, and the quiz. It shows itself only in an education room:
// the server's first "floor" message says it is one. Everything comes and goes through client.js's
// signalling socket: messages arrive as "remotecase:message" events and are sent with
// window.remotecase.send (docs/signalling.md, docs/education.md). Texts from people (questions,
// answers) are put in textContent only, never parsed as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const t = (key, params) => I18N.t(key, params);
  const panel = $("education-panel");
  if (!panel) return;

  const view = {
    me: null,            // our participant ID (from "joined")
    attendance: null,    // the last "attendance" message
    holders: [],         // who holds the floor
    hand: false,
    messages: [],        // our questions, officers' answers and announcements
    quiz: null,          // the quiz to answer, or null
    result: null,        // our quiz result
    status: "",          // the last problem to tell
    restricted: false,   // a viewer who speaks only with the floor (the server tells it its hand)
    light: false,        // our camera sent light (client.js limitVideo)
  };
  // what a viewer's camera sends while it does not hold the floor: enough for the face checks
  const LIGHT = { maxFramerate: 5, maxBitrate: 150000 };
  function followFloor() {
    const light = view.restricted && !view.holders.some((h) => h.participant === view.me);
    const rc = window.remotecase;
    if (light === view.light || !rc || !rc.limitVideo) return;
    view.light = light;
    rc.limitVideo(light ? LIGHT : null).then(() => {
      if (view.light === light) panel.dataset.camera = light ? "light" : "full";
    });
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k.startsWith("data-") || k.startsWith("aria-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }
  // false (and the viewer told) while the socket is down, e.g. reconnecting: nothing typed is lost
  const send = (msg) => {
    const rc = window.remotecase;
    if (!rc || !rc.ws || rc.ws.readyState !== 1) { setStatus(t("edu.viewer.offline")); return false; }
    rc.send(msg);
    return true;
  };
  const minutes = (s) => t("edu.viewer.minutes", { m: Math.floor((s || 0) / 60), s: Math.floor((s || 0) % 60) });

  function attendanceText() {
    const a = view.attendance;
    if (!a) return { text: t("edu.viewer.att.waiting"), cls: "muted" };
    if (a.state === "counting") return { text: t("edu.viewer.att.counting"), cls: "ok" };
    if (a.state === "checking") return { text: t("edu.viewer.att.checking"), cls: "warn" };
    const why = a.reason === "check_failed" ? a.check_reason || "" : a.reason || "";
    const key = `edu.viewer.att.${why}`;
    const text = I18N.has(key) ? t(key) : t("edu.viewer.att.paused");
    return { text: a.reason === "check_failed" ? `${t("edu.viewer.att.check_failed")} ${text}` : text, cls: "danger" };
  }

  function renderAttendance() {
    const box = $("edu-attendance");
    const { text, cls } = attendanceText();
    box.replaceChildren(
      el("strong", { class: cls, text }),
      el("span", { class: "muted", text: ` ${t("edu.viewer.watched", { time: minutes(view.attendance && view.attendance.watch_seconds) })}` }),
    );
    panel.dataset.attendance = view.attendance ? view.attendance.state : "";
  }

  function renderFloor() {
    const mine = view.holders.some((h) => h.participant === view.me);
    const others = view.holders.filter((h) => h.participant !== view.me).map((h) => h.name);
    $("edu-floor").textContent = mine ? t("edu.viewer.floor.mine")
      : others.length ? t("edu.viewer.floor.others", { names: others.join(t("list.sep")) }) : t("edu.viewer.floor.none");
    $("edu-floor").className = mine ? "ok" : "muted";
    const hand = $("edu-hand");
    hand.hidden = mine;
    hand.textContent = view.hand ? t("edu.viewer.hand.lower") : t("edu.viewer.hand.raise");
    hand.setAttribute("aria-pressed", String(view.hand));
    hand.className = view.hand ? "" : "primary";
    panel.dataset.floor = mine ? "mine" : "none";
    panel.dataset.hand = String(view.hand);
  }

  function renderMessages() {
    const list = $("edu-messages");
    list.replaceChildren(...view.messages.slice(-30).map((m) => {
      const who = m.kind === "question" ? t("edu.viewer.msg.mine")
        : m.kind === "answer" ? t("edu.viewer.msg.answer", { name: m.name })
        : t("edu.viewer.msg.announcement", { name: m.name });
      return el("li", { "data-kind": m.kind }, el("span", { class: "muted", text: t("text.said", { name: who }) }), el("span", { text: m.text }));
    }));
  }

  function renderQuiz() {
    const box = $("edu-quiz");
    if (view.result) {
      const r = view.result;
      box.replaceChildren(el("p", { class: r.passed ? "ok" : "danger",
        text: t(r.passed ? "edu.viewer.quiz.passed" : "edu.viewer.quiz.failed", { score: r.score, total: r.total }) }));
      box.hidden = false;
      return;
    }
    if (!view.quiz) { box.hidden = true; box.replaceChildren(); return; }
    const q = view.quiz;
    const form = el("form", { id: "edu-quiz-form", class: "stack" });
    form.append(el("h3", { text: t("edu.viewer.quiz.title") }),
      el("p", { class: "muted", text: t("edu.viewer.quiz.pass_mark", { mark: q.pass_mark }) }));
    q.questions.forEach((question, i) => {
      const set = el("fieldset", {}, el("legend", { text: `${i + 1}. ${question.text}${question.multiple ? t("edu.viewer.quiz.multiple") : ""}` }));
      question.choices.forEach((choice, j) => {
        const input = el("input", { type: question.multiple ? "checkbox" : "radio", name: `q${i}`, value: String(j) });
        set.append(el("label", { class: "choice" }, input, el("span", { text: ` ${choice}` })));
      });
      form.append(set);
    });
    const submit = el("button", { type: "submit", class: "primary wide", text: t("edu.viewer.quiz.submit") });
    form.append(submit);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const answers = q.questions.map((_, i) =>
        [...form.querySelectorAll(`input[name="q${i}"]:checked`)].map((x) => Number(x.value)));
      if (answers.some((a) => a.length === 0)) { setStatus(t("edu.viewer.quiz.incomplete")); return; }
      setStatus("");
      if (send({ type: "quiz_answer", quiz: q.id, answers })) submit.disabled = true;
    });
    box.replaceChildren(form);
    box.hidden = false;
  }

  function setStatus(text) { $("edu-status").textContent = text || ""; }

  function build() {
    const question = el("textarea", { id: "edu-question", maxLength: 300, rows: 2 });
    question.setAttribute("aria-label", t("edu.viewer.ask.label"));
    question.placeholder = t("edu.viewer.ask.placeholder");
    const ask = el("form", { id: "edu-ask", class: "stack" }, question,
      el("button", { type: "submit", class: "wide", text: t("edu.viewer.ask.send") }));
    ask.addEventListener("submit", (e) => {
      e.preventDefault();
      const text = question.value.trim();
      if (!text) return;
      if (send({ type: "question", text })) question.value = "";
    });
    const hand = el("button", { type: "button", id: "edu-hand", class: "primary wide" });
    hand.addEventListener("click", () => send({ type: "hand", raised: !view.hand }));
    panel.replaceChildren(
      el("h2", { text: t("edu.viewer.title") }),
      el("p", { id: "edu-attendance", role: "status" }),
      el("p", { id: "edu-floor", role: "status" }),
      hand,
      el("h3", { text: t("edu.viewer.ask.title") }),
      ask,
      el("ul", { id: "edu-messages", class: "list", "aria-live": "polite" }),
      el("div", { id: "edu-quiz", hidden: true }),
      el("p", { id: "edu-status", role: "alert", class: "warn" }),
    );
    renderAll();
  }

  function renderAll() {
    if (panel.hidden) return;
    renderAttendance();
    renderFloor();
    renderMessages();
    renderQuiz();
  }

  const OURS = ["hand", "question", "quiz_answer"];
  window.addEventListener("remotecase:message", (event) => {
    const msg = event.detail || {};
    switch (msg.type) {
      case "joined":  // (again after a reconnection: the server tells the hand and floor anew)
        view.me = msg.participant && msg.participant.id;
        view.hand = false;
        break;
      case "floor":
        if (panel.hidden) { panel.hidden = false; build(); }
        view.holders = msg.holders || [];
        if (view.holders.some((h) => h.participant === view.me)) view.hand = false;
        renderFloor();
        followFloor();
        break;
      case "attendance":
        view.attendance = msg;
        if (!panel.hidden) renderAttendance();
        break;
      case "hand":
        view.hand = Boolean(msg.raised);
        view.restricted = true;  // only a viewer who needs the floor to speak hears of its hand
        if (!panel.hidden) renderFloor();
        followFloor();
        break;
      case "questions":
        view.messages = msg.messages || [];
        if (!panel.hidden) renderMessages();
        break;
      case "question":
      case "announcement":
        view.messages.push(msg.message);
        if (!panel.hidden) renderMessages();
        break;
      case "answered":
        if (msg.answer) view.messages.push(msg.answer);
        if (!panel.hidden) renderMessages();
        break;
      case "quiz": {
        // the same quiz again (after a reconnection): keep what the viewer has ticked
        const same = view.quiz && msg.quiz && view.quiz.id === msg.quiz.id && $("edu-quiz-form");
        view.quiz = msg.quiz;
        view.result = null;
        if (!panel.hidden && !same) renderQuiz();
        break;
      }
      case "quiz_result":
        view.result = msg;
        view.quiz = null;
        if (!panel.hidden) renderQuiz();
        break;
      case "error":
        if (OURS.includes(msg.ref) && !panel.hidden) {
          setStatus(msg.message);
          const submit = document.querySelector("#edu-quiz-form button[type=submit]");
          if (submit && msg.ref === "quiz_answer") submit.disabled = false;
        }
        break;
      default:
        break;
    }
  });
  document.addEventListener("remotecase:lang", () => { if (!panel.hidden) build(); });
  // while counting, the shown watch time runs on between the server's messages (each message
  // brings the server's own figure, which is what counts)
  setInterval(() => {
    if (panel.hidden || !view.attendance || view.attendance.state !== "counting") return;
    view.attendance.watch_seconds = (view.attendance.watch_seconds || 0) + 1;
    renderAttendance();
  }, 1000);
})();
