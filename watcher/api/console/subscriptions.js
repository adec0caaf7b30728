// Subscriptions: the list with a create form, and one subscription's page: its fields and
// actions (enable/disable, rotate the secret, send a test), its health over the last 24 hours,
// its recent deliveries, recover and edit. A new secret is shown once, on the next render.

import { api, idPath } from "./api.js";
import { deliveriesOf, recoverForm } from "./deliveries.js";
import { button, busy, card, el, enabledBadge, errorBox, fields, flash, link, ms, route, when } from "./dom.js";
import { appColumn, pageOf, pagedTable } from "./lists.js";
import { render, state } from "./session.js";

export const EVENT_TYPES = ["payment.completed", "payment.failed", "payment.expired"];

export async function subscriptionsView() {
  const columns = [
    { title: "Subscription", cell: (s) => link(["subscriptions", s.id]), class: "id" },
    { title: "URL", cell: (s) => s.url, class: "wrap" },
    { title: "Description", cell: (s) => s.description },
    { title: "Events", cell: (s) => s.event_types.join(", ") },
    { title: "Enabled", cell: (s) => enabledBadge(s.enabled) },
    { title: "Why disabled", cell: (s) => s.disabled_reason },
    ...appColumn(),
  ];
  return [
    el("h1", {}, "Subscriptions"),
    await pagedTable(columns, "subscriptions", pageOf("/v1/subscriptions", {}), "No subscriptions."),
    card("New subscription", subscriptionForm(null, createSubscription)),
  ];
}

function subscriptionForm(sub, onSubmit) {
  const types = new Set(sub ? sub.event_types : EVENT_TYPES);
  const form = el("form", { class: "stacked", method: "post", id: sub ? "edit-form" : "create-form" },
    el("label", {}, "URL", el("input", { name: "url", type: "url", required: true, value: sub ? sub.url : "" })),
    el("label", {}, "Description", el("input", { name: "description", value: sub ? sub.description || "" : "" })),
    el("fieldset", {}, el("legend", {}, "Events"), EVENT_TYPES.map((t) => el("label", { class: "inline" },
      el("input", { type: "checkbox", name: "event_types", value: t, checked: types.has(t) }), t))),
    el("button", { type: "submit" }, sub ? "Save" : "Create"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const submit = form.querySelector("button[type=submit]");
    busy(submit, () => onSubmit(formBody(form)));
  });
  return form;
}

function formBody(form) {
  const checked = [...form.querySelectorAll("input[name=event_types]:checked")].map((i) => i.value);
  const description = form.elements.description.value.trim();
  return { url: form.elements.url.value.trim(), description: description || null, event_types: checked };
}

async function createSubscription(body) {
  const made = await api("POST", "/v1/subscriptions", body);
  state.secret = { id: made.id, secret: made.secret, why: "created", until: null };
  location.hash = route("subscriptions", made.id);
}

export async function subscriptionView(id) {
  const path = idPath("/v1/subscriptions", id);
  const sub = await api("GET", path);
  const [health, deliveries] = await Promise.all([healthCard(path), deliveriesOf({ subscription_id: sub.id })]);
  return [
    el("h1", {}, "Subscription ", el("span", { class: "id" }, sub.id)),
    secretCard(sub.id),
    card("Subscription", fields([
      ["URL", sub.url], ["Description", sub.description], ["Events", sub.event_types.join(", ")],
      ["Enabled", enabledBadge(sub.enabled)], ["Why disabled", sub.disabled_reason],
      ["Filters", filtersText(sub.filters)], ["App", sub.app_id], ["Created", when(sub.created_at)],
      ["Updated", when(sub.updated_at)],
    ]), subscriptionActions(sub, path)),
    health,
    card("Recent deliveries", deliveries),
    card("Recover", recoverForm(sub.id, null)),
    card("Edit", subscriptionForm(sub, (body) => saveSubscription(path, body))),
  ];
}

// {wallet_id, metadata}: a payment must match all of them to be delivered.
function filtersText(filters) {
  const parts = [];
  if (filters.wallet_id) parts.push(`wallet ${filters.wallet_id}`);
  for (const [k, v] of Object.entries(filters.metadata)) parts.push(`${k} = ${v}`);
  return parts.length ? parts.join("; ") : "none: every payment";
}

function subscriptionActions(sub, path) {
  return el("div", { class: "actions" },
    button(sub.enabled ? "Disable" : "Enable", async () => {
      await api("PATCH", path, { enabled: !sub.enabled });
      flash(sub.enabled ? "Disabled." : "Enabled.");
      render();
    }, { id: "toggle-enabled" }),
    button("Rotate secret", async () => {
      if (!window.confirm("Rotate the signing secret? The old one keeps working for a while.")) return;
      const rotated = await api("POST", `${path}/rotate-secret`);
      state.secret = { id: sub.id, secret: rotated.secret, why: "rotated", until: rotated.previous_secrets_expire_at };
      render();
    }, { id: "rotate" }),
    button("Send a test", async () => {
      const sent = await api("POST", `${path}/test`);
      flash(`Test event ${sent.event_id} queued${sent.delivery_id ? " as delivery " + sent.delivery_id : ""}.`);
      render();
    }, { id: "send-test" }));
}

async function saveSubscription(path, body) {
  await api("PATCH", path, body);
  flash("Saved.");
  render();
}

function secretCard(id) {
  const held = state.secret;
  state.secret = null; // shown once: gone on the next render
  if (!held || held.id !== id) return null;
  const note = held.until ? ` The previous secret keeps verifying until ${held.until}.` : "";
  return el("section", { class: "card secret", id: "secret" },
    el("h2", {}, held.why === "rotated" ? "New signing secret" : "Signing secret"),
    el("p", {}, "Store it now: it is shown only this once." + note),
    el("pre", { class: "wrap" }, held.secret));
}

// GET …/health. A refused key (401) logs out like any other view's; any other failure (a 404
// included) is shown as the error it is, in the card, and the rest of the page still works.
async function healthCard(path) {
  const box = el("section", { class: "card", id: "health" }, el("h2", {}, "Health, last 24 h"));
  try {
    box.append(healthFields(await api("GET", `${path}/health`)));
  } catch (err) {
    if (err.status === 401) throw err;
    box.append(errorBox(err));
  }
  return box;
}

// SubscriptionHealthOut: subscription_id, since, attempts, succeeded, failed, success_rate
// (null: no attempts), latency_ms {p50, p99} (null: no attempts), last_failure {at, kind,
// status_code, error} (null: none), enabled, disabled_reason.
function healthFields(h) {
  const rate = h.success_rate === null ? "no attempts" : `${(h.success_rate * 100).toFixed(1)} %`;
  return fields([
    ["Since", when(h.since)],
    ["Attempts", h.attempts],
    ["Succeeded", h.succeeded],
    ["Failed", h.failed],
    ["Success rate", rate],
    ["Latency p50", h.latency_ms === null ? "no attempts" : ms(h.latency_ms.p50)],
    ["Latency p99", h.latency_ms === null ? "no attempts" : ms(h.latency_ms.p99)],
    ["Last failure", h.last_failure === null ? "none" : lastFailure(h.last_failure)],
    ["Enabled", enabledBadge(h.enabled)],
    ["Why disabled", h.disabled_reason],
  ]);
}

function lastFailure(last) {
  const parts = [last.kind];
  if (last.status_code !== null) parts.push(`HTTP ${last.status_code}`);
  if (last.error) parts.push(last.error);
  return el("span", {}, when(last.at), " · ", parts.join(" · "));
}
