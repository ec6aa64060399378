// Message catalogues (zh-CN and en), the language choice and local times.
// Every string the apps show comes from messages/<lang>.json; none is in code.

export const LANGUAGES = ["zh-CN", "en"];
const STORAGE_KEY = "qrd.lang";

let catalogue = {};
let language = "en";
let timeZone = "Asia/Shanghai";

/** The saved choice, else the browser's first language we have, else English. */
export function preferredLanguage() {
  const saved = localStorage.getItem(STORAGE_KEY);
  if (LANGUAGES.includes(saved)) return saved;
  for (const wanted of navigator.languages || [navigator.language]) {
    if (String(wanted).toLowerCase().startsWith("zh")) return "zh-CN";
    if (String(wanted).toLowerCase().startsWith("en")) return "en";
  }
  return "en";
}

/** Load ``lang``'s catalogue from ``base`` (the app's common/ URL) and make it current. */
export async function useLanguage(base, lang) {
  const answer = await fetch(`${base}/messages/${lang}.json`);
  catalogue = await answer.json();
  language = lang;
  localStorage.setItem(STORAGE_KEY, lang);
  document.documentElement.lang = lang;
}

export function currentLanguage() {
  return language;
}

export function otherLanguage() {
  return language === "en" ? "zh-CN" : "en";
}

export function setTimeZone(zone) {
  timeZone = zone || timeZone;
}

/** The message ``key`` with ``{name}`` placeholders filled from ``values``. */
export function t(key, values = {}) {
  const template = catalogue[key] ?? key;
  return template.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}

/** Fill every ``data-i18n`` element's text and ``data-i18n-<attr>`` attribute. */
export function translatePage(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) {
    el.textContent = t(el.dataset.i18n);
  }
  for (const el of root.querySelectorAll("*")) {
    for (const attr of el.getAttributeNames()) {
      if (attr.startsWith("data-i18n-") && attr !== "data-i18n") {
        el.setAttribute(attr.slice("data-i18n-".length), t(el.getAttribute(attr)));
      }
    }
  }
}

/** A time of day in the configured time zone, in the current language. */
export function formatTime(iso) {
  const when = iso instanceof Date ? iso : new Date(iso);
  return new Intl.DateTimeFormat(language, {
    timeZone,
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hour12: false,
  }).format(when);
}

/** A date and time in the configured time zone. */
export function formatDateTime(iso) {
  return new Intl.DateTimeFormat(language, {
    timeZone,
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    hour12: false,
  }).format(new Date(iso));
}

/** Whole minutes (at least one) for an ETA in seconds. */
export function minutes(seconds) {
  return t("minutes", { n: Math.max(1, Math.round(Number(seconds) / 60)) });
}

/** A distance in metres, or kilometres from one kilometre on. */
export function distance(metres) {
  const m = Number(metres);
  return m >= 1000 ? t("km", { n: (m / 1000).toFixed(1) }) : t("metres", { n: Math.round(m) });
}

/** A category's name in the current language, from the configured names. */
export function categoryName(categories, id) {
  const found = categories.find((c) => c.id === id);
  return (found && (found.names[language] || found.names.en)) || id;
}
