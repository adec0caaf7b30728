// Events: the list (by type or payment), newest first, each with its body as delivered and
// a link to the deliveries that carry it (there is no read-one route for events).

import { query } from "./api.js";
import { el, link, route, when } from "./dom.js";
import { appColumn, filterForm, pageOf, pagedTable, paramsOf } from "./lists.js";
import { EVENT_TYPES } from "./subscriptions.js";

export async function eventsView(params) {
  const names = ["type", "payment_id"];
  const columns = [
    { title: "Event", cell: (e) => e.id, class: "id" },
    { title: "Type", cell: (e) => e.type },
    { title: "Payment", cell: (e) => link(["payments", e.payment_id]), class: "id" },
    { title: "Subscription", cell: (e) => link(["subscriptions", e.subscription_id]), class: "id" },
    { title: "Created", cell: (e) => when(e.created_at), class: "time" },
    { title: "Deliveries", cell: (e) => el("a", { href: query(route("deliveries"), { event_id: e.id }) }, "deliveries") },
    { title: "Body", cell: (e) => el("details", {}, el("summary", {}, "body"), el("pre", { class: "wrap" }, JSON.stringify(e.body, null, 2))) },
    ...appColumn(),
  ];
  return [
    el("h1", {}, "Events"),
    filterForm("events", params, [
      { name: "type", label: "Type", options: [...EVENT_TYPES, "webhook.test"] },
      { name: "payment_id", label: "Payment", hint: "payment id" },
    ]),
    await pagedTable(columns, "events", pageOf("/v1/events", { ...paramsOf(params, names), order: "desc" }), "No events."),
  ];
}
