// The responder app's service worker: the app shell is cached; offers pushed while the
// app is in the background become system notifications.
const CACHE = "responder-shell-v1";
const SHELL = [
  "./", "app.js", "app.css", "manifest.webmanifest",
  "common/base.css", "common/i18n.js", "common/dom.js",
  "common/messages/en.json", "common/messages/zh-CN.json", "common/icons/app.svg",
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

async function catalogue() {
  const lang = String(self.navigator.language || "en").toLowerCase().startsWith("zh") ? "zh-CN" : "en";
  try {
    return await (await fetch(`common/messages/${lang}.json`)).json();
  } catch {
    return {};
  }
}

self.addEventListener("push", (event) => {
  event.waitUntil(
    (async () => {
      let message = {};
      try {
        message = event.data ? event.data.json() : {};
      } catch {
        message = {};
      }
      const words = await catalogue();
      const title = words["responder.offer"] || "New incident";
      const body = [message.category, message.address].filter(Boolean).join(" · ");
      await self.registration.showNotification(title, {
        body,
        tag: message.offer_id || message.incident_id || "offer",
        renotify: true,
        requireInteraction: message.type === "offer",
        vibrate: [300, 100, 300, 100, 300],
        icon: "common/icons/app.svg",
      });
    })(),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(
    self.clients.matchAll({ type: "window" }).then((windows) => {
      const open = windows.find((w) => w.url.includes(self.registration.scope));
      return open ? open.focus() : self.clients.openWindow("./");
    }),
  );
});
