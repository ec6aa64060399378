// The citizen app's service worker: the app shell is cached, the API never is.
const CACHE = "citizen-shell-v1";
const SHELL = [
  "./", "app.js", "app.css", "manifest.webmanifest",
  "common/base.css", "common/i18n.js", "common/dom.js",
  "common/messages/en.json", "common/messages/zh-CN.json", "common/icons/app.svg",
  "vendor/leaflet/leaflet.css", "vendor/leaflet/leaflet-src.esm.js",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((names) => Promise.all(names.filter((n) => n !== CACHE).map((n) => caches.delete(n))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin) return;
  if (!url.pathname.startsWith(new URL("./", self.location).pathname)) return;
  // Network first, so a new version shows at once; the cache when offline.
  event.respondWith(
    fetch(event.request)
      .then((answer) => {
        if (answer.ok && !url.pathname.endsWith("config.json")) {
          const copy = answer.clone();
          caches.open(CACHE).then((cache) => cache.put(event.request, copy));
        }
        return answer;
      })
      .catch(() => caches.match(event.request)),
  );
});
