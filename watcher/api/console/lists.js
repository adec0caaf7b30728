// Lists: a table of an API page with "Load more" (the API's cursor), and the filter forms
// whose values go into the route (`#/section?name=value`), never to a server.

import { api, query } from "./api.js";
import { busy, el, route, show } from "./dom.js";
import { state } from "./session.js";

export function table(columns, id) {
  const head = el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c.title))));
  return el("table", { id }, head, el("tbody"));
}

export function rowOf(columns, item) {
  return el("tr", { "data-id": item.id }, columns.map((c) => {
    const value = c.cell(item);
    return el("td", { class: c.class }, value instanceof Node ? value : show(value));
  }));
}

// `fetchPage(cursor)` answers one of the API's pages: {items, next_cursor}.
export async function pagedTable(columns, id, fetchPage, empty) {
  const grid = table(columns, id);
  const body = grid.tBodies[0];
  const more = el("button", { type: "button", class: "quiet", hidden: true }, "Load more");
  let cursor = null;
  const load = async () => {
    const page = await fetchPage(cursor);
    for (const item of page.items) body.append(rowOf(columns, item));
    cursor = page.next_cursor;
    more.hidden = cursor === null;
    if (!body.rows.length) {
      body.append(el("tr", {}, el("td", { colspan: columns.length, class: "muted" }, empty)));
    }
  };
  more.addEventListener("click", () => busy(more, load));
  await load();
  return el("div", { class: "paged" }, grid, more);
}

export const pageOf = (path, params) => (cursor) => api("GET", query(path, { ...params, cursor, limit: 50 }));

export const paramsOf = (params, names) => Object.fromEntries(names.map((n) => [n, params.get(n)]));

// An admin key sees every app's objects: say whose each one is (null: an admin's).
export const appColumn = () => (state.admin ? [{ title: "App", cell: (i) => i.app_id || "admin" }] : []);

export function filterForm(section, params, inputs) {
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
