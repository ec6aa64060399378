/* The console's review additions: "why this responder" (each offer's decision trace),
 * the amber "slot unfilled, a unit is coming" notice, and the export and shift-report
 * downloads.
 *
 * Separate from console.js on purpose: it reads the page's shared `state` and redraws
 * its own nodes when console.js announces a render ("console:queue", "console:detail").
 * Data reaches the page as DOM nodes and textContent only.
 */
"use strict";

const TRACE_TEXT = {
  title: "Why this responder",
  amberFlag: "◐ SLOT UNFILLED · unit coming",
  amberDetail: "◐ A slot is unfilled, but a unit is coming (notice, no alarm).",
  offerTo: "Offer to",
  slot: "slot",
  radius: "search radius",
  step: "step",
  considered: "Considered (top candidates)",
  passed: "Passed over (closer by distance or ETA)",
  noPassed: "nobody closer was passed over",
  noTrace: "no trace recorded",
  exportJson: "Export JSON",
  exportCsv: "Export CSV",
  shift: "Shift report (last 12 h, CSV)",
  failed: "✖ download failed",
  reasons: {
    busy: "busy elsewhere",
    declined_earlier: "declined earlier",
    no_answer_earlier: "did not answer earlier",
    withdrawn_earlier: "withdrawn earlier",
    offered_this_incident: "already offered this incident",
    on_this_incident: "already on this incident",
    wrong_kind: "wrong kind",
    wrong_skill: "missing skill",
    off_duty: "off duty",
    stale_position: "stale position",
    revoked: "revoked",
    slower_eta: "closer, but slower to arrive",
  },
  outcomes: { claimed: "✔ offered", passed: "✖ skipped", ranked_lower: "· ranked lower" },
};

function traceNode(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text != null) node.textContent = text;
  return node;
}

const traceId = (id) => String(id).slice(0, 8);
const traceReason = (r) => (r ? TRACE_TEXT.reasons[r] || String(r).replaceAll("_", " ") : "");

function traceEntry(who, extra) {
  const item = traceNode("li", "trace-entry");
  item.append(traceNode("span", "trace-who", `${traceId(who.responder_id)} ${who.kind}`
    + ` · ${Math.round(who.distance_m)} m · ETA ${Math.round(who.eta_s)} s`));
  if (extra) item.append(traceNode("span", "trace-reason", ` — ${extra}`));
  return item;
}

function offerTrace(offer) {
  const box = traceNode("div", "trace-offer");
  box.dataset.offer = offer.offer_id;
  const trace = offer.trace;
  const head = `${TRACE_TEXT.offerTo} ${traceId(offer.responder_id)} (${offer.kind})`;
  if (!trace) {
    box.append(traceNode("p", "trace-head", `${head}: ${TRACE_TEXT.noTrace}`));
    return box;
  }
  const kinds = trace.slot_kinds.join("/") + (trace.slot_skills.length ? ` + ${trace.slot_skills.join(", ")}` : "");
  const radius = trace.radius_m == null ? ""
    : ` · ${TRACE_TEXT.radius} ${Math.round(trace.radius_m)} m (${TRACE_TEXT.step} ${trace.radius_step})`;
  box.append(traceNode("p", "trace-head", `${head} · ${TRACE_TEXT.slot} ${trace.slot + 1}: ${kinds}${radius}`));
  box.append(traceNode("p", "trace-sub", TRACE_TEXT.considered));
  const considered = traceNode("ul", "trace-candidates");
  for (const c of trace.candidates) {
    const skills = c.skills.length ? ` [${c.skills.join(", ")}]` : "";
    considered.append(traceEntry(c, `${TRACE_TEXT.outcomes[c.outcome] || c.outcome}${skills}`
      + (c.reason ? ` (${traceReason(c.reason)})` : "")));
  }
  box.append(considered);
  box.append(traceNode("p", "trace-sub", TRACE_TEXT.passed));
  const passed = traceNode("ul", "trace-passed");
  if (!trace.passed_over.length) passed.append(traceNode("li", "empty", TRACE_TEXT.noPassed));
  for (const p of trace.passed_over) passed.append(traceEntry(p, traceReason(p.reason)));
  box.append(passed);
  return box;
}

