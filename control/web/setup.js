// The first start's setup page: creates the first supervisor with the one-time link the server
// printed (its token is after #t=, so that it never reaches a log or a Referer).
"use strict";

(async () => {
  await I18N.load(["setup"]);
  const $ = (id) => document.getElementById(id);
  const token = new URLSearchParams(location.hash.slice(1)).get("t") || "";
  const say = (key, kind, params) => {
    const box = $("status");
    box.textContent = key.startsWith("!") ? key.slice(1) : I18N.t(key, params);
    box.className = `notice ${kind || ""}`;
    box.hidden = false;
  };
  $("lang").addEventListener("click", () => I18N.setLang(I18N.lang === "en" ? "zh-CN" : "en"));

  let state;
  try {
    const response = await fetch("/api/setup", { headers: I18N.headers() });
    state = await response.json();
    if (!response.ok) { say(`!${I18N.error(state)}`, "error"); return; }
  } catch (err) {
    say("error.network", "error");
    return;
  }
  if (!state.needed) {
    say("setup.done_already", "done");
    $("next").hidden = false;
    return;
  }
  if (!token) { say("setup.no_token", "error"); return; }
  $("form").hidden = false;

  $("form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if ($("password").value !== $("password2").value) { say("setup.mismatch", "error"); return; }
    const button = event.submitter || $("form").querySelector("button");
    button.disabled = true;
    try {
      const response = await fetch("/api/setup", {
        method: "POST",
        headers: I18N.headers({ "Content-Type": "application/json" }),
        body: JSON.stringify({
          token, username: $("username").value.trim(), brigade: $("brigade").value.trim(),
          password: $("password").value,
        }),
      });
      const body = await response.json();
      if (!response.ok) { say(`!${I18N.error(body)}`, "error"); return; }
      $("form").hidden = true;
      history.replaceState(null, "", "/setup");  // the link is spent: drop it from the address
      say("setup.created", "done", { username: body.username });
      $("next").hidden = false;
    } catch (err) {
      say("error.network", "error");
    } finally {
      button.disabled = false;
    }
  });
})();
