// What this tab holds while the page is open: the key and the page's own state.
//
// The key lives only in this module's variable, in memory: never in sessionStorage,
// localStorage, a cookie or a URL, so no other script of this origin can read it from storage,
// and a reload (or closing the tab) forgets it: the person logs in again.

let key = null;
let rerender = () => {};

export const state = {
  admin: false, // an admin key (sees every app) rather than an app's key
  view: 0, // bumped on every render: a view's pending work checks it is still the current one
  secret: null, // a signing secret to show once on the next render of its subscription
};

export const currentKey = () => key;
export const hasKey = () => key !== null;

export function setKey(given) {
  key = given;
}

export function forgetKey() {
  key = null;
}

// The views re-draw the page after an action; main.js says how (and so owns the routing).
export function onRender(render) {
  rerender = render;
}

export function render() {
  rerender();
}
