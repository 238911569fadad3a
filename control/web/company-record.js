// The company page of a sent attendance record: its link carries the token after #t= (never
// in a request's path, a log or a Referer); the page posts it to read the record's facts (the
// visit is recorded) and to download the sealed PDF.
"use strict";

(async () => {
  await I18N.load(["company-record"]);
  const $ = (id) => document.getElementById(id);
  const token = new URLSearchParams(location.hash.slice(1)).get("t") || "";
  const say = (text, kind) => {
    const box = $("status");
    box.textContent = text;
    box.className = `notice ${kind || ""}`;
    box.hidden = false;
  };
  $("lang").addEventListener("click", () => I18N.setLang(I18N.lang === "en" ? "zh-CN" : "en"));
  if (!token) { say(I18N.t("company.no_token"), "error"); return; }

  const post = (path) => fetch(path, {
    method: "POST",
    headers: I18N.headers({ "Content-Type": "application/json" }),
    body: JSON.stringify({ token }),
  });

  let facts;
  try {
    const response = await post("/api/education/company-record");
    facts = await response.json();
    if (!response.ok) { say(I18N.error(facts), "error"); return; }
  } catch (err) {
    say(I18N.t("error.network"), "error");
    return;
  }
  $("f-company").textContent = facts.company;
  $("f-brigade").textContent = facts.brigade;
  $("f-topic").textContent = facts.topic;
  $("f-session").textContent = facts.session_ended
    ? `${I18N.dateTime(facts.session_started)} – ${I18N.dateTime(facts.session_ended)}`
    : I18N.dateTime(facts.session_started);
  $("f-number").textContent = facts.number;
  $("f-sent").textContent = I18N.dateTime(facts.sent_at);
  $("f-expires").textContent = I18N.dateTime(facts.expires_at);
  $("f-sha").textContent = facts.sha256;
  $("f-command").textContent = facts.verify_command;
  $("record").hidden = false;

  $("download").addEventListener("click", async () => {
    const button = $("download");
    button.disabled = true;
    try {
      const response = await post("/api/education/company-record/pdf");
      if (!response.ok) { say(I18N.error(await response.json()), "error"); return; }
      const url = URL.createObjectURL(await response.blob());
      const a = document.createElement("a");
      a.href = url;
      a.download = `${facts.number || "attendance"}.pdf`;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      say(I18N.t("company.downloaded"), "done");
    } catch (err) {
      say(I18N.t("error.network"), "error");
    } finally {
      button.disabled = false;
    }
  });
})();
