// In-page notifications: what the units a page follows tell the people at them (see
// pectus/notifications.py): a Notify line, a run started or stopped, a pause on error, a Watch
// fired, a block started, a unit that lost its connection. The aggregator sends each as a live
// delta of topic "notification" to every browser that may see that unit (a global topic, like the
// unit list: following the unit's values is not needed); the live client hands it to this module,
// which the application shell mounts once for every page.
//
// A stack in the bottom right corner, newest on top: each notice is a link to its unit's page (to
// the run, for a run that stopped) and has a dismiss button. Notices that need someone (a pause
// on error, a lost connection) are alerts and stay until dismissed; the others hide after
// SHOWN_MS, held while the pointer or the focus is on them. A notification is shown once: its
// store position is remembered, so one the socket sends again (to a browser that lagged) is not
// shown twice.
//
// Which units: those the page follows (the unit page its unit); on the dashboard the shell asks
// for every unit (showEveryUnit).

import {formatTime, h, live} from "./api.js";

const SHOWN_MS = 15000;
const MOST = 5; // notices on screen at once: beyond, the oldest that is not an alert goes
const REMEMBERED = 1000; // positions remembered against repeats
const ALERTS = new Set(["paused_on_error", "connection_lost"]);

/** Mount the notification stack in `host`; returns {showEveryUnit(on)}. */
export function mountNotifications(host = document.body) {
  const stack = h("section.notifications", {"aria-label": "Notifications", "aria-live": "polite",
    "data-testid": "notifications"});
  host.append(stack);
  const shown = new Set();
  let everyUnit = false;

  live.addEventListener("notification", (event) => show(event.detail));

  function show(notification) {
    if (!notification || typeof notification.position !== "number" || shown.has(notification.position)) return;
    if (!everyUnit && !live.wantedUnits().has(notification.unit)) return;
    shown.add(notification.position);
    if (shown.size > REMEMBERED) shown.delete(shown.values().next().value);
    const {unit, topic, title, body, time, position, run_id: run} = notification;
    const alert = ALERTS.has(topic);
    const href = topic === "run_stopped" && run ? `/runs/${encodeURIComponent(run)}` : `/units/${encodeURIComponent(unit)}`;
    const link = h("a.notice-title", {href, "data-testid": "notification-link", onclick: () => notice.remove()}, title);
    const notice = h("div.notice", {class: alert ? "notice-alert" : "notice-info", role: alert ? "alert" : "status",
      "data-testid": "notification", "data-topic": topic, "data-unit": unit, "data-position": position},
    h("div.notice-text", link, body ? h("p.notice-body", body) : null,
      h("time.notice-time", {datetime: time}, formatTime(time))),
    h("button.icon-button.notice-dismiss", {type: "button", "aria-label": `Dismiss: ${title}`,
      "data-testid": "notification-dismiss", onclick: () => notice.remove()}, "×"));
    // The whole notice leads where its link does; the link alone is what the keyboard reaches.
    notice.addEventListener("click", (event) => {
      if (!event.target.closest("a, button")) link.click();
    });
    stack.prepend(notice);
    if (stack.children.length > MOST) {
      const notices = [...stack.children];
      (notices.reverse().find((old) => !old.classList.contains("notice-alert")) || notices[0]).remove();
    }
    if (!alert) hideLater(notice);
  }

  function hideLater(notice) {
    let timer = setTimeout(() => notice.remove(), SHOWN_MS);
    const hold = () => clearTimeout(timer);
    const release = () => {
      clearTimeout(timer);
      timer = setTimeout(() => notice.remove(), SHOWN_MS);
    };
    notice.addEventListener("mouseenter", hold);
    notice.addEventListener("focusin", hold);
    notice.addEventListener("mouseleave", release);
    notice.addEventListener("focusout", release);
  }

  return {
    showEveryUnit(on) {
      everyUnit = on;
    },
  };
}
