// voltage-watcher console: a static page over the /v1 API. No framework, no build step.
//
// Safety rules this file keeps:
// - Every value from the API reaches the page as text (el() appends strings as text nodes,
//   attributes go through setAttribute): never innerHTML, so a payment's metadata or a
//   subscription's description that holds markup shows as that markup, inert.
// - The key lives in this tab's sessionStorage and is sent only as `Authorization: Bearer`;
//   it is never put in a URL (routes are `#/section/id`, ids only).
// - The API sets no cookies, so there is nothing a cross-site request could ride on (no CSRF).
"use strict";

(() => {
  const KEY_SLOT = "voltage-watcher.console.key";
  const POLL_MS = 500;
  const POLL_TRIES = 60;
  const state = { admin: false, view: 0, secret: null };

  // --- DOM helpers -----------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "on") {
        for (const [type, handler] of Object.entries(value)) node.addEventListener(type, handler);
      } else if (name === "href") {
        node.setAttribute("href", String(value).startsWith("#/") ? value : "#/");
      } else {
        node.setAttribute(name, value === true ? "" : String(value));
      }
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child)); // a string: a text node
    }
    return node;
  }

  function show(value) {
    if (value === null || value === undefined || value === "") return "—";
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  // A time as the API gives it (RFC 3339), shown to the second; the exact value in its title.
  function when(iso) {
    if (!iso) return "—";
    const short = String(iso).replace("T", " ").replace(/\.\d+/, "").replace(/Z$/, " UTC");
    return el("time", { datetime: iso, title: iso }, short);
  }

  function route(...parts) {
    return "#/" + parts.map((p) => encodeURIComponent(String(p))).join("/");
  }

  function link(parts, label) {
    const id = parts[parts.length - 1];
    if (id === null || id === undefined || id === "") return "—";
    return el("a", { href: route(...parts) }, label === undefined ? String(id) : label);
  }

  // There is no read-one route for events: an event's page is the deliveries that carry it.
  function eventLink(eventId) {
    if (!eventId) return "—";
    return el("a", { href: query(route("deliveries"), { event_id: eventId }) }, eventId);
  }

  function badge(status) {
    const kind = String(status || "").replace(/[^a-z_-]/gi, "");
    return el("span", { class: "badge badge-" + kind }, show(status));
  }

  function fields(rows) {
    return el("dl", { class: "fields" },
      rows.map(([label, value]) => [el("dt", {}, label), el("dd", {}, value instanceof Node ? value : show(value))]));
  }

  const present = (nodes) => nodes.flat(Infinity).filter((n) => n !== null && n !== undefined);

  function card(title, ...children) {
    return el("section", { class: "card" }, title ? el("h2", {}, title) : null, children);
  }

  function button(label, onClick, attrs) {
    const node = el("button", { type: "button", ...(attrs || {}) }, label);
    node.addEventListener("click", () => busy(node, onClick));
    return node;
  }

  async function busy(node, action) {
    node.disabled = true;
    try {
      await action();
    } catch (err) {
      flash(err.message, "error");
    } finally {
      node.disabled = false;
    }
  }

  function flash(message, kind) {
    const box = $("flash");
    box.textContent = message;
    box.className = "flash " + (kind === "error" ? "flash-error" : "flash-ok");
    box.hidden = !message;
  }

  function errorBox(err) {
    return el("p", { class: "error", role: "alert" }, err && err.message ? err.message : String(err));
  }

  // --- the API ---------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      const detail = body && body.error && body.error.detail ? body.error.detail : "request failed";
      super(`${status}: ${detail}`);
      this.status = status;
      this.body = body;
    }
  }

  const storedKey = () => sessionStorage.getItem(KEY_SLOT);

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + storedKey(), Accept: "application/json" };
    const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_ignored) {
      data = null;
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  function query(path, params) {
    const search = new URLSearchParams();
    for (const [name, value] of Object.entries(params || {})) {
      if (value !== null && value !== undefined && value !== "") search.set(name, value);
    }
    const text = search.toString();
    return text ? `${path}?${text}` : path;
  }

  // --- logging in and out ------------------------------------------------------------------

  async function login(event) {
    event.preventDefault();
    const given = $("login-key").value.trim();
    if (!given) return;
    sessionStorage.setItem(KEY_SLOT, given);
    try {
      await api("GET", "/v1/subscriptions?limit=1");
    } catch (err) {
      sessionStorage.removeItem(KEY_SLOT);
      $("login-error").textContent = err.status === 401 ? "That key was refused." : err.message;
      return;
    }
    $("login-key").value = "";
    $("login-error").textContent = "";
    await enter();
  }

  async function enter() {
    try {
      await api("GET", "/v1/apps");
      state.admin = true;
    } catch (err) {
      if (err.status === 401) return logout("The key was refused: log in again.");
      state.admin = false; // 403: an app's key
    }
    $("who").textContent = state.admin ? "admin key: every app" : "app key: this app only";
    $("login").hidden = true;
    $("nav").hidden = false;
    $("logout").hidden = false;
    render();
  }

  function logout(message) {
    sessionStorage.removeItem(KEY_SLOT);
    state.view += 1; // stops any poll of the old view
    state.admin = false;
    state.secret = null;
    $("view").replaceChildren();
    $("who").textContent = "";
    $("nav").hidden = true;
    $("logout").hidden = true;
    flash("");
    $("login-error").textContent = typeof message === "string" ? message : "";
    $("login").hidden = false;
    $("login-key").focus();
  }

  // --- routing: #/section[/id][?filters] ------------------------------------------------------

  const SECTIONS = {
    payments: { list: paymentsView, item: paymentView },
    subscriptions: { list: subscriptionsView, item: subscriptionView },
    deliveries: { list: deliveriesView, item: deliveryView },
    events: { list: eventsView, item: null },
  };

  function parseHash() {
    const [path, search] = location.hash.replace(/^#\/?/, "").split("?", 2);
    let parts;
    try {
      parts = path.split("/").map(decodeURIComponent);
    } catch (_malformed) {
      parts = [];
    }
    const section = SECTIONS[parts[0]] ? parts[0] : "payments";
    return { section, id: parts[1] || null, params: new URLSearchParams(search || "") };
  }

  function render() {
    if (!storedKey()) return logout();
    const { section, id, params } = parseHash();
    for (const a of document.querySelectorAll("#nav a")) {
      a.classList.toggle("current", a.dataset.section === section);
    }
    const token = ++state.view;
    const view = $("view");
    view.replaceChildren(el("p", { class: "muted" }, "Loading…"));
    const handlers = SECTIONS[section];
    const build = id && handlers.item ? handlers.item(id, token) : handlers.list(params);
    build.then(
      (nodes) => token === state.view && view.replaceChildren(...present([nodes])),
      (err) => {
        if (err.status === 401) return logout("The key was refused (revoked or rotated?): log in again.");
        if (token === state.view) view.replaceChildren(errorBox(err));
      },
    );
  }

  // --- lists -----------------------------------------------------------------------------

  function table(columns, id) {
    const head = el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c.title))));
    return el("table", { id }, head, el("tbody"));
  }

  function rowOf(columns, item) {
    return el("tr", { "data-id": item.id }, columns.map((c) => {
      const value = c.cell(item);
      return el("td", { class: c.class }, value instanceof Node ? value : show(value));
    }));
  }

  async function pagedTable(columns, id, fetchPage, empty) {
    const grid = table(columns, id);
    const body = grid.tBodies[0];
    const more = el("button", { type: "button", class: "quiet", hidden: true }, "Load more");
    let cursor = null;
    const load = async () => {
      const page = await fetchPage(cursor);
      for (const item of page.items || []) body.append(rowOf(columns, item));
      cursor = page.next_cursor || null;
      more.hidden = !cursor;
      if (!body.rows.length) {
        body.append(el("tr", {}, el("td", { colspan: columns.length, class: "muted" }, empty)));
      }
    };
    more.addEventListener("click", () => busy(more, load));
    await load();
    return el("div", { class: "paged" }, grid, more);
  }

  function filterForm(section, params, inputs) {
    const form = el("form", { class: "filters", method: "post" },
      inputs.map((input) => el("label", {}, input.label, control(input, params.get(input.name)))),
      el("button", { type: "submit" }, "Filter"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const chosen = {};
      for (const input of inputs) chosen[input.name] = form.elements[input.name].value.trim();
      location.hash = query(route(section), chosen);
    });
    return form;
  }

  function control(input, value) {
    if (!input.options) return el("input", { name: input.name, value: value || "", placeholder: input.hint || "" });
    const select = el("select", { name: input.name },
      ["", ...input.options].map((o) => el("option", { value: o }, o || "any")));
    select.value = value || "";
    return select;
  }

  const appColumn = () => (state.admin ? [{ title: "App", cell: (i) => i.app_id || "admin" }] : []);
  const pageOf = (path, params) => (cursor) => api("GET", query(path, { ...params, cursor, limit: 50 }));
  const paramsOf = (params, names) => Object.fromEntries(names.map((n) => [n, params.get(n)]));

  // --- payments --------------------------------------------------------------------------

  const PAYMENT_STATUSES = ["generating", "receiving", "sending", "approved", "completed", "failed", "expired"];

  async function paymentsView(params) {
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

  async function paymentView(id) {
    const p = await api("GET", `/v1/payments/${encodeURIComponent(id)}`);
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
      p.payment_request ? card("Invoice (BOLT11)", el("pre", { class: "wrap" }, p.payment_request)) : null,
    ];
  }

  function timeline(p) {
    const steps = [{ to: "created", at: p.created_at }, ...(p.transitions || [])];
    return el("ol", { class: "timeline", id: "timeline" }, steps.map((t) => el("li", {},
      when(t.at), " ",
      t.from ? [el("span", { class: "muted" }, t.from), " → "] : null, badge(t.to),
      t.event_id ? [" ", eventLink(t.event_id)] : null)));
  }

  function metadataTable(metadata) {
    const entries = Object.entries(metadata || {});
    if (!entries.length) return el("p", { class: "muted" }, "None.");
    return el("table", { id: "metadata" }, el("tbody", {},
      entries.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, show(v))))));
  }

  // --- subscriptions ---------------------------------------------------------------------

  const EVENT_TYPES = ["payment.completed", "payment.failed", "payment.expired"];

  async function subscriptionsView() {
    const columns = [
      { title: "Subscription", cell: (s) => link(["subscriptions", s.id]), class: "id" },
      { title: "URL", cell: (s) => s.url, class: "wrap" },
      { title: "Description", cell: (s) => s.description },
      { title: "Events", cell: (s) => (s.event_types || []).join(", ") },
      { title: "Enabled", cell: (s) => badge(s.enabled ? "enabled" : "disabled") },
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
    state.secret = { id: made.id, secret: made.secret, why: "created" };
    location.hash = route("subscriptions", made.id);
  }

  async function subscriptionView(id) {
    const path = `/v1/subscriptions/${encodeURIComponent(id)}`;
    const sub = await api("GET", path);
    const [health, deliveries] = await Promise.all([healthCard(sub), deliveriesOf({ subscription_id: sub.id })]);
    return [
      el("h1", {}, "Subscription ", el("span", { class: "id" }, sub.id)),
      secretCard(sub.id),
      card("Subscription", fields([
        ["URL", sub.url], ["Description", sub.description], ["Events", (sub.event_types || []).join(", ")],
        ["Enabled", badge(sub.enabled ? "enabled" : "disabled")], ["Why disabled", sub.disabled_reason],
        ["Filters", filtersText(sub.filters)], ["App", sub.app_id], ["Created", when(sub.created_at)], ["Updated", when(sub.updated_at)],
      ]), subscriptionActions(sub, path)),
      health,
      card("Recent deliveries", deliveries),
      card("Recover", recoverForm(sub.id, null)),
      card("Edit", subscriptionForm(sub, (body) => saveSubscription(path, body))),
    ];
  }

  function filtersText(filters) {
    const parts = [];
    if (filters && filters.wallet_id) parts.push(`wallet ${filters.wallet_id}`);
    for (const [k, v] of Object.entries((filters && filters.metadata) || {})) parts.push(`${k} = ${v}`);
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

  async function healthCard(sub) {
    const box = el("section", { class: "card", id: "health" }, el("h2", {}, "Health, last 24 h"));
    try {
      box.append(healthFields(await api("GET", `/v1/subscriptions/${encodeURIComponent(sub.id)}/health`), sub));
    } catch (err) {
      if (err.status === 401) throw err;
      box.append(el("p", { class: "muted" }, err.status === 404 ? "health unavailable" : err.message));
    }
    return box;
  }

  // The health answer's names may vary a little: look for each value under the likely ones.
  function pick(source, ...names) {
    for (const name of names) {
      const value = name.split(".").reduce((o, k) => (o && typeof o === "object" ? o[k] : undefined), source);
      if (value !== undefined) return value;
    }
    return undefined;
  }

  function healthFields(h, sub) {
    const rate = pick(h, "success_rate", "successRate");
    const last = pick(h, "last_failure", "lastFailure");
    const ms = (v) => (v === null || v === undefined ? null : `${Number(v).toFixed(1)} ms`);
    const hours = pick(h, "window_hours");
    const since = pick(h, "since", "window_start");
    return fields([
      ["Window", since ? `since ${since}` : `${hours || 24} h`],
      ["Attempts", pick(h, "attempts", "total")],
      ["Succeeded", pick(h, "succeeded", "successes")],
      ["Failed", pick(h, "failed", "failures")],
      ["Success rate", rate === null || rate === undefined ? "no attempts" : `${(rate <= 1 ? rate * 100 : rate).toFixed(1)} %`],
      ["Latency p50", ms(pick(h, "latency_ms.p50", "latency.p50", "latency_p50_ms", "p50_ms"))],
      ["Latency p99", ms(pick(h, "latency_ms.p99", "latency.p99", "latency_p99_ms", "p99_ms"))],
      ["Last failure", last ? lastFailure(last) : "none"],
      ["Enabled", pick(h, "enabled") ?? sub.enabled],
      ["Why disabled", pick(h, "disabled_reason") ?? sub.disabled_reason],
    ]);
  }

  function lastFailure(last) {
    if (typeof last !== "object") return show(last);
    const parts = [show(pick(last, "at"))];
    const code = pick(last, "status_code");
    if (code) parts.push(`HTTP ${code}`);
    for (const name of ["kind", "error", "reason"]) {
      const value = pick(last, name);
      if (value) parts.push(show(value));
    }
    return parts.join(" · ");
  }

  // --- deliveries ------------------------------------------------------------------------

  const DELIVERY_STATUSES = ["pending", "succeeded", "failed", "dead"];

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

  function deliveriesOf(filters) {
    return pagedTable(deliveryColumns(), null, pageOf("/v1/deliveries", filters), "No deliveries.");
  }

  async function deliveriesView(params) {
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

  async function deliveryView(id, token) {
    const path = `/v1/deliveries/${encodeURIComponent(id)}`;
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
      card("Attempts", attemptsTable(d.attempt_log || [])),
      card("Recover this subscription's failed deliveries", recoverForm(d.subscription_id, d.created_at)),
    ];
  }

  function attemptsTable(attempts) {
    const columns = [
      { title: "#", cell: (a) => a.attempt },
      { title: "At", cell: (a) => when(a.at), class: "time" },
      { title: "Status code", cell: (a) => a.status_code, class: "code" },
      { title: "Latency", cell: (a) => (a.latency_ms === null || a.latency_ms === undefined ? null : `${Number(a.latency_ms).toFixed(1)} ms`) },
      { title: "Response body", cell: (a) => el("pre", { class: "wrap body" }, show(a.response_body)) },
      { title: "Error", cell: (a) => (a.refused_by_ssrf_guard ? `refused by the SSRF guard: ${show(a.error)}` : a.error) },
    ];
    const grid = table(columns, "attempts");
    for (const attempt of attempts) grid.tBodies[0].append(rowOf(columns, { id: attempt.attempt, ...attempt }));
    if (!attempts.length) return el("p", { class: "muted", id: "attempts" }, "No attempt yet.");
    return grid;
  }

  async function redeliver(path, before, token) {
    await api("POST", `${path}/redeliver`);
    flash("Redelivery queued: waiting for its attempt…");
    const seen = (before.attempt_log || []).length;
    for (let tries = 0; tries < POLL_TRIES && token === state.view; tries += 1) {
      await new Promise((done) => setTimeout(done, POLL_MS)); // the page polls; tests wait on the DOM
      const now = await api("GET", path);
      if ((now.attempt_log || []).length > seen && now.status !== "pending") {
        flash(`Redelivered: ${now.status}.`);
        break;
      }
    }
    if (token === state.view) render();
  }

  function recoverForm(subscriptionId, around) {
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
        const result = await api("POST", `/v1/subscriptions/${encodeURIComponent(subscriptionId)}/recover`, body);
        flash(`Recover queued ${result.count} delivery(ies).`);
      });
    });
    return form;
  }

  // --- events ----------------------------------------------------------------------------

  async function eventsView(params) {
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

  // --- start -----------------------------------------------------------------------------

  function start() {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", () => logout("Logged out."));
    window.addEventListener("hashchange", () => storedKey() && render());
    if (storedKey()) enter();
    else logout();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
