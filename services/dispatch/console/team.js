/* The console's team page: list, register, edit, pair, take off duty and revoke responders.
 *
 * It talks only to dispatch's helpers under /console/api/team, which ask the locator with
 * the dispatcher's own token. Names, skills and everything else a person typed reach the
 * page through textContent; the pairing QR is an SVG shown as an image (data: URL), so
 * nothing it holds can run. Every string comes from the catalogue through t().
 */
"use strict";

const TEAM_TOKEN_KEY = "qrd.dispatcher.token";
const KINDS = ["patrol", "auxiliary", "volunteer"];
const TRAVEL_MODES = ["foot", "bicycle", "motorbike", "car"];
const DUTY_SYMBOL = { on: "●", off: "○", revoked: "⊘" };
const team = { token: sessionStorage.getItem(TEAM_TOKEN_KEY), members: [], timer: null };

const $t = (sel) => document.querySelector(sel);

function node(tag, attrs = {}, ...children) {
  const made = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (/^on/i.test(key) || key === "style") throw new Error(`node(): refused attribute ${key}`);
    if (key === "class") made.className = value;
    else if (key === "text") made.textContent = value;
    else made.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      made.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return made;
}

class TeamError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || "error";
  }
}

async function teamCall(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: {
      authorization: `Bearer ${team.token}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!response.ok) throw new TeamError(response.status, data);
  return data;
}

const teamApi = {
  list: () => teamCall("GET", "/console/api/team"),
  one: (id) => teamCall("GET", `/console/api/team/${id}`),
  register: (body) => teamCall("POST", "/console/api/team", body),
  edit: (id, body) => teamCall("PATCH", `/console/api/team/${id}`, body),
  duty: (id, onDuty) => teamCall("PUT", `/console/api/team/${id}/duty`, { on_duty: onDuty }),
  revoke: (id) => teamCall("POST", `/console/api/team/${id}/revoke`),
  pairing: (id) => teamCall("POST", `/console/api/team/${id}/pairing`),
};

/* "3 min ago" from a timestamp; a position older than an hour shows its local time. */
function positionAge(iso) {
  if (!iso) return t("team.no_position");
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return t("team.age_s", { n: Math.round(seconds) });
  if (seconds < 3600) return t("team.age_min", { n: Math.floor(seconds / 60) });
  return t("team.age_at", { at: fmtDateTime(iso) });
}

function dutyCell(member) {
  if (member.revoked_at && !member.on_duty) {
    return node("span", { class: "duty revoked" }, `${DUTY_SYMBOL.revoked} `,
      t("team.revoked_at", { at: fmtDateTime(member.revoked_at) }));
  }
  if (!member.on_duty) return node("span", { class: "duty off", text: `${DUTY_SYMBOL.off} ${t("team.off_duty")}` });
  const status = member.status ? t(`status.${member.status}`) : t("status.unknown");
  return node("span", { class: "duty on", text: `${DUTY_SYMBOL.on} ${t("team.on_duty")} · ${status}` });
}

function incidentCell(member) {
  if (!member.incident) return "—";
  return `${categoryName(member.incident.category)} · ${t(`unit.${member.incident.unit_status}`)}`;
}

function actionButton(key, member, handler) {
  const button = node("button", { type: "button", class: `row-action ${key}`, text: t(`team.action.${key}`),
    "aria-label": t(`team.action.${key}_for`, { name: member.name }) });
  button.addEventListener("click", () => handler(member, button));
  return button;
}

function renderTeam() {
  const body = $t("#team tbody");
  body.replaceChildren();
  for (const member of team.members) {
    const actions = node("div", { class: "row-actions" },
      actionButton("edit", member, startEdit),
      member.on_duty ? actionButton("off_duty", member, takeOffDuty) : null,
      actionButton("pair", member, issuePairing),
      actionButton("revoke", member, revoke));
    const row = node("tr", { "data-id": member.responder_id },
      node("th", { scope: "row", class: "name", text: member.name }),
      node("td", { text: t(`kind.${member.kind}`) }),
      node("td", { text: member.skills.length ? member.skills.join(", ") : "—" }),
      node("td", {}, dutyCell(member)),
      node("td", { text: positionAge(member.last_seen_at) }),
      node("td", { text: incidentCell(member) }),
      node("td", {}, actions));
    body.append(row);
  }
  $t("#team-count").textContent = `(${team.members.length})`;
  $t("#team-empty").hidden = team.members.length > 0;
}

async function refreshTeam() {
  team.members = await teamApi.list();
  renderTeam();
}

function say(text, ok) {
  const result = $t("#team-result");
  result.className = `action-result ${ok ? "ok" : "failed"}`;
  result.textContent = text;
}

function failed(name, error) {
  if (error.status === 401 || error.status === 403) { teamSignOut(t("signin.signed_out_bad_token")); return; }
  say(t("action.failed", { name, error: error.message }), false);
}

/* --- register and edit ---------------------------------------------------- */

function fillSelect(select, values, prefix) {
  select.replaceChildren(...values.map((v) => node("option", { value: v, text: t(`${prefix}.${v}`) })));
}

function formBody(editing) {
  const text = (id) => $t(id).value.trim();
  const body = {
    name: text("#f-name"),
    skills: text("#f-skills").split(/[,，\s]+/).map((s) => s.trim().toLowerCase()).filter(Boolean),
    travel_mode: $t("#f-travel").value,
    office: text("#f-office") || null,
    grid: text("#f-grid") || null,
    phone: text("#f-phone") || null,
  };
  if (!editing) body.kind = $t("#f-kind").value;
  return body;
}

function resetForm() {
  $t("#responder-form").reset();
  $t("#f-id").value = "";
  $t("#f-kind").disabled = false;
  $t("#form-title").textContent = t("team.register_title");
  $t("#f-submit").textContent = t("team.f.register");
  $t("#f-cancel").hidden = true;
  $t("#form-error").textContent = "";
}

async function startEdit(member) {
  let full = member;
  try { full = await teamApi.one(member.responder_id); } catch (error) { failed(t("team.action.edit"), error); return; }
  $t("#f-id").value = member.responder_id;
  $t("#f-name").value = full.name;
  $t("#f-kind").value = full.kind;
  $t("#f-kind").disabled = true;
  $t("#f-skills").value = (full.skills || []).join(", ");
  $t("#f-travel").value = full.travel_mode;
  $t("#f-office").value = full.office || "";
  $t("#f-grid").value = full.grid || "";
  $t("#f-phone").value = full.phone || "";
  $t("#form-title").textContent = t("team.edit_title", { name: full.name });
  $t("#f-submit").textContent = t("team.f.save");
  $t("#f-cancel").hidden = false;
  $t("#f-name").focus();
}

async function submitForm(event) {
  event.preventDefault();
  const id = $t("#f-id").value;
  const body = formBody(Boolean(id));
  $t("#form-error").textContent = "";
  try {
    if (id) {
      await teamApi.edit(id, body);
      say(t("team.saved", { name: body.name }), true);
    } else {
      await teamApi.register(body);
      say(t("team.registered", { name: body.name }), true);
    }
    resetForm();
    await refreshTeam();
  } catch (error) {
    if (error.status === 401 || error.status === 403) { failed("", error); return; }
    $t("#form-error").textContent = t("team.form_failed", { error: error.message });
  }
}

/* --- duty, revoke and pairing ---------------------------------------------- */

async function takeOffDuty(member) {
  try {
    await teamApi.duty(member.responder_id, false);
    say(t("team.taken_off", { name: member.name }), true);
    await refreshTeam();
  } catch (error) { failed(t("team.action.off_duty"), error); }
}

async function revoke(member) {
  if (!window.confirm(t("team.confirm_revoke", { name: member.name }))) return;
  try {
    const answer = await teamApi.revoke(member.responder_id);
    say(t("team.revoked", { name: member.name, at: fmtTime(answer.revoked_at) }), true);
    await refreshTeam();
  } catch (error) { failed(t("team.action.revoke"), error); }
}

async function issuePairing(member) {
  try {
    const pairing = await teamApi.pairing(member.responder_id);
    $t("#pairing-who").textContent = t("team.pairing_for", { name: member.name });
    $t("#pairing-code").textContent = pairing.code;
    const qr = $t("#pairing-qr");
    qr.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(pairing.qr_svg)}`;
    qr.alt = t("team.pairing_qr_alt", { name: member.name });
    $t("#pairing-expires").textContent = t("team.pairing_expires", { at: fmtTime(pairing.expires_at) });
    $t("#pairing-url").textContent = pairing.url;
    $t("#pairing").hidden = false;
    $t("#pairing").focus();
  } catch (error) { failed(t("team.action.pair"), error); }
}

