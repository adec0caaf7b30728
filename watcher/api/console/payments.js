// Payments: the list (filtered by status) and one payment's page with its status timeline,
// its metadata and the deliveries of its event.

import { api, idPath } from "./api.js";
import { deliveriesOf } from "./deliveries.js";
import { badge, card, el, eventLink, fields, link, show, when } from "./dom.js";
import { appColumn, filterForm, pageOf, pagedTable, paramsOf } from "./lists.js";

const PAYMENT_STATUSES = ["generating", "receiving", "sending", "approved", "completed", "failed", "expired"];

export async function paymentsView(params) {
  const columns = [
    { title: "Payment", cell: (p) => link(["payments", p.id]), class: "id" },
    { title: "Status", cell: (p) => badge(p.status) },
    { title: "Amount (msat)", cell: (p) => p.amount_msats },
    { title: "Description", cell: (p) => p.description },
    { title: "Created", cell: (p) => when(p.created_at), class: "time" },
    { title: "Final", cell: (p) => when(p.final_at), class: "time" },
    ...appColumn(),
  ];
  const filters = paramsOf(params, ["status"]);
  return [
    el("h1", {}, "Payments"),
    filterForm("payments", params, [{ name: "status", label: "Status", options: PAYMENT_STATUSES }]),
    await pagedTable(columns, "payments", pageOf("/v1/payments", filters), "No payments."),
  ];
}

export async function paymentView(id) {
  const p = await api("GET", idPath("/v1/payments", id));
  const deliveries = p.event_id ? await deliveriesOf({ event_id: p.event_id }) : null;
  return [
    el("h1", {}, "Payment ", el("span", { class: "id" }, p.id)),
    card("Status timeline", timeline(p)),
    card("Payment", fields([
      ["Status", badge(p.status)], ["Amount (msat)", p.amount_msats], ["Description", p.description],
      ["Watching", p.watching], ["Source", p.source], ["Wallet", p.wallet_id], ["App", p.app_id],
      ["Payment hash", p.payment_hash], ["Polls", p.poll_count], ["Last poll", when(p.last_poll_at)],
      ["Next poll", when(p.next_poll_at)], ["Errors", p.error_count], ["Last error", p.last_error],
      ["Stopped", p.stopped_reason], ["Event", eventLink(p.event_id)],
    ])),
    card("Metadata", metadataTable(p.metadata)),
    deliveries ? card("Deliveries of its event", deliveries) : null,
  ];
}

// Created, then each transition ({from, to, at, event_id}) with its time and event.
function timeline(p) {
  const steps = [{ from: null, to: "created", at: p.created_at, event_id: null }, ...p.transitions];
  return el("ol", { class: "timeline", id: "timeline" }, steps.map((t) => el("li", {},
    when(t.at), " ",
    t.from ? [el("span", { class: "muted" }, t.from), " → "] : null, badge(t.to),
    t.event_id ? [" ", eventLink(t.event_id)] : null)));
}

function metadataTable(metadata) {
  const entries = Object.entries(metadata);
  if (!entries.length) return el("p", { class: "muted" }, "None.");
  return el("table", { id: "metadata" }, el("tbody", {},
    entries.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, show(v))))));
}
