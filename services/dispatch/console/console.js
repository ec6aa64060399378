/* Dispatcher console: the live queue, the map, incident detail and actions.
 *
 * Plain browser JavaScript with no build step. It talks only to dispatch with the
 * dispatcher's token: the public API (docs/contract.md) and the two read-only helpers
 * under /console/api, and it refreshes whenever the queue stream reports a change.
 *
 * Everything a user typed (a report's category and address above all) reaches the
 * page as text: through el()/textContent, or as DOM nodes for Leaflet. Nothing here
 * writes innerHTML, and the page's Content-Security-Policy forbids inline script.
 */
"use strict";

// A pending clock turns amber this close to its deadline (a quarter of a short target).
const WARNING_S = 20;
const TOKEN_KEY = "qrd.dispatcher.token";
const DEFAULT_STAGES = ["T1", "T3", "T5"];
const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  config: { tile_url: "", tile_attribution: "", center: [23.02, 113.75], zoom: 13 },
  queue: [],
  selected: null,
  detail: null,
  candidates: [],
  candidatesError: null,
  responders: null,
  alerts: new Map(), // key -> {node, incidentId}
  stream: null,
  timers: [],
  map: null,
  layers: null,
  fitted: false,
  seenOnMap: new Set(),
  names: new Map(), // responder id -> name, from the team list
  serviceArea: null,
  grids: null,
};

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    // Handlers are added with addEventListener, never as attributes built from data.
    if (/^on/i.test(key) || key === "style") throw new Error(`el(): refused attribute ${key}`);
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return node;
}

