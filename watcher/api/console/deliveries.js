// Deliveries: the list (by status, subscription or event), one delivery's page with every
// attempt and a redeliver button that waits for the new attempt, and the recover form.

import { api, idPath } from "./api.js";
import { badge, button, busy, card, el, eventLink, fields, flash, link, ms, show, when } from "./dom.js";
import { appColumn, filterForm, pageOf, pagedTable, paramsOf, rowOf, table } from "./lists.js";
import { render, state } from "./session.js";

const DELIVERY_STATUSES = ["pending", "succeeded", "failed", "dead"];
const POLL_MS = 500;
const POLL_TRIES = 60;

function deliveryColumns() {
  return [
    { title: "Delivery", cell: (d) => link(["deliveries", d.id]), class: "id" },
    { title: "Status", cell: (d) => badge(d.status) },
    { title: "Event", cell: (d) => d.event_type },
    { title: "Subscription", cell: (d) => link(["subscriptions", d.subscription_id]), class: "id" },
    { title: "Payment", cell: (d) => link(["payments", d.payment_id]), class: "id" },
    { title: "Attempts", cell: (d) => d.attempts },
    { title: "Last code", cell: (d) => d.last_status_code },
    { title: "Updated", cell: (d) => when(d.updated_at), class: "time" },
    ...appColumn(),
  ];
}

export function deliveriesOf(filters) {
  return pagedTable(deliveryColumns(), null, pageOf("/v1/deliveries", filters), "No deliveries.");
}

export async function deliveriesView(params) {
  const names = ["status", "subscription_id", "event_id"];
  return [
    el("h1", {}, "Deliveries"),
    filterForm("deliveries", params, [
      { name: "status", label: "Status", options: DELIVERY_STATUSES },
      { name: "subscription_id", label: "Subscription", hint: "sub_…" },
      { name: "event_id", label: "Event", hint: "evt_…" },
    ]),
    await pagedTable(deliveryColumns(), "deliveries", pageOf("/v1/deliveries", paramsOf(params, names)), "No deliveries."),
  ];
}

export async function deliveryView(id, token) {
  const path = idPath("/v1/deliveries", id);
  const d = await api("GET", path);
  return [
    el("h1", {}, "Delivery ", el("span", { class: "id" }, d.id)),
    card("Delivery", fields([
      ["Status", badge(d.status)], ["Event", eventLink(d.event_id)], ["Type", d.event_type],
      ["Subscription", link(["subscriptions", d.subscription_id])], ["Payment", link(["payments", d.payment_id])],
      ["Attempts", d.attempts], ["Next attempt", when(d.next_attempt_at)], ["Last error", d.last_error],
      ["Succeeded", when(d.succeeded_at)], ["App", d.app_id], ["Created", when(d.created_at)],
    ]), el("div", { class: "actions" },
      button("Redeliver", () => redeliver(path, d, token), { id: "redeliver" }),
      button("Refresh", async () => render(), { id: "refresh", class: "quiet" }))),
    card("Attempts", attemptsTable(d.attempt_log)),
    card("Recover this subscription's failed deliveries", recoverForm(d.subscription_id, d.created_at)),
  ];
}

function attemptsTable(attempts) {
  if (!attempts.length) return el("p", { class: "muted", id: "attempts" }, "No attempt yet.");
  const columns = [
    { title: "#", cell: (a) => a.attempt },
    { title: "At", cell: (a) => when(a.at), class: "time" },
    { title: "Status code", cell: (a) => a.status_code, class: "code" },
    { title: "Latency", cell: (a) => ms(a.latency_ms) },
    { title: "Response body", cell: (a) => el("pre", { class: "wrap body" }, show(a.response_body)) },
    { title: "Error", cell: (a) => (a.refused_by_ssrf_guard ? `refused by the SSRF guard: ${show(a.error)}` : a.error) },
  ];
  const grid = table(columns, "attempts");
  for (const attempt of attempts) grid.tBodies[0].append(rowOf(columns, { id: attempt.attempt, ...attempt }));
  return grid;
}

// Queues a redelivery, then polls the delivery until its new attempt is in (or the view changed).
async function redeliver(path, before, token) {
  await api("POST", `${path}/redeliver`);
  flash("Redelivery queued: waiting for its attempt…");
  const seen = before.attempt_log.length;
  for (let tries = 0; tries < POLL_TRIES && token === state.view; tries += 1) {
    await new Promise((done) => setTimeout(done, POLL_MS)); // the page polls; tests wait on the DOM
    const now = await api("GET", path);
    if (now.attempt_log.length > seen && now.status !== "pending") {
      flash(`Redelivered: ${now.status}.`);
      break;
    }
  }
  if (token === state.view) render();
}

// Re-sends a subscription's failed and dead deliveries of a time range (default: the last day,
// or from an hour before `around`).
export function recoverForm(subscriptionId, around) {
  const start = around ? new Date(Date.parse(around) - 3600e3) : new Date(Date.now() - 86400e3);
  const form = el("form", { class: "filters recover", method: "post" },
    el("label", {}, "Since", el("input", { name: "since", value: start.toISOString() })),
    el("label", {}, "Until", el("input", { name: "until", value: new Date().toISOString() })),
    el("button", { type: "submit" }, "Recover"),
    el("span", { class: "muted" }, "re-sends its failed and dead deliveries of that range"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(form.querySelector("button"), async () => {
      const body = { since: form.elements.since.value.trim(), until: form.elements.until.value.trim() };
      const result = await api("POST", idPath("/v1/subscriptions", subscriptionId) + "/recover", body);
      flash(`Recover queued ${result.count} delivery(ies).`);
    });
  });
  return form;
}
