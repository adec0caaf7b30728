// Building the page. Every value from the API reaches it as text: el() appends strings as text
// nodes and sets attributes with setAttribute, never innerHTML, so a description or metadata
// that holds markup shows as that markup, inert. Links are in-page routes (`#/…`) only.

import { query } from "./api.js";

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "href") {
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

export function show(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// A time as the API gives it (RFC 3339), shown to the second; the exact value in its title.
export function when(iso) {
  if (!iso) return "—";
  const short = String(iso).replace("T", " ").replace(/\.\d+/, "").replace(/Z$/, " UTC");
  return el("time", { datetime: iso, title: iso }, short);
}

export const ms = (value) => (value === null ? null : `${Number(value).toFixed(1)} ms`);

export function route(...parts) {
  return "#/" + parts.map((p) => encodeURIComponent(String(p))).join("/");
}

export function link(parts, label) {
  const id = parts[parts.length - 1];
  if (id === null || id === undefined || id === "") return "—";
  return el("a", { href: route(...parts) }, label === undefined ? String(id) : label);
}

// There is no read-one route for events: an event's page is the deliveries that carry it.
export function eventLink(eventId) {
  if (!eventId) return "—";
  return el("a", { href: query(route("deliveries"), { event_id: eventId }) }, eventId);
}

export function badge(status) {
  const kind = String(status || "").replace(/[^a-z_-]/gi, "");
  return el("span", { class: "badge badge-" + kind }, show(status));
}

export const enabledBadge = (enabled) => badge(enabled ? "enabled" : "disabled");

export function fields(rows) {
  return el("dl", { class: "fields" }, rows.map(([label, value]) =>
    [el("dt", {}, label), el("dd", {}, value instanceof Node ? value : show(value))]));
}

export const present = (nodes) => nodes.flat(Infinity).filter((n) => n !== null && n !== undefined);

export function card(title, ...children) {
  return el("section", { class: "card" }, title ? el("h2", {}, title) : null, children);
}

export function button(label, onClick, attrs) {
  const node = el("button", { type: "button", ...(attrs || {}) }, label);
  node.addEventListener("click", () => busy(node, onClick));
  return node;
}

// Runs a button's action with the button disabled; a failure is flashed.
export async function busy(node, action) {
  node.disabled = true;
  try {
    await action();
  } catch (err) {
    flash(err.message, "error");
  } finally {
    node.disabled = false;
  }
}

export function flash(message, kind) {
  const box = $("flash");
  box.textContent = message;
  box.className = "flash " + (kind === "error" ? "flash-error" : "flash-ok");
  box.hidden = !message;
}

export function errorBox(err) {
  return el("p", { class: "error", role: "alert" }, err && err.message ? err.message : String(err));
}
