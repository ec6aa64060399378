// The citizen app: choose what is happening, place the pin, send; then follow the report.
import * as L from "./vendor/leaflet/leaflet-src.esm.js";
import { $, api, el, errorMessage, fill, registerServiceWorker, show } from "./common/dom.js";
import {
  categoryName, currentLanguage, formatTime, minutes, otherLanguage, preferredLanguage,
  setTimeZone, t, translatePage, useLanguage,
} from "./common/i18n.js";

const COMMON = "common";
const TRACKING_KEY = "qrd.citizen.tracking";
const PENDING_KEY = "qrd.citizen.pending";
const STEPS = ["received", "dispatched", "responder_assigned", "on_scene", "resolved"];
const FALLBACK_CENTRE = [22.5431, 114.0579];

const state = {
  config: null,
  category: null,
  position: null, // {lat, lon, accuracy_m?, source: "gps"|"pin"}
  map: null,
  marker: null,
  sending: false,
  report: null, // {report_id, tracking_token, category, received_at}
  view: null,   // the latest ReportPublic
  events: null,
  cancelArmed: false,
  live: null, // whether the report's live stream is open
};

// --- language ------------------------------------------------------------------------

async function switchLanguage(lang) {
  await useLanguage(COMMON, lang);
  translatePage();
  renderCategories();
  renderFix();
  if (state.report) renderTracking();
}

// --- the form ------------------------------------------------------------------------

function renderCategories() {
  const holder = $("#categories");
  fill(
    holder,
    ...state.config.categories.map((c) =>
      el(
        "button",
        {
          type: "button",
          class: "category",
          "data-category": c.id,
          "data-selected": t("citizen.selected"),
          "aria-pressed": String(state.category === c.id),
        },
        el("img", { src: `${COMMON}/icons/${c.id}.svg`, alt: "", width: 40, height: 40 }),
        el("span", {}, categoryName(state.config.categories, c.id)),
      ),
    ),
  );
}

function chooseCategory(id) {
  state.category = id;
  for (const button of document.querySelectorAll(".category")) {
    button.setAttribute("aria-pressed", String(button.dataset.category === id));
  }
  show($("#form-error"), false);
}

function renderFix() {
  const p = state.position;
  const fix = $("#fix");
  if (!p) {
    fix.textContent = t("citizen.noGps");
    return;
  }
  const values = { lat: p.lat.toFixed(5), lon: p.lon.toFixed(5), accuracy: Math.round(p.accuracy_m || 0) };
  fix.textContent = t(p.source === "gps" ? "citizen.gpsFix" : "citizen.pinFix", values);
}

function placePin(lat, lon) {
  if (!state.marker) {
    // A 44 px pin drawn by CSS: a large enough target, and no image download.
    const icon = L.divIcon({
      className: "pin",
      html: el("span", { class: "pin-head", "aria-hidden": "true" }),
      iconSize: [44, 44],
      iconAnchor: [22, 44],
    });
    state.marker = L.marker([lat, lon], {
      icon,
      draggable: true,
      keyboard: true,
      title: t("citizen.pinTitle"),
      alt: t("citizen.pinTitle"),
      autoPanOnFocus: false,
    }).addTo(state.map);
    state.marker.on("dragend", () => {
      const where = state.marker.getLatLng();
      state.position = { lat: where.lat, lon: where.lng, source: "pin" };
      renderFix();
    });
  } else {
    state.marker.setLatLng([lat, lon]);
  }
}

function locate() {
  if (!("geolocation" in navigator)) {
    renderFix();
    return;
  }
  $("#fix").textContent = t("citizen.locating");
  navigator.geolocation.getCurrentPosition(
    (fix) => {
      const { latitude, longitude, accuracy } = fix.coords;
      state.position = { lat: latitude, lon: longitude, accuracy_m: accuracy, source: "gps" };
      placePin(latitude, longitude);
      state.map.setView([latitude, longitude], 16);
      renderFix();
    },
    () => {
      const centre = state.map.getCenter();
      placePin(centre.lat, centre.lng);
      state.position = { lat: centre.lat, lon: centre.lng, source: "pin" };
      renderFix();
    },
    { enableHighAccuracy: true, timeout: 15000, maximumAge: 30000 },
  );
}