async function traceDownload(path, filename, status) {
  status.textContent = "";
  try {
    const answer = await fetch(path, { headers: { authorization: `Bearer ${state.token}` } });
    if (!answer.ok) throw new Error(String(answer.status));
    const url = URL.createObjectURL(await answer.blob());
    const link = traceNode("a");
    link.href = url;
    link.download = filename;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (error) {
    status.textContent = `${TRACE_TEXT.failed} (${error.message})`;
  }
}

function traceButton(text, onClick) {
  const button = traceNode("button", "trace-download", text);
  button.type = "button";
  button.addEventListener("click", onClick);
  return button;
}

function renderTrace() {
  const body = document.getElementById("detail-body");
  const incident = state.detail;
  let panel = document.getElementById("trace-panel");
  if (!incident || !body) { if (panel) panel.remove(); return; }
  if (!panel) {
    panel = traceNode("div", "trace-panel");
    panel.id = "trace-panel";
    const offers = document.getElementById("detail-offers").closest("table");
    offers.after(panel);
  }
  const id = incident.incident_id;
  const status = traceNode("p", "trace-status");
  status.setAttribute("role", "status");
  const exports = traceNode("p", "trace-exports");
  const base = `/v1/incidents/${encodeURIComponent(id)}/export`;
  exports.append(
    traceButton(TRACE_TEXT.exportJson, () => traceDownload(`${base}?format=json`, `incident-${id}.json`, status)),
    traceButton(TRACE_TEXT.exportCsv, () => traceDownload(`${base}?format=csv`, `incident-${id}.csv`, status)),
  );
  const title = traceNode("h3", null, TRACE_TEXT.title);
  const offers = (incident.offers || []).map(offerTrace);
  panel.replaceChildren(title, ...offers, exports, status);

  let amber = document.getElementById("detail-amber");
  const showAmber = incident.slot_shortfall && !incident.no_responder;
  if (showAmber && !amber) {
    amber = traceNode("p", "notice amber", TRACE_TEXT.amberDetail);
    amber.id = "detail-amber";
    amber.setAttribute("role", "status");
    document.getElementById("detail-summary").before(amber);
  } else if (!showAmber && amber) {
    amber.remove();
  }
}

function renderAmberFlags() {
  const byId = new Map((state.queue || []).map((i) => [i.incident_id, i]));
  for (const row of document.querySelectorAll("#queue tbody tr[data-id]")) {
    const incident = byId.get(row.dataset.id);
    if (!incident || !incident.slot_shortfall || incident.no_responder) continue;
    if (row.querySelector(".flag.amber")) continue;
    row.classList.add("slot-shortfall");
    row.querySelector("td.category").append(traceNode("span", "flag amber", TRACE_TEXT.amberFlag));
  }
}

function addShiftReportLink() {
  const bar = document.getElementById("sign-out");
  if (!bar || document.getElementById("shift-report")) return;
  const status = traceNode("span", "trace-status");
  status.setAttribute("role", "status");
  const button = traceButton(TRACE_TEXT.shift, () => {
    const to = new Date();
    const from = new Date(to.getTime() - 12 * 3600 * 1000);
    const query = `from=${encodeURIComponent(from.toISOString())}&to=${encodeURIComponent(to.toISOString())}&format=csv`;
    traceDownload(`/v1/shift-reports?${query}`, "shift-report.csv", status);
  });
  button.id = "shift-report";
  bar.before(button, status);
}

document.addEventListener("console:detail", renderTrace);
document.addEventListener("console:queue", renderAmberFlags);
addShiftReportLink();