/* --- sign-in ---------------------------------------------------------------- */

async function teamSignIn(token) {
  team.token = token;
  try {
    await refreshTeam();
  } catch (error) {
    team.token = null;
    sessionStorage.removeItem(TEAM_TOKEN_KEY);
    $t("#sign-in-error").textContent = error.status === 401 || error.status === 403
      ? t("signin.refused") : t("signin.failed", { error: error.message });
    return;
  }
  sessionStorage.setItem(TEAM_TOKEN_KEY, token);
  $t("#sign-in").hidden = true;
  $t("#workspace").hidden = false;
  $t("#sign-out").hidden = false;
  // Positions age and duty changes elsewhere: a gentle refresh keeps the list honest.
  team.timer = setInterval(() => refreshTeam().catch(() => {}), 15_000);
}

function teamSignOut(message) {
  sessionStorage.removeItem(TEAM_TOKEN_KEY);
  clearInterval(team.timer);
  team.token = null;
  team.members = [];
  $t("#team tbody").replaceChildren();
  $t("#workspace").hidden = true;
  $t("#sign-in").hidden = false;
  $t("#sign-out").hidden = true;
  $t("#sign-in-error").textContent = message || "";
}

async function teamMain() {
  // Wired before the catalogue arrives: an early submit waits rather than leaving the page.
  $t("#sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    $t("#sign-in-error").textContent = "";
    I18N.ready.then(() => teamSignIn($t("#token").value.trim()));
  });
  await I18N.ready;
  fillSelect($t("#f-kind"), KINDS, "kind");
  fillSelect($t("#f-travel"), TRAVEL_MODES, "travel");
  $t("#sign-out").addEventListener("click", () => teamSignOut());
  $t("#responder-form").addEventListener("submit", submitForm);
  $t("#f-cancel").addEventListener("click", resetForm);
  $t("#pairing-close").addEventListener("click", () => { $t("#pairing").hidden = true; });
  if (team.token) await teamSignIn(team.token);
}

teamMain();
