// The responder app: pair the phone, go on duty, share position, answer offers, report
// progress. Offers arrive on the live stream (EventSource) and, in the background, by Web Push.
import { $, api, el, errorMessage, fill, registerServiceWorker, show } from "./common/dom.js";
import {
  categoryName, distance, formatDateTime, formatTime, minutes, otherLanguage, preferredLanguage,
  setTimeZone, t, translatePage, useLanguage,
} from "./common/i18n.js";

const COMMON = "common";
const SESSION_KEY = "qrd.responder.session";
const ACTIVE_KEY = "qrd.responder.active";
const MOVING_INTERVAL_MS = 5000;
const STILL_INTERVAL_MS = 30000;
const MOVED_M = 10;

const state = {
  config: null,
  session: null, // {responder_id, token}
  me: null, // the locator's ResponderPublic
  watch: null,
  lastFix: null, // {lat, lon, accuracy, at}
  lastSent: null, // {lat, lon, at}
  pinger: null,
  events: null,
  reconnect: null,
  offer: null, // {message, deadline}
  // Offers answered, lapsed or withdrawn: a stream replayed after a server-side loss
  // sends them again, and they must not come back on screen.
  settledOffers: new Set(),
  ticker: null,
  active: null, // {incident_id, category, address, location, unit_status}
  audio: null,
  swRegistration: null,
};

const url = {
  locator: (path) => `${state.config.locator_url}${path}`,
  dispatch: (path) => `${state.config.dispatch_url}${path}`,
  notification: (path) => `${state.config.notification_url}${path}`,
};

// --- language --------------------------------------------------------------------------------

async function switchLanguage(lang) {
  await useLanguage(COMMON, lang);
  translatePage();
  render();
}

// --- sign-in ---------------------------------------------------------------------------------

async function pair(code) {
  const box = $("#pair-error");
  show(box, false);
  const clean = String(code || "").replace(/[\s-]/g, "").toUpperCase();
  if (!clean) return;
  const answer = await api(url.locator(`/v1/pairing/${encodeURIComponent(clean)}`), { method: "POST" }).catch(() => null);
  if (answer && answer.status === 200) {
    state.session = { responder_id: answer.body.responder_id, token: answer.body.token };
    localStorage.setItem(SESSION_KEY, JSON.stringify(state.session));
    await signedIn();
    return;
  }
  box.textContent = !answer
    ? t("error.network")
    : answer.status === 429
      ? t("error.rateLimited", { seconds: answer.headers.get("retry-after") || "60" })
      : t("responder.codeRefused");
  show(box, true);
}

function signOut() {
  stopWatching();
  if (state.events) state.events.close();
  state.events = null;
  state.session = null;
  state.me = null;
  state.active = null;
  localStorage.removeItem(SESSION_KEY);
  localStorage.removeItem(ACTIVE_KEY);
  render();
}

async function loadMe() {
  const { responder_id: id, token } = state.session;
  const answer = await api(url.locator(`/v1/responders/${id}`), { token }).catch(() => null);
  if (answer && (answer.status === 401 || answer.status === 403 || answer.status === 404)) {
    signOut();
    return false;
  }
  if (answer && answer.ok) state.me = answer.body;
  return true;
}

async function signedIn() {
  if (!(await loadMe())) return;
  render();
  openStream();
  if (state.me && state.me.on_duty) startWatching();
  loadRecent();
  enablePush();
}

// --- duty and position ------------------------------------------------------------------------

async function toggleDuty() {
  wakeAudio();
  const wanted = !(state.me && state.me.on_duty);
  const { responder_id: id, token } = state.session;
  const answer = await api(url.locator(`/v1/responders/${id}/duty`), {
    method: "PUT",
    token,
    body: { on_duty: wanted },
  }).catch(() => null);
  if (answer && answer.ok) {
    state.me = answer.body;
    if (wanted) startWatching();
    else stopWatching();
  } else {
    $("#notice").textContent = answer ? t("error.generic", { message: errorMessage(answer) }) : t("error.network");
  }
  render();
}

function metresBetween(a, b) {
  const rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad;
  const dLon = (b.lon - a.lon) * rad;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * 6371000 * Math.asin(Math.sqrt(h));
}

async function sendFix() {
  const fix = state.lastFix;
  if (!fix || !state.session) return;
  state.lastSent = { lat: fix.lat, lon: fix.lon, at: Date.now() };
  const { responder_id: id, token } = state.session;
  const body = { lat: fix.lat, lon: fix.lon, recorded_at: new Date(fix.at).toISOString() };
  if (fix.accuracy) body.accuracy_m = Math.min(fix.accuracy, 10000);
  await api(url.locator(`/v1/responders/${id}/location`), { method: "POST", token, body }).catch(() => null);
}

