// DOM helpers: data reaches the page only as text or nodes, never as HTML strings.

/** A new element with attributes and children (strings become text nodes). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/** Replace ``node``'s children. */
export function fill(node, ...children) {
  node.replaceChildren(...children.filter((c) => c !== null && c !== undefined));
}

export function show(node, visible = true) {
  node.hidden = !visible;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** Call the API; resolves to ``{ok, status, body}`` and never throws on HTTP errors. */
export async function api(url, { method = "GET", token, body, headers = {} } = {}) {
  const init = { method, headers: { ...headers } };
  if (token) init.headers.authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const answer = await fetch(url, init);
  let parsed = null;
  try {
    parsed = await answer.json();
  } catch {
    parsed = null;
  }
  return { ok: answer.ok, status: answer.status, body: parsed, headers: answer.headers };
}

/** The error message of an API answer, if it has one. */
export function errorMessage(answer) {
  return (answer.body && answer.body.error && answer.body.error.message) || String(answer.status);
}

/** Register the app's service worker (the app shell works offline); never fails the page. */
export async function registerServiceWorker(url) {
  if (!("serviceWorker" in navigator)) return null;
  try {
    return await navigator.serviceWorker.register(url);
  } catch {
    return null;
  }
}
