/* The console's languages: message catalogues (i18n/en.json, i18n/zh-CN.json), the
 * browser's language by default with a remembered switch, times in the configured local
 * time zone and category names from configuration.
 *
 * Every string the pages show comes from a catalogue through t(); static markup names
 * its key in data-i18n (text) or data-i18n-attr ("aria-label=key;title=key"). Values
 * reach the page as text only: t() returns a string and apply() sets textContent.
 */
"use strict";

const LANG_KEY = "qrd.console.lang";
const SUPPORTED = ["zh-CN", "en"];

const I18N = {
  lang: "en",
  messages: {},
  fallback: {},
  config: null,
  ready: null,
};

function pickLanguage() {
  const saved = localStorage.getItem(LANG_KEY);
  if (SUPPORTED.includes(saved)) return saved;
  for (const wanted of navigator.languages || [navigator.language || "en"]) {
    const lower = String(wanted).toLowerCase();
    if (lower.startsWith("zh")) return "zh-CN";
    if (lower.startsWith("en")) return "en";
  }
  return "en";
}

/* "Hello {name}" with {name: "Li"}: placeholders are filled as plain text. */
function t(key, vars = {}) {
  const template = I18N.messages[key] ?? I18N.fallback[key] ?? key;
  return String(template).replace(/\{(\w+)\}/g, (_, name) =>
    (vars[name] === undefined || vars[name] === null ? "" : String(vars[name])));
}

/* A category's configured name in the page's language, else its key in words. */
function categoryName(key) {
  const labels = (I18N.config && I18N.config.category_labels) || {};
  const names = labels[key] || {};
  return names[I18N.lang] || names.en || String(key || "").replaceAll("_", " ");
}

function timeZone() {
  return (I18N.config && I18N.config.time_zone) || undefined;
}

/* A clock time (HH:MM:SS, 24 h) in the configured local time zone. */
function fmtTime(iso) {
  if (!iso) return "—";
  return new Intl.DateTimeFormat(I18N.lang, {
    timeZone: timeZone(), hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  }).format(new Date(iso));
}

/* A date and time in the configured local time zone. */
function fmtDateTime(iso) {
  if (!iso) return "—";
  return new Intl.DateTimeFormat(I18N.lang, {
    timeZone: timeZone(), month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    hour12: false,
  }).format(new Date(iso));
}

/* Fill the static markup's text and attributes from the catalogue. */
function applyI18n(root = document) {
  document.documentElement.lang = I18N.lang;
  for (const node of root.querySelectorAll("[data-i18n]")) {
    node.textContent = t(node.dataset.i18n);
  }
  for (const node of root.querySelectorAll("[data-i18n-attr]")) {
    for (const pair of node.dataset.i18nAttr.split(";")) {
      const [attr, key] = pair.split("=");
      if (attr && key && !/^on/i.test(attr.trim())) node.setAttribute(attr.trim(), t(key.trim()));
    }
  }
}

/* The language switch: a select in the top bar; the choice is remembered on this device. */
function wireLanguageSwitch() {
  const select = document.getElementById("lang");
  if (!select) return;
  select.replaceChildren();
  for (const lang of SUPPORTED) {
    const option = document.createElement("option");
    option.value = lang;
    option.textContent = t(`lang.${lang}`);
    option.lang = lang;
    select.append(option);
  }
  select.value = I18N.lang;
  select.addEventListener("change", () => {
    localStorage.setItem(LANG_KEY, select.value);
    window.location.reload();
  });
}

async function fetchJson(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

async function loadI18n() {
  I18N.lang = pickLanguage();
  const [config, messages, fallback] = await Promise.all([
    fetchJson("/console/config.json").catch(() => ({})),
    fetchJson(`/console/i18n/${I18N.lang}.json`),
    I18N.lang === "en" ? Promise.resolve({}) : fetchJson("/console/i18n/en.json").catch(() => ({})),
  ]);
  I18N.config = config;
  I18N.messages = messages;
  I18N.fallback = fallback;
  applyI18n();
  wireLanguageSwitch();
  return I18N;
}

I18N.ready = loadI18n();