/** About every 5 s while moving, every 30 s while still. */
function maybeSend() {
  const fix = state.lastFix;
  if (!fix) return;
  const last = state.lastSent;
  const now = Date.now();
  if (!last) return sendFix();
  const since = now - last.at;
  const moved = metresBetween(last, fix) >= MOVED_M;
  if ((moved && since >= MOVING_INTERVAL_MS) || since >= STILL_INTERVAL_MS) sendFix();
}

function startWatching() {
  if (state.watch !== null || !("geolocation" in navigator)) return;
  state.watch = navigator.geolocation.watchPosition(
    (position) => {
      const { latitude, longitude, accuracy } = position.coords;
      state.lastFix = { lat: latitude, lon: longitude, accuracy, at: position.timestamp || Date.now() };
      renderFix();
      maybeSend();
    },
    () => ($("#fix").textContent = t("responder.gpsDenied")),
    { enableHighAccuracy: true, maximumAge: 5000 },
  );
  // A still phone may report nothing new: repeat the last fix so the locator keeps us fresh.
  state.pinger = setInterval(maybeSend, MOVING_INTERVAL_MS);
}

function stopWatching() {
  if (state.watch !== null) navigator.geolocation.clearWatch(state.watch);
  state.watch = null;
  clearInterval(state.pinger);
  state.pinger = null;
}

// --- the live stream ---------------------------------------------------------------------------

function openStream() {
  if (!state.session) return;
  if (state.events && state.events.readyState !== EventSource.CLOSED) return;
  const { responder_id: id, token } = state.session;
  const events = new EventSource(
    url.notification(`/v1/responders/${id}/stream?access_token=${encodeURIComponent(token)}`),
  );
  state.events = events;
  // EventSource reconnects by itself after a drop and sends Last-Event-ID, so the
  // server replays what was missed; only a stream it gave up on is reopened here.
  events.addEventListener("open", () => renderStream(true));
  events.addEventListener("error", () => {
    renderStream(false);
    if (events.readyState === EventSource.CLOSED) {
      clearTimeout(state.reconnect);
      state.reconnect = setTimeout(openStream, 3000);
    }
  });
  events.addEventListener("offer", (m) => showOffer(JSON.parse(m.data)));
  events.addEventListener("offer_withdrawn", (m) => withdrawn(JSON.parse(m.data)));
  events.addEventListener("assignment", (m) => assigned(JSON.parse(m.data)));
  events.addEventListener("incident_closed", (m) => closed(JSON.parse(m.data)));
}

// --- offers ------------------------------------------------------------------------------------

function wakeAudio() {
  if (state.audio || !("AudioContext" in window)) return;
  try {
    state.audio = new AudioContext();
  } catch {
    state.audio = null;
  }
}

function beep() {
  const audio = state.audio;
  if (!audio) return;
  audio.resume().catch(() => {});
  for (let i = 0; i < 3; i += 1) {
    const tone = audio.createOscillator();
    const gain = audio.createGain();
    tone.frequency.value = 880;
    gain.gain.value = 0.25;
    tone.connect(gain).connect(audio.destination);
    const at = audio.currentTime + i * 0.35;
    tone.start(at);
    tone.stop(at + 0.2);
  }
}

function showOffer(message) {
  if (state.offer && state.offer.message.offer_id === message.offer_id) return;
  if (state.settledOffers.has(message.offer_id)) return;
  // The window is measured from the server's own clock, so a phone's wrong time cannot shorten it.
  const windowMs = Date.parse(message.expires_at) - Date.parse(message.occurred_at);
  const remaining = Math.min(windowMs, Date.parse(message.expires_at) - Date.now());
  const deadline = Date.now() + (Number.isFinite(windowMs) ? Math.max(0, windowMs) : remaining);
  state.offer = { message, deadline, windowMs };
  beep();
  if ("vibrate" in navigator) navigator.vibrate([300, 100, 300, 100, 300]);
  renderOffer();
  show($("#offer"), true);
  $("#accept").focus();
  clearInterval(state.ticker);
  state.ticker = setInterval(tick, 250);
  tick();
}

function tick() {
  if (!state.offer) return;
  const left = Math.max(0, state.offer.deadline - Date.now());
  $("#offer-countdown").textContent = t("responder.countdown", { seconds: Math.ceil(left / 1000) });
  $("#offer-progress").value = state.offer.windowMs > 0 ? (100 * left) / state.offer.windowMs : 0;
  if (left <= 0) closeOffer(t("responder.offerExpired"));
}

function closeOffer(notice) {
  if (state.offer) state.settledOffers.add(state.offer.message.offer_id);
  clearInterval(state.ticker);
  state.ticker = null;
  state.offer = null;
  show($("#offer"), false);
  show($("#offer-error"), false);
  if (notice) $("#notice").textContent = notice;
}

