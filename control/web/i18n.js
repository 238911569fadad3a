// remotecase pages' language: one message catalog per language and per page, Chinese first.
//
// Catalogs are JSON files under /static/i18n/<lang>/<name>.json: "common" (shared by every page)
// and one per page ("party", "console", ...), so pages grow without editing each other's texts.
// zh-CN is the default and the fallback; en is the second language. The language is, in order:
// ?lang= in the address, the person's switch (localStorage "remotecase.lang"), the browser's
// preference (navigator.languages), else zh-CN. Server answers are asked for in the same
// language (I18N.headers() gives the Accept-Language to send) and their errors carry a code
// that the page may translate itself (I18N.error).
//
// A panel's script with a catalog of its own asks for it with I18N.use("name"): loaded with the
// page's catalogs when the page loads them, or at once (and merged) when they are loaded already;
// the promise it returns settles when the panel's words are there.
//
// In HTML: data-i18n="key" sets the text, data-i18n-placeholder / -title / -aria-label / -alt
// set those attributes; I18N.apply(root) fills them (again after a switch).
"use strict";

const I18N = (() => {
  const LANGS = ["zh-CN", "en"];
  const DEFAULT = "zh-CN";
  const STORE = "remotecase.lang";
  const TZ = "Asia/Shanghai";  // China's time: dates and times are shown in it wherever one is
  const catalogs = {};         // lang -> {key: text}
  let names = [];
  let lang = DEFAULT;
  const panels = [];           // catalogs asked for by panels' scripts (I18N.use)
  let loading = null;          // the page's load, once started

  function pick(tag) {
    if (!tag) return null;
    const lower = String(tag).toLowerCase();
    if (lower.startsWith("zh")) return "zh-CN";
    if (lower.startsWith("en")) return "en";
    return null;
  }

  function chosen() {
    const asked = pick(new URLSearchParams(location.search).get("lang"));
    if (asked) return asked;
    try {
      const stored = pick(localStorage.getItem(STORE));
      if (stored) return stored;
    } catch (err) { /* storage may be off: the browser's preference decides */ }
    for (const tag of navigator.languages || [navigator.language]) {
      const found = pick(tag);
      if (found) return found;
    }
    return DEFAULT;
  }

  async function fetchCatalog(code, name) {
    const response = await fetch(`/static/i18n/${code}/${name}.json`, { cache: "no-cache" });
    if (!response.ok) throw new Error(`catalog ${code}/${name}: HTTP ${response.status}`);
    return response.json();
  }

  async function loadLang(code) {
    const merged = {};
    for (const name of names) Object.assign(merged, await fetchCatalog(code, name));
    catalogs[code] = merged;
  }

  // Load the catalogs ["common", page...] for the chosen language (and zh-CN as the fallback).
  function load(pageNames) {
    names = ["common", ...pageNames.filter((n) => n !== "common")];
    for (const n of panels) if (!names.includes(n)) names.push(n);
    loading = (async () => {
      lang = chosen();
      await loadLang(DEFAULT);
      if (lang !== DEFAULT) await loadLang(lang);
      document.documentElement.lang = lang;
      apply(document);
      return lang;
    })();
    return loading;
  }

  // A panel's own catalog: part of the page's load if it has not started, else loaded now for
  // every language already loaded.
  async function use(name) {
    if (!panels.includes(name)) panels.push(name);
    if (!loading) {
      await new Promise((resolve) => {
        const wait = () => (loading ? resolve() : setTimeout(wait, 20));
        wait();
      });
    }
    await loading.catch(() => {});
    if (!names.includes(name)) {
      names.push(name);
      for (const code of Object.keys(catalogs)) {
        Object.assign(catalogs[code], await fetchCatalog(code, name));
      }
      apply(document);
      // what the page wrote before these words arrived is written again (as after a switch)
      document.dispatchEvent(new CustomEvent("remotecase:lang", { detail: { lang } }));
    }
    return lang;
  }

  // The text of key in the current language ({name} replaced from params), zh-CN when the
  // language lacks it, the key itself when no catalog has it (visible, so it gets fixed).
  function t(key, params) {
    const text = (catalogs[lang] && catalogs[lang][key]) ??
                 (catalogs[DEFAULT] && catalogs[DEFAULT][key]) ?? key;
    if (!params) return text;
    return text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
  }

  function has(key) {
    return Boolean((catalogs[lang] && key in catalogs[lang]) || (catalogs[DEFAULT] && key in catalogs[DEFAULT]));
  }

  const ATTRS = ["placeholder", "title", "aria-label", "alt"];

  function apply(root) {
    for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    for (const attr of ATTRS) {
      for (const el of root.querySelectorAll(`[data-i18n-${attr}]`)) {
        el.setAttribute(attr, t(el.getAttribute(`data-i18n-${attr}`)));
      }
    }
  }

  // Switch language (kept for the next visit) and re-apply; pages re-render what they wrote.
  async function setLang(code) {
    const next = pick(code) || DEFAULT;
    try { localStorage.setItem(STORE, next); } catch (err) { /* kept for this page only */ }
    if (!catalogs[next]) await loadLang(next);
    lang = next;
    document.documentElement.lang = lang;
    apply(document);
    document.dispatchEvent(new CustomEvent("remotecase:lang", { detail: { lang } }));
  }

  // Headers for fetch so the server answers (and words its errors) in the page's language.
  function headers(extra) {
    return Object.assign({ "Accept-Language": lang === DEFAULT ? "zh-CN,zh;q=0.9" : "en" }, extra || {});
  }

  // The words for a server error body {"error": code, "message": text}: the page's own text for
  // "error.<code>" when it has one, else the server's message (already in this language).
  function error(body, fallbackKey) {
    if (body && body.error && has(`error.${body.error}`)) return t(`error.${body.error}`);
    if (body && body.message) return body.message;
    return t(fallbackKey || "error.unknown");
  }

  function dateTime(value, options) {
    const date = value instanceof Date ? value : new Date(typeof value === "number" && value < 1e12 ? value * 1000 : value);
    if (Number.isNaN(date.getTime())) return "";
    return new Intl.DateTimeFormat(lang, Object.assign({
      timeZone: TZ, year: "numeric", month: "long", day: "numeric",
      hour: "2-digit", minute: "2-digit", hour12: false,
    }, options || {})).format(date);
  }

  function date(value) {
    return dateTime(value, { hour: undefined, minute: undefined });
  }

  function time(value) {
    return dateTime(value, { year: undefined, month: undefined, day: undefined });
  }

  return { LANGS, DEFAULT, load, use, t, has, apply, setLang, headers, error, dateTime, date, time,
           get lang() { return lang; } };
})();
window.I18N = I18N;
