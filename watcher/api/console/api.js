// The /v1 API: every request carries the key as `Authorization: Bearer` (never in a URL) and
// no cookie; an answer that is not 2xx becomes an ApiError with the API's own error detail.

import { currentKey } from "./session.js";

export class ApiError extends Error {
  constructor(status, body) {
    // Every API error is {"error": {"type", "detail", "fields"?}}; a proxy's page may not be.
    const detail = body && body.error ? body.error.detail : "request failed";
    super(`${status}: ${detail}`);
    this.status = status;
    this.body = body;
  }
}

export async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + currentKey(), Accept: "application/json" };
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

// A path with its query string; empty values are left out.
export function query(path, params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") search.set(name, value);
  }
  const text = search.toString();
  return text ? `${path}?${text}` : path;
}

export const idPath = (prefix, id) => `${prefix}/${encodeURIComponent(id)}`;
