// Officer accounts for supervisors: list, add, disable or enable, change a role, reset a
// password. Every change asks for a reason (it is audited). The login is the console's.
"use strict";

(async () => {
  await I18N.load(["accounts"]);
  const $ = (id) => document.getElementById(id);
  const LOGIN = "remotecase-login";
  let token = sessionStorage.getItem(LOGIN);
  let officers = [];

  const say = (text, kind) => {
    const box = $("status");
    box.textContent = text;
    box.className = `notice ${kind || ""}`;
    box.hidden = !text;
  };

  async function call(method, path, body) {
    const headers = I18N.headers(body ? { "Content-Type": "application/json" } : {});
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
    } catch (err) {
      throw new Error(I18N.t("error.network"));
    }
    const data = await response.json().catch(() => ({}));
    if (response.status === 401) showLogin();
    if (!response.ok) throw new Error(I18N.error(data));
    return data;
  }

  function showLogin() {
    token = null;
    sessionStorage.removeItem(LOGIN);
    $("login").hidden = false;
    $("add").hidden = $("list").hidden = $("logout").hidden = true;
    $("who").textContent = "";
  }

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function button(parent, key, onClick, kind) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = I18N.t(key);
    if (kind) b.className = kind;
    b.addEventListener("click", onClick);
    parent.appendChild(b);
    return b;
  }

  async function change(officer, fields, doneKey) {
    const reason = window.prompt(I18N.t("accounts.reason_prompt", { username: officer.username }));
    if (!reason || !reason.trim()) return;
    try {
      await call("PATCH", `/api/officers/${officer.id}`, { ...fields, reason: reason.trim() });
      say(I18N.t(doneKey, { username: officer.username }), "done");
      await refresh();
    } catch (err) {
      say(err.message, "error");
    }
  }

  function render() {
    const body = $("officers");
    body.replaceChildren();
    for (const o of officers) {
      const row = document.createElement("tr");
      if (o.disabled) row.className = "disabled";
      cell(row, o.username);
      cell(row, I18N.t(`role.${o.role}`));
      cell(row, o.brigade);
      cell(row, I18N.t(o.disabled ? "state.disabled" : "state.enabled"));
      cell(row, I18N.dateTime(o.created_at));
      const actions = cell(row, "");
      actions.className = "actions";
      if (o.disabled) {
        button(actions, "accounts.enable", () => change(o, { disabled: false }, "accounts.enabled"));
      } else {
        button(actions, "accounts.disable", () => change(o, { disabled: true }, "accounts.disabled"), "danger");
      }
      const role = document.createElement("select");
      role.setAttribute("aria-label", I18N.t("accounts.role_for", { username: o.username }));
      for (const r of ["officer", "supervisor", "observer"]) {
        const option = document.createElement("option");
        option.value = r;
        option.textContent = I18N.t(`role.${r}`);
        option.selected = r === o.role;
        role.appendChild(option);
      }
      role.addEventListener("change", () => change(o, { role: role.value }, "accounts.role_changed"));
      actions.appendChild(role);
      button(actions, "accounts.reset", () => {
        const password = window.prompt(I18N.t("accounts.password_prompt", { username: o.username }));
        if (password) change(o, { password }, "accounts.password_reset");
      });
      body.appendChild(row);
    }
  }

  async function refresh() {
    try {
      officers = (await call("GET", "/api/officers")).officers;
    } catch (err) {
      if (token) say(err.message, "error");
      return;
    }
    $("login").hidden = true;
    $("add").hidden = $("list").hidden = $("logout").hidden = false;
    render();
  }

  $("lang").addEventListener("click", () => I18N.setLang(I18N.lang === "en" ? "zh-CN" : "en"));
  document.addEventListener("remotecase:lang", render);

  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const body = await call("POST", "/api/login", {
        username: $("login-username").value.trim(), password: $("login-password").value,
      });
      token = body.token;
      sessionStorage.setItem(LOGIN, token);
      $("who").textContent = body.officer.username;
      say("", "");
      await refresh();
    } catch (err) {
      say(err.message, "error");
    }
  });

  $("logout").addEventListener("click", async () => {
    try { await call("POST", "/api/logout"); } catch (err) { /* the login ends here anyway */ }
    showLogin();
  });

  $("add-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const added = await call("POST", "/api/officers", {
        username: $("add-username").value.trim(), brigade: $("add-brigade").value.trim(),
        role: $("add-role").value, password: $("add-password").value,
      });
      $("add-form").reset();
      say(I18N.t("accounts.added", { username: added.username }), "done");
      await refresh();
    } catch (err) {
      say(err.message, "error");
    }
  });

  if (token) await refresh(); else showLogin();
})();
