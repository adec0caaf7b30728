// voltage-watcher console: a static page over the /v1 API. No framework, no build step.
// This module logs in and out and routes `#/section[/id][?filters]` to the views.
//
// Safety rules the modules keep:
// - Every value from the API reaches the page as text (dom.js): never innerHTML.
// - The key is held in memory only (session.js) and sent only as `Authorization: Bearer`
//   (api.js); it is never put in a URL (routes are `#/section/id`, ids only) or in storage.
// - The API sets no cookies, so there is nothing a cross-site request could ride on (no CSRF).

import { api } from "./api.js";
import { deliveriesView, deliveryView } from "./deliveries.js";
import { $, el, errorBox, flash, present } from "./dom.js";
import { eventsView } from "./events.js";
import { paymentView, paymentsView } from "./payments.js";
import { forgetKey, hasKey, onRender, setKey, state } from "./session.js";
import { subscriptionView, subscriptionsView } from "./subscriptions.js";

const SECTIONS = {
  payments: { list: paymentsView, item: paymentView },
  subscriptions: { list: subscriptionsView, item: subscriptionView },
  deliveries: { list: deliveriesView, item: deliveryView },
  events: { list: eventsView, item: null },
};

// --- logging in and out ------------------------------------------------------------------

async function login(event) {
  event.preventDefault();
  const given = $("login-key").value.trim();
  if (!given) return;
  setKey(given);
  try {
    await api("GET", "/v1/subscriptions?limit=1");
  } catch (err) {
    forgetKey();
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
  forgetKey();
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

// --- routing -------------------------------------------------------------------------------

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
  if (!hasKey()) return logout();
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

// --- start: a module runs once the document is parsed; a fresh page holds no key -----------

onRender(render);
$("login-form").addEventListener("submit", login);
$("logout").addEventListener("click", () => logout("Logged out."));
window.addEventListener("hashchange", () => hasKey() && render());
logout();
