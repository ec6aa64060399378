/* Dispatcher console: the live queue, the map, incident detail and actions.
 *
 * Plain browser JavaScript with no build step. It talks only to the public API
 * (PRODUCT.md §4) with the dispatcher's token, and refreshes from the queue stream.
 */
"use strict";

const WARNING_S = 20; // a pending clock turns amber this close to its deadline
const TOKEN_KEY = "qrd.dispatcher.token";
const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  config: { tile_url: "", tile_attribution: "", center: [23.02, 113.75], zoom: 13 },
  queue: [],
  selected: null,
  detail: null,
  candidates: [],
  alerted: new Set(),
  stream: null,
  refreshTimer: null,
  map: null,
  layers: null,
};

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
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
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

const api = {
  queue: () => call("GET", "/v1/incidents?status=open"),
  incident: (id) => call("GET", `/v1/incidents/${id}`),
  candidates: (id) => call("GET", `/console/api/incidents/${id}/candidates`),
  responders: () => call("GET", "/console/api/responders"),
  assign: (id, responderId) =>
    call("POST", `/v1/incidents/${id}/assign`, responderId ? { responder_id: responderId } : {}),
  resolve: (id) => call("POST", `/v1/incidents/${id}/resolve`, {}),
  cancel: (id) => call("POST", `/v1/incidents/${id}/cancel`, {}),
  merge: (id, into) => call("POST", `/v1/incidents/${id}/merge`, { into }),
};

/* --- time and milestones -------------------------------------------------- */

function fmtDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, "0")}`;
}

function ageSeconds(incident) {
  return (Date.now() - Date.parse(incident.received_at)) / 1000;
}

/* The server says met or breached; a pending stage is judged against the clock here,
   so a clock turns red the moment its deadline passes, even between updates. */
function stageView(incident, milestone) {
  if (!milestone) return { cls: "na", text: "—", label: "not in plan" };
  if (milestone.state === "met") {
    return { cls: "met", text: `✔ met ${Math.round(milestone.seconds)}s`, label: "met" };
  }
  const left = milestone.target_s - ageSeconds(incident);
  if (milestone.state === "breached" || left <= 0) {
    return { cls: "breached", text: `✖ BREACHED +${fmtDuration(-left)}`, label: "breached" };
  }
  if (left <= WARNING_S) {
    return { cls: "warning", text: `⚠ ${fmtDuration(left)} left`, label: "due soon" };
  }
  return { cls: "pending", text: `◷ ${fmtDuration(left)} left`, label: "pending" };
}

function milestoneFor(incident, stage) {
  return (incident.milestones || []).find((m) => m.stage === stage);
}

function place(incident) {
  const where = incident.address || `${incident.lat.toFixed(4)}, ${incident.lon.toFixed(4)}`;
  return incident.grid ? `${where} · ${incident.grid}` : where;
}

/* --- rendering ------------------------------------------------------------ */

function renderQueue() {
  const body = $("#queue tbody");
  const focusedId = document.activeElement && document.activeElement.dataset
    ? document.activeElement.dataset.id : null;
  body.replaceChildren();
  for (const incident of state.queue) {
    const row = el("tr", {
      tabindex: "0",
      "data-id": incident.incident_id,
      "aria-selected": String(incident.incident_id === state.selected),
      class: incident.no_responder ? "no-responder" : "",
    });
    row.append(
      el("td", {}, incident.category.replace("_", " "),
        incident.no_responder ? el("strong", { text: " · NO RESPONDER" }) : null),
      el("td", { text: place(incident) }),
      el("td", { class: "age", text: fmtDuration(ageSeconds(incident)) }),
    );
    for (const stage of ["T1", "T3", "T5"]) {
      const view = stageView(incident, milestoneFor(incident, stage));
      row.append(el("td", {},
        el("span", { class: `clock ${view.cls}`, "data-stage": stage, text: view.text,
          "aria-label": `${stage} ${view.label}: ${view.text}` })));
    }
    row.addEventListener("click", () => select(incident.incident_id));
    row.addEventListener("keydown", onRowKey);
    body.append(row);
    if (incident.incident_id === focusedId) row.focus();
  }
  $("#queue-count").textContent = `(${state.queue.length})`;
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
  }
}

/* Clocks tick every second without asking the server. */
function tick() {
  for (const row of document.querySelectorAll("#queue tbody tr")) {
    const incident = state.queue.find((i) => i.incident_id === row.dataset.id);
    if (!incident) continue;
    row.querySelector(".age").textContent = fmtDuration(ageSeconds(incident));
    for (const clock of row.querySelectorAll(".clock")) {
      const view = stageView(incident, milestoneFor(incident, clock.dataset.stage));
      clock.className = `clock ${view.cls}`;
      clock.textContent = view.text;
      clock.setAttribute("aria-label", `${clock.dataset.stage} ${view.label}: ${view.text}`);
      if (view.cls === "breached") raiseAlert(`breach:${incident.incident_id}:${clock.dataset.stage}`,
        `${clock.dataset.stage} breached: ${incident.category} at ${place(incident)}`);
    }
  }
  if (state.detail) renderMilestones(state.detail);
}

function raiseAlert(key, message) {
  if (state.alerted.has(key)) return;
  state.alerted.add(key);
  const alert = el("div", { class: "alert flash", text: `⚠ ${message}` });
  $("#alerts").prepend(alert);
  while ($("#alerts").children.length > 4) $("#alerts").lastElementChild.remove();
  setTimeout(() => alert.remove(), 60_000);
  if ($("#sound-on").checked) beep();
}

function beep() {
  try {
    const ctx = new AudioContext();
    const osc = ctx.createOscillator();
    osc.frequency.value = 880;
    osc.connect(ctx.destination);
    osc.start();
    osc.stop(ctx.currentTime + 0.25);
  } catch (_) { /* audio is a courtesy, never a requirement */ }
}

function renderMilestones(incident) {
  const list = $("#detail-milestones");
  list.replaceChildren();
  for (const milestone of incident.milestones || []) {
    const view = stageView(incident, milestone);
    list.append(el("li", {}, el("span", { class: `clock ${view.cls}`,
      text: `${milestone.stage} ${milestone.label || ""} (${milestone.target_s}s): ${view.text}` })));
  }
}

function rows(tbody, items, cells) {
  const target = $(tbody);
  target.replaceChildren();
  if (!items.length) {
    target.append(el("tr", {}, el("td", { colspan: "5", class: "empty", text: "none" })));
    return;
  }
  for (const item of items) target.append(el("tr", {}, ...cells(item).map((c) => el("td", { text: c }))));
}

const shortId = (id) => (id ? String(id).slice(0, 8) : "—");

function renderDetail() {
  const incident = state.detail;
  $("#detail-empty").hidden = Boolean(incident);
  $("#detail-body").hidden = !incident;
  if (!incident) return;
  $("#detail-title").textContent = `Incident · ${incident.category.replace("_", " ")}`;
  const summary = $("#detail-summary");
  summary.replaceChildren();
  const facts = [
    ["Status", incident.status + (incident.no_responder ? " · no responder available" : "")],
    ["Place", place(incident)],
    ["Office", incident.office || "—"],
    ["Received", new Date(incident.received_at).toLocaleTimeString()],
    ["Age", fmtDuration(ageSeconds(incident))],
    ["Priority", incident.priority ?? "—"],
  ];
  for (const [k, v] of facts) summary.append(el("dt", { text: k }), el("dd", { text: v }));
  renderMilestones(incident);
  rows("#detail-candidates", state.candidates, (c) => [shortId(c.responder_id), c.kind,
    `${Math.round(c.distance_m)} m`, fmtDuration(c.eta_s), c.status]);
  rows("#detail-offers", incident.offers || [], (o) => [shortId(o.responder_id), o.kind,
    o.eta_s != null ? fmtDuration(o.eta_s) : "—", o.state || o.outcome || o.status]);
  rows("#detail-units", incident.units || [], (u) => [shortId(u.responder_id), u.kind, u.status]);
  const reports = $("#detail-reports");
  reports.replaceChildren(...(incident.reports || []).map((r) => el("li", {
    text: `${new Date(r.received_at).toLocaleTimeString()} · ${r.description || r.category || ""} (${shortId(r.report_id)})`,
  })));
  const timeline = $("#detail-timeline");
  timeline.replaceChildren(...(incident.timeline || []).map((t) => el("li", {
    text: `${new Date(t.at).toLocaleTimeString()} · ${t.type}${t.detail ? ` · ${t.detail}` : ""}`,
  })));
  const who = $("#assign-who");
  who.replaceChildren(...state.candidates.filter((c) => c.status === "free").map((c) =>
    el("option", { value: c.responder_id,
      text: `${c.kind} ${shortId(c.responder_id)} · ETA ${fmtDuration(c.eta_s)}` })));
  const into = $("#merge-into");
  into.replaceChildren(...state.queue.filter((i) => i.incident_id !== incident.incident_id)
    .map((i) => el("option", { value: i.incident_id, text: `${i.category} · ${place(i)}` })));
}

/* --- map ------------------------------------------------------------------ */

const KIND_STYLE = {
  patrol: { color: "#4da3ff", symbol: "●" },
  auxiliary: { color: "#b48cff", symbol: "▲" },
  volunteer: { color: "#53d18a", symbol: "◆" },
};

function initMap() {
  if (!window.L) {
    $("#map").replaceChildren(el("p", { class: "empty", text: "Map library not installed." }));
    return;
  }
  state.map = L.map("map", { preferCanvas: true, keyboard: true })
    .setView(state.config.center, state.config.zoom);
  if (state.config.tile_url) {
    L.tileLayer(state.config.tile_url, {
      attribution: state.config.tile_attribution, maxZoom: 19,
    }).addTo(state.map);
  }
  state.layers = { incidents: L.layerGroup().addTo(state.map),
    responders: L.layerGroup().addTo(state.map) };
}

function renderMap(responders) {
  if (!state.map) return;
  state.layers.incidents.clearLayers();
  for (const incident of state.queue) {
    const breached = (incident.milestones || []).some((m) => stageView(incident, m).cls === "breached");
    L.circleMarker([incident.lat, incident.lon], {
      radius: 9, color: "#fff", weight: 2, fillColor: breached ? "#d13a3a" : "#f0a030", fillOpacity: 0.9,
    }).bindTooltip(`${incident.category} · ${place(incident)}`)
      .on("click", () => select(incident.incident_id))
      .addTo(state.layers.incidents);
  }
  if (!responders) return;
  state.layers.responders.clearLayers();
  for (const r of responders) {
    if (r.lat == null || r.lon == null) continue;
    const style = KIND_STYLE[r.kind] || KIND_STYLE.volunteer;
    L.circleMarker([r.lat, r.lon], {
      radius: 6, color: style.color, weight: 2,
      fillColor: style.color, fillOpacity: r.status === "free" ? 0.9 : 0,
    }).bindTooltip(`${style.symbol} ${r.kind} · ${r.status}`).addTo(state.layers.responders);
  }
}

/* --- data flow ------------------------------------------------------------ */

async function select(id) {
  state.selected = id;
  for (const row of document.querySelectorAll("#queue tbody tr")) {
    row.setAttribute("aria-selected", String(row.dataset.id === id));
  }
  await loadDetail();
}

async function loadDetail() {
  if (!state.selected) { state.detail = null; renderDetail(); return; }
  try {
    const [detail, candidates] = await Promise.all([
      api.incident(state.selected),
      api.candidates(state.selected).catch(() => []),
    ]);
    state.detail = detail;
    state.candidates = candidates;
  } catch (error) {
    if (error.status === 404) { state.selected = null; state.detail = null; }
    else throw error;
  }
  renderDetail();
}

async function refresh() {
  state.queue = await api.queue();
  for (const incident of state.queue) {
    if (incident.no_responder) {
      raiseAlert(`nra:${incident.incident_id}`,
        `No responder available: ${incident.category} at ${place(incident)}`);
    }
  }
  renderQueue();
  tick();
  const responders = await api.responders().catch(() => null);
  renderMap(responders);
  if (state.selected) await loadDetail();
}

function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(() => refresh().catch(showFailure), 100);
}

function connectStream() {
  if (state.stream) state.stream.close();
  const stream = new EventSource(`/v1/queue/stream?access_token=${encodeURIComponent(state.token)}`);
  stream.onopen = () => setConnection("Live", "live");
  stream.onmessage = scheduleRefresh;
  stream.addEventListener("queue", scheduleRefresh);
  stream.addEventListener("incident", scheduleRefresh);
  stream.onerror = () => setConnection("Reconnecting…", "down");
  state.stream = stream;
}

function setConnection(text, cls) {
  const node = $("#connection");
  node.textContent = text;
  node.className = `connection ${cls || ""}`;
}

function showFailure(error) {
  if (error.status === 401 || error.status === 403) { signOut("That token is not a dispatcher's."); return; }
  setConnection(`Error: ${error.message}`, "down");
}

async function signIn(token) {
  state.token = token;
  try {
    await api.queue();
  } catch (error) {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $("#sign-in-error").textContent = error.status === 401 || error.status === 403
      ? "Sign-in refused: that token is not a valid dispatcher token."
      : `Sign-in failed: ${error.message}`;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#sign-in").hidden = true;
  $("#workspace").hidden = false;
  $("#sign-out").hidden = false;
  if (!state.map) initMap();
  await refresh();
  connectStream();
  setInterval(tick, 1000);
  setInterval(() => refresh().catch(showFailure), 15_000); // a safety net under the stream
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (state.stream) state.stream.close();
  state.token = null;
  state.queue = [];
  $("#workspace").hidden = true;
  $("#sign-in").hidden = false;
  $("#sign-out").hidden = true;
  $("#sign-in-error").textContent = message || "";
  setConnection("Not signed in", "");
}

async function act(action) {
  const incident = state.detail;
  if (!incident) return;
  const result = $("#action-result");
  result.className = "action-result";
  result.textContent = "Working…";
  try {
    const id = incident.incident_id;
    if (action === "assign-next") await api.assign(id, null);
    else if (action === "assign-chosen") {
      const who = $("#assign-who").value;
      if (!who) throw new Error("choose a free responder first");
      await api.assign(id, who);
    } else if (action === "resolve") await api.resolve(id);
    else if (action === "cancel") await api.cancel(id);
    else if (action === "merge") {
      const into = $("#merge-into").value;
      if (!into) throw new Error("choose the incident to merge into");
      await api.merge(id, into);
    }
    result.className = "action-result ok";
    result.textContent = `${action.replace("-", " ")}: done`;
    await refresh();
  } catch (error) {
    result.className = "action-result failed";
    result.textContent = `${action.replace("-", " ")} failed: ${error.message}`;
  }
}

async function main() {
  try {
    const response = await fetch("/console/config.json");
    if (response.ok) Object.assign(state.config, await response.json());
  } catch (_) { /* defaults are fine */ }
  $("#sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    $("#sign-in-error").textContent = "";
    signIn($("#token").value.trim()).catch(showFailure);
  });
  $("#sign-out").addEventListener("click", () => signOut());
  for (const button of document.querySelectorAll("[data-action]")) {
    button.addEventListener("click", () => act(button.dataset.action));
  }
  if (state.token) await signIn(state.token);
}

main();