async function setUpMap() {
  state.map = L.map("map", { attributionControl: false, zoomSnap: 0.5 });
  state.map.setView(FALLBACK_CENTRE, 13);
  try {
    const grids = await (await fetch(state.config.grids_url)).json();
    const layer = L.geoJSON(grids, {
      style: { color: "#0b4f8a", weight: 2, fillColor: "#9ec5ee", fillOpacity: 0.25 },
      interactive: false,
    }).addTo(state.map);
    state.map.fitBounds(layer.getBounds());
  } catch {
    // No base map: the pin and the coordinates still work.
  }
}

/** A phone as typed ("139 0013 9000") in E.164 ("+8613900139000"), as intake wants it. */
function e164(typed) {
  let digits = typed.replace(/[\s()\-.]/g, "");
  if (!digits) return "";
  if (digits.startsWith("00")) digits = `+${digits.slice(2)}`;
  if (!digits.startsWith("+")) digits = `+${state.config.phone_country_code}${digits.replace(/^0+/, "")}`;
  return digits;
}

function reportBody() {
  const p = state.position;
  const location = { lat: p.lat, lon: p.lon };
  if (p.accuracy_m) location.accuracy_m = Math.min(p.accuracy_m, 10000);
  const body = { category: state.category, location };
  const address = $("#address").value.trim();
  const description = $("#description").value.trim();
  const name = $("#name").value.trim();
  const phone = e164($("#phone").value.trim());
  if (address) body.address = address;
  if (description) body.description = description;
  if (name || phone) body.reporter = { ...(name && { name }), ...(phone && { phone }) };
  return body;
}

function formError(message) {
  const box = $("#form-error");
  box.textContent = message;
  show(box, true);
}

async function send(event) {
  event.preventDefault();
  if (state.sending) return; // a double tap sends nothing more
  if (!state.category) {
    formError(t("citizen.chooseCategory"));
    return;
  }
  if (!state.position) {
    const centre = state.map.getCenter();
    state.position = { lat: centre.lat, lon: centre.lng, source: "pin" };
  }
  // One key per report: a retry after a lost answer repeats it, so intake files it once.
  const body = reportBody();
  let pending = JSON.parse(sessionStorage.getItem(PENDING_KEY) || "null");
  if (!pending || JSON.stringify(pending.body) !== JSON.stringify(body)) {
    pending = { key: crypto.randomUUID(), body };
    sessionStorage.setItem(PENDING_KEY, JSON.stringify(pending));
  }
  state.sending = true;
  const button = $("#send");
  button.disabled = true;
  button.textContent = t("citizen.sending");
  try {
    const answer = await api("../v1/reports", {
      method: "POST",
      body: pending.body,
      headers: { "Idempotency-Key": pending.key },
    });
    if (answer.status === 202) {
      sessionStorage.removeItem(PENDING_KEY);
      state.report = { ...answer.body, category: body.category };
      localStorage.setItem(TRACKING_KEY, JSON.stringify(state.report));
      startTracking();
    } else if (answer.status === 422 && /110/.test(errorMessage(answer))) {
      formError(t("error.outsideArea"));
    } else if (answer.status === 429) {
      formError(t("error.rateLimited", { seconds: answer.headers.get("retry-after") || "60" }));
    } else {
      formError(t("error.generic", { message: errorMessage(answer) }));
    }
  } catch {
    formError(t("error.network"));
  } finally {
    state.sending = false;
    button.disabled = false;
    button.textContent = t("citizen.send");
  }
}

// --- tracking --------------------------------------------------------------------------

function headline(view) {
  const latest = [...view.timeline].reverse().find((s) => s.responder_kind);
  const kind = latest ? t(`kind.${latest.responder_kind}`) : "";
  if (view.status === "responder_assigned" && latest) {
    return latest.eta_s != null
      ? t("citizen.onTheWay", { kind, minutes: minutes(latest.eta_s) })
      : t("citizen.onTheWayNoEta", { kind });
  }
  if (view.status === "on_scene" && latest) return t("citizen.onScene", { kind });
  if (view.status === "cancelled") return t("citizen.cancelled");
  return t(`status.${view.status}`);
}