/* For the one Leaflet API that only takes HTML (the attribution control). */
const escapeHtml = (s) => String(s || "").replace(/[&<>"']/g,
  (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

/* --- API ------------------------------------------------------------------ */

class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || "error";
  }
}

async function call(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: {
      authorization: `Bearer ${state.token}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

const api = {
  queue: () => call("GET", "/v1/incidents?status=open"),
  incident: (id) => call("GET", `/v1/incidents/${id}`),
  candidates: (id) => call("GET", `/console/api/incidents/${id}/candidates`),
  responders: () => call("GET", "/console/api/responders"),
  team: () => call("GET", "/console/api/team"),
  assign: (id, responderId) =>
    call("POST", `/v1/incidents/${id}/assign`, responderId ? { responder_id: responderId } : {}),
  resolve: (id) => call("POST", `/v1/incidents/${id}/resolve`),
  cancel: (id) => call("POST", `/v1/incidents/${id}/cancel`),
  merge: (id, into) => call("POST", `/v1/incidents/${id}/merge`, { into }),
};

/* --- words, times and milestones ------------------------------------------ */

const words = (s) => String(s || "").replaceAll("_", " ");
const shortId = (id) => (id ? String(id).slice(0, 8) : "—");
/* Responders by name (or call sign); an id is shown only for someone not (yet) listed. */
const responderName = (id) => state.names.get(String(id)) || t("responder.unknown", { id: shortId(id) });
const kindName = (kind) => t(`kind.${kind}`);
/* A plan's stage label ("respond") in the page's language, if the catalogue knows it. */
const stageLabel = (label) => (t(`stage.${label}`) === `stage.${label}` ? label : t(`stage.${label}`));
const statusName = (status) => (status ? t(`status.${status}`) : t("status.unknown"));

function fmtDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, "0")}`;
}

const ageSeconds = (incident) => (Date.now() - Date.parse(incident.received_at)) / 1000;

/* The server says met or breached; a pending stage is judged against its deadline here,
   so a clock turns red the moment the deadline passes, even between updates. */
function stageView(milestone) {
  if (!milestone) return { cls: "na", text: "—", label: t("clock.not_in_plan") };
  if (milestone.state === "met") {
    const took = milestone.seconds == null ? "" : ` ${Math.round(milestone.seconds)}s`;
    return { cls: "met", text: t("clock.met", { took }), label: t("clock.met_label") };
  }
  const left = (Date.parse(milestone.due_at) - Date.now()) / 1000;
  if (milestone.state === "breached" || left <= 0) {
    return { cls: "breached", text: t("clock.breached", { over: fmtDuration(-left) }),
      label: t("clock.breached_label") };
  }
  if (left <= Math.min(WARNING_S, milestone.target_s / 4)) {
    return { cls: "warning", text: t("clock.left_warning", { left: fmtDuration(left) }),
      label: t("clock.warning_label") };
  }
  return { cls: "pending", text: t("clock.left", { left: fmtDuration(left) }),
    label: t("clock.pending_label") };
}

function place(incident) {
  const where = incident.address || `${incident.lat.toFixed(4)}, ${incident.lon.toFixed(4)}`;
  return incident.grid ? `${where} · ${incident.grid}` : where;
}

const isBreached = (incident) =>
  (incident.milestones || []).some((m) => stageView(m).cls === "breached");

/* The queue's clock columns follow the plans' stage names (T1/T3/T5 by default). */
function stageNames() {
  const first = state.queue.find((i) => (i.milestones || []).length);
  return first ? first.milestones.map((m) => m.stage).slice(0, 3) : DEFAULT_STAGES;
}

/* --- rendering: queue ------------------------------------------------------ */

function renderQueueHead() {
  const names = stageNames();
  const labels = {};
  for (const i of state.queue) for (const m of i.milestones || []) labels[m.stage] = m.label;
  const head = $("#queue thead tr");
  head.replaceChildren(
    el("th", { scope: "col", text: t("queue.category") }),
    el("th", { scope: "col", text: t("queue.place") }),
    el("th", { scope: "col", text: t("queue.age") }),
    ...names.map((n) => el("th", { scope: "col", class: "clock-col",
      text: labels[n] ? `${n} ${stageLabel(labels[n])}` : n })),
  );
}

function clockCell(incident, stage) {
  const milestone = (incident.milestones || []).find((m) => m.stage === stage);
  const view = stageView(milestone);
  return el("td", {}, el("span", {
    class: `clock ${view.cls}`, "data-stage": stage, text: view.text,
    "aria-label": `${stage} ${view.label}: ${view.text}`,
  }));
}

function renderQueue() {
  renderQueueHead();
  const body = $("#queue tbody");
  const focusedId = document.activeElement && document.activeElement.closest
    && document.activeElement.closest("#queue") ? document.activeElement.dataset.id : null;
  const names = stageNames();
  body.replaceChildren();
  for (const incident of state.queue) {
    const flags = [];
    if (incident.no_responder) flags.push(el("span", { class: "flag nra", text: t("queue.no_responder_flag") }));
    const units = t("queue.units", { count: incident.unit_count, required: incident.units_required })
      + (incident.open_offer_count ? t("queue.offered", { count: incident.open_offer_count }) : "");
    const row = el("tr", {
      tabindex: "0",
      "data-id": incident.incident_id,
      "aria-selected": String(incident.incident_id === state.selected),
      class: [incident.no_responder ? "no-responder" : "", isBreached(incident) ? "breached" : ""]
        .join(" ").trim(),
    });
    row.append(
      el("td", { class: "category" }, el("strong", { text: categoryName(incident.category) }),
        el("span", { class: "sub", text: ` P${incident.priority} · ${units}` }), ...flags),
      el("td", { class: "place", text: place(incident) }),
      el("td", { class: "age", text: fmtDuration(ageSeconds(incident)) }),
      ...names.map((stage) => clockCell(incident, stage)),
    );
    row.addEventListener("click", () => select(incident.incident_id));
    row.addEventListener("keydown", onRowKey);
    body.append(row);
    if (incident.incident_id === focusedId) row.focus();
  }
  $("#queue-count").textContent = `(${state.queue.length})`;
  document.dispatchEvent(new CustomEvent("console:queue"));
  $("#queue-empty").hidden = state.queue.length > 0;
}

function onRowKey(event) {
  const row = event.currentTarget;
  if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    select(row.dataset.id).then(() => $("#detail").focus());
  } else if (event.key === "ArrowDown" && row.nextElementSibling) {
    event.preventDefault();
    row.nextElementSibling.focus();
  } else if (event.key === "ArrowUp" && row.previousElementSibling) {
    event.preventDefault();
    row.previousElementSibling.focus();
  } else if (event.key === "Home" || event.key === "End") {
    event.preventDefault();
    const rows = document.querySelectorAll("#queue tbody tr");
    if (rows.length) rows[event.key === "Home" ? 0 : rows.length - 1].focus();
  }
}

function focusQueue() {
  const rows = [...document.querySelectorAll("#queue tbody tr")];
  const target = rows.find((r) => r.dataset.id === state.selected) || rows[0];
  if (target) target.focus();
}

/* Clocks tick every second without asking the server. */
function tick() {
  for (const row of document.querySelectorAll("#queue tbody tr")) {
    const incident = state.queue.find((i) => i.incident_id === row.dataset.id);
    if (!incident) continue;
    row.querySelector(".age").textContent = fmtDuration(ageSeconds(incident));
    for (const clock of row.querySelectorAll(".clock")) {
      const stage = clock.dataset.stage;
      const view = stageView((incident.milestones || []).find((m) => m.stage === stage));
      clock.className = `clock ${view.cls}`;
      clock.textContent = view.text;
      clock.setAttribute("aria-label", `${stage} ${view.label}: ${view.text}`);
      if (view.cls === "breached") {
        row.classList.add("breached");
        raiseAlert(`breach:${incident.incident_id}:${stage}`, incident.incident_id,
          t("alert.breached", { stage, category: categoryName(incident.category),
            place: place(incident) }), "breach");
      }
    }
  }
  if (state.detail) {
    renderMilestones(state.detail);
    const age = $("#detail-age");
    if (age) age.textContent = fmtDuration(ageSeconds(state.detail));
  }
}

/* --- alerts ---------------------------------------------------------------- */

function raiseAlert(key, incidentId, message, kind) {
  if (state.alerts.has(key)) return;
  const node = el("li", { class: `alert ${kind} flash` });
  const open = el("button", { type: "button", class: "alert-open", text: message,
    title: t("alert.open") });
  open.addEventListener("click", () => select(incidentId).then(() => $("#detail").focus()));
  const dismiss = el("button", { type: "button", class: "alert-dismiss", text: "✕",
    "aria-label": t("alert.dismiss", { message }) });
  dismiss.addEventListener("click", () => { node.remove(); });
  node.append(open, dismiss);
  $("#alerts").prepend(node);
  state.alerts.set(key, { node, incidentId });
  renderAlertCount();
  if ($("#sound-on").checked) beep(kind === "breach" ? 660 : 880);
}

/* An alert stays until its incident leaves the queue or its condition clears. */
function pruneAlerts() {
  const open = new Map(state.queue.map((i) => [i.incident_id, i]));
  for (const [key, alert] of state.alerts) {
    const incident = open.get(alert.incidentId);
    const stale = !incident || (key.startsWith("nra:") && !incident.no_responder);
    if (stale) {
      alert.node.remove();
      state.alerts.delete(key);
    }
  }
  renderAlertCount();
}

function renderAlertCount() {
  const shown = $("#alerts").children.length;
  $("#alerts").hidden = shown === 0;
  $("#alert-count").textContent = shown ? t(shown > 1 ? "alert.count_many" : "alert.count_one",
    { count: shown }) : "";
}

function beep(frequency) {
  try {
    const ctx = new AudioContext();
    const osc = ctx.createOscillator();
    osc.frequency.value = frequency;
    osc.connect(ctx.destination);
    osc.start();
    osc.stop(ctx.currentTime + 0.25);
  } catch (_) { /* audio is a courtesy, never a requirement */ }
}

/* --- rendering: detail ------------------------------------------------------ */

function renderMilestones(incident) {
  const list = $("#detail-milestones");
  list.replaceChildren();
  for (const milestone of incident.milestones || []) {
    const view = stageView(milestone);
    list.append(el("li", {}, el("span", {
      class: `clock ${view.cls}`, "data-stage": milestone.stage,
      text: `${milestone.stage} ${stageLabel(milestone.label)} (${milestone.target_s}s): ${view.text}`,
    })));
  }
}

function rows(tbody, items, cells, columns) {
  const target = $(tbody);
  target.replaceChildren();
  if (!items.length) {
    target.append(el("tr", {}, el("td", { colspan: String(columns), class: "empty", text: t("detail.none") })));
    return;
  }
  for (const item of items) {
    target.append(el("tr", {}, ...cells(item).map((c) => (c instanceof Node ? el("td", {}, c)
      : el("td", { text: c })))));
  }
}

const OFFER_OUTCOMES = ["pending", "accepted", "declined", "expired", "withdrawn"];
const UNIT_STATUSES = ["assigned", "en_route", "on_scene", "cleared"];
const offerOutcome = (s) => (OFFER_OUTCOMES.includes(s) ? t(`offer.${s}`) : words(s));
const unitStatus = (s) => (UNIT_STATUSES.includes(s) ? t(`unit.${s}`) : words(s));

/* "ResponderOffered" -> "Responder offered", with the facts a dispatcher cares about. */
function describe(entry) {
  const spaced = entry.type.replace(/([a-z])([A-Z])/g, "$1 $2");
  const fallback = `${spaced.charAt(0)}${spaced.slice(1).toLowerCase()}`;
  const key = `event.${entry.type}`;
  const what = t(key) === key ? fallback : t(key);
  const d = entry.detail || {};
  const facts = [];
  if (d.stage) facts.push(d.stage);
  if (d.kind) facts.push(kindName(d.kind));
  if (d.status) facts.push(words(d.status));
  if (d.responder_id) facts.push(responderName(d.responder_id));
  if (d.eta_s != null) facts.push(t("fact.eta", { eta: fmtDuration(d.eta_s) }));
  if (d.seconds != null) facts.push(`${Math.round(d.seconds)}s`);
  if (d.reason) facts.push(words(d.reason));
  if (d.into) facts.push(t("fact.into", { id: shortId(d.into) }));
  if (d.report_id && !d.responder_id) facts.push(t("fact.report", { id: shortId(d.report_id) }));
  return `${fmtTime(entry.at)} · ${what}` + (facts.length ? ` · ${facts.join(", ")}` : "");
}

function renderDetail() {
  queueMicrotask(() => document.dispatchEvent(new CustomEvent("console:detail")));  // trace.js
  const incident = state.detail;
  $("#detail-empty").hidden = Boolean(incident);
  $("#detail-body").hidden = !incident;
  if (!incident) {
    $("#detail-title").textContent = t("detail.title");
    return;
  }
  $("#detail-title").textContent = t("detail.title_of", { category: categoryName(incident.category),
    id: shortId(incident.incident_id) });
  const summary = $("#detail-summary");
  summary.replaceChildren();
  const status = incident.status === "open" ? t("detail.status_open")
    : t("detail.status_closed", { status: words(incident.status) });
  const facts = [
    ["status", status + (incident.no_responder ? t("detail.no_responder") : "")
      + (incident.merged_into ? t("detail.merged_into", { id: shortId(incident.merged_into) }) : "")],
    ["place", place(incident)],
    ["office", [incident.office, incident.zone_tier && t(`tier.${incident.zone_tier}`)]
      .filter(Boolean).join(" · ") || "—"],
    ["received", fmtTime(incident.received_at)],
    ["age", fmtDuration(ageSeconds(incident))],
    ["units", t("detail.units_of", { count: incident.unit_count, required: incident.units_required,
      priority: incident.priority })],
  ];
  for (const [k, v] of facts) {
    summary.append(el("dt", { text: t(`detail.${k}`) }),
      el("dd", { text: v, id: k === "age" ? "detail-age" : null }));
  }
  renderMilestones(incident);
  const open = incident.status === "open";
  for (const button of document.querySelectorAll("[data-action]")) button.disabled = !open;
  rows("#detail-candidates", state.candidates, (c) => [responderName(c.responder_id),
    kindName(c.kind), `${Math.round(c.distance_m)} m`, fmtDuration(c.eta_s), statusName(c.status)], 5);
  if (state.candidatesError) {
    $("#detail-candidates").replaceChildren(el("tr", {}, el("td", { colspan: "5", class: "failed",
      text: t("detail.candidates_failed", { error: state.candidatesError }) })));
  }
  rows("#detail-offers", incident.offers || [], (o) => [responderName(o.responder_id),
    kindName(o.kind), fmtDuration(o.eta_s), offerOutcome(o.status),
    fmtTime(o.answered_at || o.offered_at)], 5);
  rows("#detail-units", incident.units || [], (u) => [responderName(u.responder_id),
    kindName(u.kind), unitStatus(u.status), u.eta_s == null ? "—" : fmtDuration(u.eta_s)], 4);
  $("#detail-reports").replaceChildren(...(incident.reports || []).map((r) => el("li", {
    text: t("detail.report_line", { at: fmtTime(r.received_at), id: shortId(r.report_id),
      where: `${r.lat.toFixed(4)}, ${r.lon.toFixed(4)}` })
      + (r.cancelled_at ? t("detail.report_cancelled", { at: fmtTime(r.cancelled_at) }) : ""),
  })));
  $("#detail-timeline").replaceChildren(...(incident.timeline || []).map((t) =>
    el("li", { text: describe(t) })));
  const who = $("#assign-who");
  const chosen = who.value;
  who.replaceChildren(...state.candidates.map((c) => el("option", { value: c.responder_id,
    text: t("detail.candidate_option", { name: responderName(c.responder_id), kind: kindName(c.kind),
      eta: fmtDuration(c.eta_s) }) })));
  if (!state.candidates.length) who.append(el("option", { value: "", text: t("detail.no_candidate") }));
  if ([...who.options].some((o) => o.value === chosen)) who.value = chosen;
  const into = $("#merge-into");
  const target = into.value;
  into.replaceChildren(...state.queue.filter((i) => i.incident_id !== incident.incident_id)
    .map((i) => el("option", { value: i.incident_id,
      text: `${categoryName(i.category)} · ${place(i)} · ${shortId(i.incident_id)}` })));
  if (!into.options.length) into.append(el("option", { value: "", text: t("detail.no_other") }));
  if ([...into.options].some((o) => o.value === target)) into.value = target;
}

/* --- map ------------------------------------------------------------------ */

/* Shape says the kind and fill says free (solid) or busy (hollow), so colour is a bonus. */
const KIND_SYMBOL = {
  patrol: ["●", "○"],
  auxiliary: ["▲", "△"],
  volunteer: ["◆", "◇"],
};

async function initMap() {
  if (!window.L) {
    $("#map").replaceChildren(el("p", { class: "empty", text: t("map.no_library") }));
    return;
  }
  state.map = L.map("map", { keyboard: true, zoomSnap: 0.25,
    attributionControl: Boolean(state.config.tile_url) })
    .setView(state.config.center, state.config.zoom);
  // The panel's size settles after the queue and the detail pane fill in; without this
  // Leaflet keeps the first size, and markers near an edge end up outside the map.
  new ResizeObserver(() => state.map.invalidateSize()).observe($("#map"));
  state.gridPane = state.map.createPane("grids");
  state.gridPane.style.zIndex = "350"; // above tiles, below markers (a CSSOM write, not markup)
  if (state.config.tile_url) {
    // Leaflet's attribution control takes HTML; the configured attribution is shown as text.
    L.tileLayer(state.config.tile_url, {
      attribution: escapeHtml(state.config.tile_attribution), maxZoom: 19,
    }).addTo(state.map);
  } else {
    $("#map").classList.add("no-tiles");
    const note = L.control({ position: "bottomleft" });
    note.onAdd = () => el("div", { class: "map-note", text: t("map.no_tiles") });
    note.addTo(state.map);
  }
  L.control.scale({ imperial: false }).addTo(state.map);
  state.layers = {
    incidents: L.layerGroup().addTo(state.map),
    responders: L.layerGroup().addTo(state.map),
  };
  await loadGrids();
}

/* The configured grids are the base layer: outlined, labelled with name and zone tier
   (tier told by outline pattern and text, not by colour alone). The map opens on them. */
async function loadGrids() {
  let geojson;
  try {
    const response = await fetch("/console/grids.geojson");
    if (!response.ok) throw new Error(String(response.status));
    geojson = await response.json();
  } catch (_) {
    return; // no grids: the configured centre and zoom stay
  }
  const layer = L.geoJSON(geojson, {
    pane: "grids",
    interactive: false,
    style: (feature) => ({ className: `grid-area tier-${(feature.properties || {}).zone_tier || "other"}` }),
  }).addTo(state.map);
  state.grids = layer;
  const labels = L.layerGroup().addTo(state.map);
  layer.eachLayer((area) => {
    const props = (area.feature && area.feature.properties) || {};
    const tier = props.zone_tier ? t(`tier.${props.zone_tier}`) : "";
    const label = el("span", { class: "grid-label" }, el("strong", { text: String(props.grid || "") }),
      tier ? el("span", { class: "grid-tier", text: tier }) : null);
    L.marker(area.getBounds().getCenter(), {
      icon: L.divIcon({ className: "grid-label-icon", html: label, iconSize: null }),
      interactive: false, keyboard: false, pane: "grids",
    }).addTo(labels);
  });
  const bounds = layer.getBounds();
  if (bounds.isValid()) {
    state.serviceArea = bounds;
    if (!state.fitted) state.map.fitBounds(bounds, { padding: [10, 10] });
  }
}

/* Leaflet puts a string given as an icon's html or a tooltip's content into innerHTML,
   so both get DOM nodes holding text: a citizen's address can never become markup. */
function marker(lat, lon, cls, symbol, label) {
  // Markers grow with the page's font size, so they stay legible on a wall display.
  const size = Math.round(1.6 * parseFloat(getComputedStyle(document.documentElement).fontSize));
  return L.marker([lat, lon], {
    icon: L.divIcon({ className: `map-marker ${cls}`, html: el("span", { text: symbol }),
      iconSize: [size, size] }),
    title: label, alt: label, keyboard: true,
  }).bindTooltip(el("span", { class: "map-tooltip", text: label }));
}

function renderMap() {
  if (!state.map) return;
  const points = [];
  state.layers.incidents.clearLayers();
  for (const incident of state.queue) {
    const breached = isBreached(incident);
    const symbol = breached ? "✖" : incident.no_responder ? "!" : "■";
    const label = `${categoryName(incident.category)} · ${place(incident)}`
      + (breached ? t("map.breached_suffix") : "") + (incident.no_responder ? t("map.nra_suffix") : "");
    marker(incident.lat, incident.lon,
      `incident${breached ? " breached" : ""}${incident.incident_id === state.selected ? " selected" : ""}`,
      symbol, label)
      .on("click", () => select(incident.incident_id))
      .addTo(state.layers.incidents);
    points.push([incident.lat, incident.lon]);
  }
  state.layers.responders.clearLayers();
  for (const r of state.responders || []) {
    if (r.lat == null || r.lon == null) continue;
    const free = r.status === "free";
    marker(r.lat, r.lon, `responder ${r.kind} ${free ? "free" : "busy"}`,
      (KIND_SYMBOL[r.kind] || KIND_SYMBOL.volunteer)[free ? 0 : 1],
      `${r.name || responderName(r.responder_id)} · ${kindName(r.kind)} · ${statusName(r.status)}`)
      .addTo(state.layers.responders);
  }
  $("#map-responders").textContent = state.responders === null
    ? t("map.positions_unavailable") : t("map.on_duty", { count: state.responders.length });
  // The map opens on the service area (the grids), not on every responder ever seen.
  // A new incident off-screen brings the incidents into view; otherwise the view stays
  // where the dispatcher put it.
  const fresh = state.queue.some((i) => !state.seenOnMap.has(i.incident_id)
    && !state.map.getBounds().contains([i.lat, i.lon]));
  if (!state.fitted && state.serviceArea) {
    state.fitted = true;
  }
  if (points.length && fresh && state.fitted) {
    const view = state.serviceArea ? L.latLngBounds(points).extend(state.serviceArea) : points;
    state.map.fitBounds(view, { padding: [20, 20], maxZoom: 16 });
  } else if (points.length && !state.fitted) {
    state.map.fitBounds(points, { padding: [40, 40], maxZoom: 16 });
    state.fitted = true;
  }
  for (const incident of state.queue) state.seenOnMap.add(incident.incident_id);
}

/* --- data flow ------------------------------------------------------------ */

async function select(id) {
  state.selected = id;
  for (const row of document.querySelectorAll("#queue tbody tr")) {
    row.setAttribute("aria-selected", String(row.dataset.id === id));
  }
  $("#action-result").textContent = "";
  $("#action-result").className = "action-result";
  await loadDetail();
  renderMap();
}

async function loadDetail() {
  if (!state.selected) { state.detail = null; renderDetail(); return; }
  try {
    const [detail, candidates] = await Promise.all([
      api.incident(state.selected),
      api.candidates(state.selected).then((c) => ({ ok: c }), (error) => ({ error })),
    ]);
    state.detail = detail;
    state.candidates = candidates.ok || [];
    state.candidatesError = candidates.error ? candidates.error.message : null;
  } catch (error) {
    if (error.status !== 404) throw error;
    state.selected = null;
    state.detail = null;
  }
  renderDetail();
}

async function refresh() {
  state.queue = await api.queue();
  const team = await api.team().catch(() => null);
  if (team) for (const r of team) state.names.set(String(r.responder_id), r.name);
  for (const incident of state.queue) {
    if (incident.no_responder) {
      raiseAlert(`nra:${incident.incident_id}`, incident.incident_id,
        t("alert.nra", { category: categoryName(incident.category), place: place(incident) }), "nra");
    }
  }
  pruneAlerts();
  renderQueue();
  tick();
  state.responders = team ? team.filter((r) => r.on_duty) : null;
  renderMap();
  if (state.selected) await loadDetail();
  $("#updated").textContent = t("top.updated", { at: fmtTime(new Date().toISOString()) });
}

let refreshing = null;
let refreshAgain = false;

/* Changes arrive in bursts; coalesce them and never run two refreshes at once. */
function scheduleRefresh() {
  if (refreshing) { refreshAgain = true; return; }
  refreshing = setTimeout(async () => {
    try { await refresh(); } catch (error) { showFailure(error); }
    refreshing = null;
    if (refreshAgain) { refreshAgain = false; scheduleRefresh(); }
  }, 100);
}

function connectStream() {
  if (state.stream) state.stream.close();
  const stream = new EventSource(`/v1/queue/stream?access_token=${encodeURIComponent(state.token)}`);
  stream.onopen = () => setConnection(t("connection.live"), "live");
  stream.addEventListener("queue", scheduleRefresh);
  stream.addEventListener("incident", scheduleRefresh);
  stream.onerror = () => setConnection(t("connection.reconnecting"), "down");
  state.stream = stream;
}

function setConnection(text, cls) {
  const node = $("#connection");
  node.textContent = text;
  node.className = `connection ${cls || ""}`;
}

function showFailure(error) {
  if (error.status === 401 || error.status === 403) {
    signOut(t("signin.signed_out_bad_token"));
    return;
  }
  setConnection(t("connection.error", { error: error.message }), "down");
}

async function signIn(token) {
  state.token = token;
  try {
    state.queue = await api.queue();
  } catch (error) {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $("#sign-in-error").textContent = error.status === 401 || error.status === 403
      ? t("signin.refused")
      : t("signin.failed", { error: error.message });
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#sign-in").hidden = true;
  $("#workspace").hidden = false;
  $("#sign-out").hidden = false;
  if (!state.map) await initMap();
  else state.map.invalidateSize();
  await refresh();
  connectStream();
  state.timers.push(setInterval(tick, 1000));
  state.timers.push(setInterval(scheduleRefresh, 15_000)); // a safety net under the stream
  focusQueue();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (state.stream) state.stream.close();
  state.stream = null;
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
  state.token = null;
  state.queue = [];
  state.selected = null;
  state.detail = null;
  for (const alert of state.alerts.values()) alert.node.remove();
  state.alerts.clear();
  renderAlertCount();
  $("#queue tbody").replaceChildren();
  $("#workspace").hidden = true;
  $("#sign-in").hidden = false;
  $("#sign-out").hidden = true;
  $("#sign-in-error").textContent = message || "";
  setConnection(t("connection.signed_out"), "");
  $("#token").focus();
}


async function act(action) {
  const incident = state.detail;
  if (!incident) return;
  const name = t(`action.${action}`);
  const result = $("#action-result");
  result.className = "action-result";
  result.textContent = t("action.working", { name });
  try {
    const id = incident.incident_id;
    let done = "done";
    if (action === "assign-next" || action === "assign-chosen") {
      const who = action === "assign-chosen" ? $("#assign-who").value : null;
      if (action === "assign-chosen" && !who) throw new Error(t("action.no_candidate"));
      const unit = await api.assign(id, who);
      done = t("action.assigned", { kind: kindName(unit.kind), name: responderName(unit.responder_id),
        eta: fmtDuration(unit.eta_s || 0) });
    } else if (action === "resolve") {
      if (!window.confirm(t("action.confirm_resolve"))) { result.textContent = ""; return; }
      await api.resolve(id);
      done = t("action.resolved");
    } else if (action === "cancel") {
      if (!window.confirm(t("action.confirm_cancel"))) { result.textContent = ""; return; }
      await api.cancel(id);
      done = t("action.cancelled");
    } else if (action === "merge") {
      const into = $("#merge-into").value;
      if (!into) throw new Error(t("action.choose_merge"));
      await api.merge(id, into);
      done = t("action.merged", { id: shortId(into) });
      state.selected = into;
    }
    await refresh();
    result.className = "action-result ok";
    result.textContent = t("action.done", { name, done });
  } catch (error) {
    if (error.status === 401 || error.status === 403) { showFailure(error); return; }
    result.className = "action-result failed";
    result.textContent = t("action.failed", { name, error: error.message });
    await loadDetail().catch(() => {});
  }
}

function onGlobalKey(event) {
  if (event.target.closest && event.target.closest("input, select, textarea")) return;
  if (event.key === "Escape" && !$("#workspace").hidden) {
    event.preventDefault();
    focusQueue();
  } else if (event.key === "/" && !$("#workspace").hidden) {
    event.preventDefault();
    focusQueue();
  }
}

async function main() {
  // The form is wired before the catalogue arrives, so an early submit never leaves the
  // page (a native GET would put the token in the URL); it waits for the catalogue instead.
  $("#sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    $("#sign-in-error").textContent = "";
    I18N.ready.then(() => signIn($("#token").value.trim())).catch(showFailure);
  });
  await I18N.ready;
  Object.assign(state.config, I18N.config || {});
  $("#sign-out").addEventListener("click", () => signOut());
  for (const button of document.querySelectorAll("[data-action]")) {
    button.addEventListener("click", () => act(button.dataset.action));
  }
  document.addEventListener("keydown", onGlobalKey);
  if (state.token) await signIn(state.token);
}

main();
