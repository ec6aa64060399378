/* The console's coverage layer: a togglable heat map of GET /v1/coverage.
 *
 * Separate from console.js on purpose: it only reads the page's shared `state` (the
 * Leaflet map and the dispatcher's token) and adds one layer and its legend. Every
 * cell is told apart by colour AND by outline pattern and a text symbol, so the map
 * reads without colour vision. Data reaches the page as DOM nodes and textContent only.
 */
"use strict";

const COVERAGE = {
  refreshMs: 15000,
  stages: ["T1", "T3", "T5"],
  stage: "T3",
  layer: null,
  timer: null,
  legend: null,
  classes: [
    { key: "met", symbol: "✔" },
    { key: "late", symbol: "◐" },
    { key: "none", symbol: "✖" },
  ],
};

function coverageClass(props) {
  if (props.met) return "met";
  return props.eta_s == null ? "none" : "late";
}

function coverageLabel(props) {
  const cls = COVERAGE.classes.find((c) => c.key === coverageClass(props));
  const slots = Object.entries(props.slots)
    .map(([name, s]) => `${name} ${s.eta_s == null ? t("coverage.slot_none") : `${Math.round(s.eta_s)} s`}`)
    .join(", ");
  return t("coverage.cell", { symbol: cls.symbol, stage: props.stage, text: t(`coverage.${cls.key}`),
    target: props.target_s, slots });
}

function coverageNode(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text != null) node.textContent = text;
  return node;
}

function buildCoverageLegend() {
  const box = coverageNode("div", "coverage-legend");
  box.id = "coverage-legend";
  const label = coverageNode("label", null, t("coverage.stage"));
  const select = coverageNode("select");
  select.id = "coverage-stage";
  for (const stage of COVERAGE.stages) {
    const option = coverageNode("option", null, stage);
    option.value = stage;
    option.selected = stage === COVERAGE.stage;
    select.append(option);
  }
  select.addEventListener("change", () => { COVERAGE.stage = select.value; loadCoverage(); });
  label.append(select);
  box.append(label);
  const list = coverageNode("ul", "coverage-keys");
  for (const cls of COVERAGE.classes) {
    const item = coverageNode("li", `coverage-key ${cls.key}`);
    item.append(coverageNode("span", `coverage-swatch ${cls.key}`, cls.symbol));
    item.append(coverageNode("span", null, t("coverage.key", { text: t(`coverage.${cls.key}`),
      pattern: t(`coverage.${cls.key}_pattern`) })));
    list.append(item);
  }
  box.append(list);
  box.append(coverageNode("p", "coverage-summary", ""));
  box.lastChild.setAttribute("role", "status");
  return box;
}

async function loadCoverage() {
  if (!state.map || !state.token || !COVERAGE.layer) return;
  const summary = COVERAGE.legend.querySelector(".coverage-summary");
  let body;
  try {
    const answer = await fetch(`/v1/coverage?stage=${encodeURIComponent(COVERAGE.stage)}`, {
      headers: { authorization: `Bearer ${state.token}` },
    });
    if (!answer.ok) {
      summary.textContent = answer.status === 503
        ? t("coverage.not_yet") : t("coverage.unavailable", { status: answer.status });
      return;
    }
    body = await answer.json();
  } catch {
    summary.textContent = t("coverage.network");
    return;
  }
  if (!COVERAGE.layer) return;
  COVERAGE.layer.clearLayers();
  COVERAGE.layer.addData(body);
  summary.textContent = t("coverage.summary", { stage: body.stage,
    percent: Math.round(body.covered_ratio * 100), responders: body.responders,
    at: fmtTime(body.computed_at) });
}

function showCoverage(on) {
  if (!state.map || !window.L) return;
  if (on && !COVERAGE.layer) {
    COVERAGE.layer = L.geoJSON(null, {
      style: (feature) => ({ className: `coverage-cell ${coverageClass(feature.properties)}` }),
      onEachFeature: (feature, layer) => layer.bindTooltip(coverageNode("span", "map-tooltip", coverageLabel(feature.properties))),
    }).addTo(state.map);
    COVERAGE.layer.bringToBack();
    COVERAGE.legend = buildCoverageLegend();
    document.querySelector(".map-panel").append(COVERAGE.legend);
    loadCoverage();
    COVERAGE.timer = setInterval(loadCoverage, COVERAGE.refreshMs);
  } else if (!on && COVERAGE.layer) {
    clearInterval(COVERAGE.timer);
    state.map.removeLayer(COVERAGE.layer);
    COVERAGE.legend.remove();
    COVERAGE.layer = null;
    COVERAGE.legend = null;
  }
}

document.getElementById("coverage-on").addEventListener("change", (event) => {
  showCoverage(event.target.checked);
});