function withdrawn(message) {
  state.settledOffers.add(message.offer_id);
  if (state.offer && state.offer.message.offer_id === message.offer_id) {
    closeOffer(t("responder.offerGone", { reason: message.reason || "" }));
  }
}

async function answerOffer(verb) {
  if (!state.offer) return;
  const message = state.offer.message;
  const answer = await api(url.dispatch(`/v1/offers/${message.offer_id}/${verb}`), {
    method: "POST",
    token: state.session.token,
  }).catch(() => null);
  if (answer && answer.ok) {
    closeOffer("");
    if (verb === "accept") {
      setActive({
        incident_id: message.incident_id,
        category: message.category,
        address: message.address,
        location: message.location,
        unit_status: "assigned",
      });
    }
    return;
  }
  if (answer && answer.status === 409) {
    closeOffer(t("responder.offerExpired"));
    return;
  }
  const box = $("#offer-error");
  box.textContent = answer ? t("error.generic", { message: errorMessage(answer) }) : t("error.network");
  show(box, true);
}

// --- the incident in hand -------------------------------------------------------------------------

function setActive(active) {
  state.active = active;
  if (active) localStorage.setItem(ACTIVE_KEY, JSON.stringify(active));
  else localStorage.removeItem(ACTIVE_KEY);
  render();
  loadRecent();
}

function assigned(message) {
  setActive({
    incident_id: message.incident_id,
    category: message.category,
    address: message.address,
    location: message.location,
    unit_status: "assigned",
  });
}

function closed(message) {
  if (state.active && state.active.incident_id === message.incident_id) {
    setActive(null);
    $("#notice").textContent = t("responder.closed", { reason: message.reason || "" });
  }
}

function navigationLinks(location, label) {
  const { lat, lon } = location;
  const name = encodeURIComponent(label);
  return [
    ["responder.navGeo", `geo:${lat},${lon}`],
    ["responder.navAmap", `https://uri.amap.com/marker?position=${lon},${lat}&name=${name}&coordinate=wgs84&callnative=1`],
    ["responder.navBaidu", `https://api.map.baidu.com/marker?location=${lat},${lon}&title=${name}&content=${name}&output=html&coord_type=wgs84&src=qrd.responder`],
    ["responder.navApple", `https://maps.apple.com/?daddr=${lat},${lon}&dirflg=d`],
    ["responder.navGoogle", `https://www.google.com/maps/dir/?api=1&destination=${lat},${lon}`],
  ];
}

async function reportStatus(status) {
  const active = state.active;
  if (!active) return;
  const { responder_id: id, token } = state.session;
  const answer = await api(url.dispatch(`/v1/incidents/${active.incident_id}/units/${id}/status`), {
    method: "POST",
    token,
    body: { status },
  }).catch(() => null);
  const box = $("#active-error");
  if (answer && answer.ok) {
    show(box, false);
    if (status === "cleared") {
      setActive(null);
    } else {
      setActive({ ...active, unit_status: status });
    }
    return;
  }
  box.textContent = answer ? t("error.generic", { message: errorMessage(answer) }) : t("error.network");
  show(box, true);
}

async function loadRecent() {
  if (!state.session) return;
  const { responder_id: id, token } = state.session;
  const answer = await api(url.dispatch(`/v1/responders/${id}/incidents?limit=10`), { token }).catch(() => null);
  state.recent = answer && answer.ok ? answer.body : state.recent || [];
  renderRecent();
}

// --- Web Push ------------------------------------------------------------------------------------

function keyBytes(base64url) {
  const padded = base64url.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((base64url.length + 3) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

async function enablePush() {
  const line = $("#push-state");
  try {
    if (!state.swRegistration || !("PushManager" in window) || !("Notification" in window)) throw new Error("no push");
    const key = await api(url.notification("/v1/push/vapid-public-key"));
    if (!key.ok) throw new Error("no key");
    if ((await Notification.requestPermission()) !== "granted") throw new Error("denied");
    const subscription = await state.swRegistration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: keyBytes(key.body.public_key),
    });
    const { responder_id: id, token } = state.session;
    const saved = await api(url.notification(`/v1/responders/${id}/push-subscriptions`), {
      method: "POST",
      token,
      body: subscription.toJSON(),
    });
    if (!saved.ok) throw new Error("refused");
    line.dataset.state = "on";
  } catch {
    line.dataset.state = "off";
  }
  renderPush();
}

// --- rendering -----------------------------------------------------------------------------------

function renderFix() {
  const fix = state.lastFix;
  $("#fix").textContent = fix
    ? t("responder.lastFix", { time: formatTime(new Date(fix.at)), accuracy: Math.round(fix.accuracy || 0) })
    : t("responder.noFix");
}