function renderTracking() {
  const report = state.report;
  $("#track-category").textContent = t("citizen.reportOf", {
    category: categoryName(state.config.categories, report.category),
  });
  $("#track-received").textContent = t("citizen.receivedAt", { time: formatTime(report.received_at) });
  const view = state.view || { status: report.status, timeline: [] };
  $("#track-headline").textContent = headline(view);
  $("#track-connection").textContent =
    state.live === null ? "" : t(state.live ? "citizen.live" : "citizen.reconnecting");
  const reached = new Map(view.timeline.map((s) => [s.step, s]));
  const rank = STEPS.indexOf(view.status);
  const steps = view.status === "cancelled" ? [...STEPS.filter((s) => reached.has(s)), "cancelled"] : STEPS;
  fill(
    $("#steps"),
    ...steps.map((step, i) => {
      const at = reached.get(step);
      const current = step === view.status;
      const done = !current && (at || (rank >= 0 && i < rank));
      const mode = current ? "current" : done ? "done" : "pending";
      return el(
        "li",
        { class: mode, ...(current && { "aria-current": "step" }) },
        el("span", { class: "mark", "aria-hidden": "true" }, current ? "●" : done ? "✓" : "○"),
        el("span", {}, `${t(`status.${step}`)} (${t(`step.${mode}`)})`),
        at ? el("time", { datetime: at.at }, formatTime(at.at)) : null,
      );
    }),
  );
  const final = view.status === "resolved" || view.status === "cancelled";
  show($("#cancel"), !final);
  show($("#new-report"), final);
  $("#cancel").textContent = t(state.cancelArmed ? "citizen.cancelConfirm" : "citizen.cancel");
}

function applyUpdate(update) {
  const view = state.view || { status: update.status, timeline: [] };
  if (!view.timeline.some((s) => s.step === update.entry.step && s.at === update.entry.at)) {
    view.timeline.push(update.entry);
  }
  view.status = update.status;
  state.view = view;
  renderTracking();
}

async function startTracking() {
  show($("#report"), false);
  show($("#tracking"), true);
  renderTracking();
  const { report_id: id, tracking_token: token } = state.report;
  const answer = await api(`../v1/reports/${id}`, { token }).catch(() => null);
  if (answer && answer.status === 200) {
    state.view = answer.body;
  } else if (answer && (answer.status === 401 || answer.status === 404)) {
    forgetReport();
    return;
  }
  renderTracking();
  if (state.events) state.events.close();
  const events = new EventSource(`../v1/reports/${id}/stream?access_token=${encodeURIComponent(token)}`);
  state.events = events;
  const connection = (live) => {
    state.live = live;
    renderTracking();
  };
  events.addEventListener("open", () => connection(true));
  events.addEventListener("error", () => connection(false));
  events.addEventListener("step", (message) => applyUpdate(JSON.parse(message.data)));
}

async function cancelReport() {
  if (!state.cancelArmed) {
    state.cancelArmed = true;
    renderTracking();
    return;
  }
  state.cancelArmed = false;
  const { report_id: id, tracking_token: token } = state.report;
  const answer = await api(`../v1/reports/${id}/cancel`, { method: "POST", token }).catch(() => null);
  const box = $("#track-error");
  if (answer && answer.ok) {
    state.view = answer.body;
    show(box, false);
  } else {
    box.textContent = answer ? t("error.generic", { message: errorMessage(answer) }) : t("error.network");
    show(box, true);
  }
  renderTracking();
}

function forgetReport() {
  if (state.events) state.events.close();
  state.events = null;
  state.report = null;
  state.view = null;
  localStorage.removeItem(TRACKING_KEY);
  $("#report").reset();
  chooseCategory(null);
  show($("#tracking"), false);
  show($("#report"), true);
}

// --- start -------------------------------------------------------------------------------

async function start() {
  state.config = await (await fetch("config.json")).json();
  setTimeZone(state.config.time_zone);
  await useLanguage(COMMON, preferredLanguage());
  translatePage();
  renderCategories();
  $("#lang").addEventListener("click", () => switchLanguage(otherLanguage()));
  $("#categories").addEventListener("click", (event) => {
    const button = event.target.closest(".category");
    if (button) chooseCategory(button.dataset.category);
  });
  $("#report").addEventListener("submit", send);
  $("#use-gps").addEventListener("click", locate);
  $("#cancel").addEventListener("click", cancelReport);
  $("#new-report").addEventListener("click", forgetReport);
  await setUpMap();
  const kept = JSON.parse(localStorage.getItem(TRACKING_KEY) || "null");
  if (kept && kept.report_id && kept.tracking_token) {
    state.report = kept;
    await startTracking();
  }
  locate();
  registerServiceWorker("sw.js");
  document.body.dataset.ready = currentLanguage();
}

start();
