// The service worker of Web Push. The aggregator pushes (pectus.actors.push) to the browser's
// push service, which wakes this worker even when no page of Pectus is open; it shows the push
// as a notification and, when the notification is clicked, brings a window on that page to the
// front, or opens one. It is served at /sw.js so that its scope is the whole site.
//
// A push is JSON: {title, body, unit, url, topic, time} (time ISO 8601 UTC; url a path of this
// site, the unit's page). The browser requires every push to show something (userVisibleOnly).

// Topics someone must act on (pectus.notifications.ALERTS): they stay until dismissed.
const ALERTS = new Set(["paused_on_error", "connection_lost"]);

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  event.waitUntil(show(event.data));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(openPage(event.notification.data && event.notification.data.url));
});

function read(data) {
  try {
    const message = data ? data.json() : null;
    if (message && typeof message.title === "string") return message;
  } catch {
    // not JSON: shown as text below
  }
  return {title: "Pectus", body: data ? data.text() : "", url: "/"};
}

/** Only a page of this site is ever opened: a push names a path, never another site. */
function ownPage(url) {
  const target = new URL(typeof url === "string" ? url : "/", self.location.origin);
  return target.origin === self.location.origin ? target : new URL("/", self.location.origin);
}

function show(data) {
  const message = read(data);
  const time = Date.parse(message.time);
  return self.registration.showNotification(message.title, {
    body: typeof message.body === "string" ? message.body : "",
    timestamp: Number.isNaN(time) ? Date.now() : time,
    requireInteraction: ALERTS.has(message.topic),
    data: {url: ownPage(message.url).href, unit: message.unit || null, topic: message.topic || null},
  });
}

async function openPage(url) {
  const target = ownPage(url);
  const windows = await self.clients.matchAll({type: "window", includeUncontrolled: true});
  const open = windows.find((client) => new URL(client.url).pathname === target.pathname);
  if (open) return open.focus();
  return self.clients.openWindow(target.href);
}