function renderStream(live) {
  const line = $("#stream-state");
  line.dataset.live = String(live);
  line.className = live ? "status-ok" : "status-warn";
  line.textContent = t(live ? "responder.streamLive" : "responder.streamDown");
}

function renderPush() {
  const line = $("#push-state");
  if (!line.dataset.state) return;
  line.textContent = t(line.dataset.state === "on" ? "responder.pushOn" : "responder.pushOff");
}

function renderOffer() {
  const message = state.offer.message;
  const categories = state.config.categories;
  $("#offer-category").textContent = categoryName(categories, message.category);
  $("#offer-distance").textContent = message.distance_m != null ? distance(message.distance_m) : "–";
  $("#offer-eta").textContent = message.eta_s != null ? minutes(message.eta_s) : "–";
  $("#offer-address").textContent = message.address || t("responder.noAddress");
  const described = Boolean(message.description);
  $("#offer-description").textContent = message.description || "";
  show($("#offer-description"), described);
  show($("#offer-description-label"), described);
  tick();
}

function renderActive() {
  const active = state.active;
  show($("#active"), Boolean(active));
  if (!active) return;
  const label = categoryName(state.config.categories, active.category);
  $("#active-what").textContent = label;
  $("#active-address").textContent = active.address || t("responder.noAddress");
  const links = active.location ? navigationLinks(active.location, active.address || label) : [];
  fill(
    $("#nav-links"),
    ...links.map(([key, href]) =>
      el("li", {}, el("a", { class: "button", href, target: "_blank", rel: "noopener noreferrer", "data-nav": key.split(".")[1] }, t(key))),
    ),
  );
  $("#unit-status").textContent = t("responder.unitStatus", { status: t(`unit.${active.unit_status}`) });
  for (const button of document.querySelectorAll("[data-status]")) {
    button.setAttribute("aria-pressed", String(button.dataset.status === active.unit_status));
  }
}

function renderRecent() {
  const items = state.recent || [];
  const categories = state.config.categories;
  fill(
    $("#recent"),
    ...(items.length
      ? items.map((i) =>
          el("li", {}, t("responder.recentItem", {
            time: formatDateTime(i.assigned_at),
            category: categoryName(categories, i.category),
            status: t(`unit.${i.unit_status}`),
          })),
        )
      : [el("li", {}, t("responder.noRecent"))]),
  );
}

function render() {
  const signedInNow = Boolean(state.session);
  show($("#sign-in"), !signedInNow);
  show($("#home"), signedInNow);
  if (!signedInNow) return;
  const me = state.me;
  $("#who").textContent = me ? t("responder.hello", { name: me.name, kind: t(`kind.${me.kind}`) }) : "";
  const duty = $("#duty");
  const on = Boolean(me && me.on_duty);
  duty.setAttribute("aria-checked", String(on));
  duty.textContent = t(on ? "responder.dutyOnSymbol" : "responder.dutyOffSymbol");
  renderFix();
  renderStream(state.events ? state.events.readyState === EventSource.OPEN : false);
  renderPush();
  renderActive();
  renderRecent();
  if (state.offer) renderOffer();
  if (!$("#notice").textContent && !state.active) $("#notice").textContent = t("responder.waiting");
}

// --- start ---------------------------------------------------------------------------------------

async function start() {
  state.config = await (await fetch("config.json")).json();
  setTimeZone(state.config.time_zone);
  await useLanguage(COMMON, preferredLanguage());
  translatePage();
  $("#lang").addEventListener("click", () => switchLanguage(otherLanguage()));
  $("#pair-form").addEventListener("submit", (event) => {
    event.preventDefault();
    wakeAudio();
    pair($("#code").value);
  });
  $("#duty").addEventListener("click", toggleDuty);
  $("#accept").addEventListener("click", () => answerOffer("accept"));
  $("#decline").addEventListener("click", () => answerOffer("decline"));
  $("#sign-out").addEventListener("click", signOut);
  for (const button of document.querySelectorAll("[data-status]")) {
    button.addEventListener("click", () => reportStatus(button.dataset.status));
  }
  document.addEventListener("pointerdown", wakeAudio, { once: true });
  window.addEventListener("online", openStream);
  state.swRegistration = await registerServiceWorker("sw.js");
  state.session = JSON.parse(localStorage.getItem(SESSION_KEY) || "null");
  state.active = JSON.parse(localStorage.getItem(ACTIVE_KEY) || "null");
  const code = new URLSearchParams(location.hash.slice(1)).get("code");
  if (code) {
    history.replaceState(null, "", location.pathname);
    $("#code").value = code;
    await pair(code);
  } else if (state.session) {
    await signedIn();
  }
  render();
  document.body.dataset.ready = "true";
}

start();
