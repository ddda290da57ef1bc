// The console's shell: signing in, the navigation, and the pages, one module each under
// pages/ with `export default { title, render(container, ctx) }`. `render` may return a
// function (or a promise of one) that the shell calls when the page is left: live pages
// close their sockets and timers there.
//
// Routing is by the URL's fragment (`#/entities?id=order-1`), so every page can be
// bookmarked and the server serves one document.

import { api, login, onUnauthorized, scheduleRefresh, session, useApiKey } from "./api.js";
import { errorNotice, field, h, notice, onSubmit, replace } from "./ui.js";
import overview from "./pages/overview.js";
import entities from "./pages/entities.js";
import tail from "./pages/tail.js";
import query from "./pages/query.js";
import analytics from "./pages/analytics.js";
import schemas from "./pages/schemas.js";
import projections from "./pages/projections.js";
import consumers from "./pages/consumers.js";
import admin from "./pages/admin.js";

/** The pages, in the navigation's order. `shown(me)`: whether the caller may use it. */
const PAGES = [
  { path: "overview", page: overview },
  { path: "entities", page: entities },
  { path: "tail", page: tail },
  { path: "query", page: query },
  { path: "analytics", page: analytics },
  { path: "schemas", page: schemas },
  { path: "projections", page: projections },
  { path: "consumers", page: consumers },
  {
    path: "admin",
    page: admin,
    shown: (me) => me.permissions.includes("admin") || me.permissions.includes("manage_tenants"),
  },
];

const root = document.getElementById("app");
const authEnabled = document.querySelector('meta[name="allsource-auth"]')?.content !== "off";
let me = null;
let leavePage = null;

function visiblePages() {
  return PAGES.filter((p) => !p.shown || p.shown(me));
}

/** `#/path?a=b` → {path, params}. */
function currentRoute() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, search = ""] = hash.split("?");
  return { path: path || "overview", params: new URLSearchParams(search) };
}

async function start() {
  onUnauthorized(() => {
    signOut("Your session has ended or its credential was refused: sign in again.");
  });
  if (!authEnabled) {
    session.save({ kind: "none" });
  } else {
    session.load();
  }
  if (!session.current) {
    showLogin();
    return;
  }
  try {
    me = await api("/api/v1/auth/me", { signingIn: true });
  } catch (error) {
    session.clear();
    showLogin(error.status === 401 ? "Your session has ended: sign in again." : error.message);
    return;
  }
  scheduleRefresh();
  showShell();
}

function signOut(message) {
  leave();
  session.clear();
  me = null;
  showLogin(message);
}

function showLogin(message) {
  document.title = "Sign in · AllSource";
  const output = h("div", { class: "login-output", "aria-live": "polite" });
  if (message) output.appendChild(notice(message, "warning"));

  const username = h("input", { name: "username", autocomplete: "username", required: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const passwordForm = h(
    "form",
    { class: "stack", id: "login-form", "aria-labelledby": "login-title" },
    field("Username", username),
    field("Password", password),
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  onSubmit(passwordForm, output, async () => {
    await login(username.value.trim(), password.value);
    await start();
  });

  const key = h("input", { name: "api_key", type: "password", autocomplete: "off", required: true, placeholder: "ask_…" });
  const keyForm = h(
    "form",
    { class: "stack", id: "key-form", "aria-label": "Sign in with an API key" },
    field("API key", key, "The key is kept in this tab only, until you sign out or close it."),
    h("button", { type: "submit" }, "Use this key"),
  );
  onSubmit(keyForm, output, async () => {
    await useApiKey(key.value.trim());
    await start();
  });

  replace(
    root,
    h(
      "main",
      { class: "login", id: "main" },
      h("h1", { id: "login-title" }, "AllSource console"),
      h("p", { class: "muted" }, "Sign in with your user, or with an API key."),
      output,
      passwordForm,
      h("details", { class: "key-login" }, h("summary", {}, "Sign in with an API key instead"), keyForm),
    ),
  );
  username.focus();
}

function showShell() {
  const nav = h("nav", { id: "nav", "aria-label": "Console" });
  const menu = h(
    "button",
    { class: "menu-toggle", "aria-expanded": "false", "aria-controls": "nav", type: "button" },
    "Menu",
  );
  menu.addEventListener("click", () => {
    const open = nav.classList.toggle("open");
    menu.setAttribute("aria-expanded", String(open));
  });
  const who = me.username || me.api_key_name || (me.type === "system" ? "development mode" : me.type);
  const signOutButton = authEnabled
    ? h("button", { type: "button", class: "link", id: "sign-out", onclick: () => signOut("You are signed out.") }, "Sign out")
    : null;
  const main = h("main", { id: "main", tabindex: "-1" });
  replace(
    root,
    h("a", { class: "skip", href: "#main", onclick: (e) => { e.preventDefault(); main.focus(); } }, "Skip to content"),
    h(
      "header",
      { class: "top" },
      menu,
      h("a", { class: "brand", href: "#/overview" }, "AllSource"),
      h("span", { class: "who", id: "who" }, `${who} · ${me.role} · tenant ${me.tenant_id}`),
      signOutButton,
    ),
    h("div", { class: "layout" }, nav, main),
  );
  renderNav(nav);
  window.onhashchange = () => {
    nav.classList.remove("open");
    menu.setAttribute("aria-expanded", "false");
    renderNav(nav);
    renderPage(main, true);
  };
  renderPage(main, false);
}

function renderNav(nav) {
  const { path } = currentRoute();
  replace(
    nav,
    h(
      "ul",
      {},
      visiblePages().map((p) =>
        h("li", {}, h("a", { href: `#/${p.path}`, "aria-current": p.path === path ? "page" : null }, p.page.title)),
      ),
    ),
  );
}

function leave() {
  if (typeof leavePage === "function") {
    try {
      leavePage();
    } catch (error) {
      console.warn("leaving the page failed", error);
    }
  }
  leavePage = null;
}

async function renderPage(main, focus) {
  leave();
  const { path, params } = currentRoute();
  const entry = visiblePages().find((p) => p.path === path);
  if (!entry) {
    replace(main, h("h1", {}, "Not found"), errorNotice(new Error(`There is no page "${path}".`)));
    return;
  }
  document.title = `${entry.page.title} · AllSource`;
  const heading = h("h1", { tabindex: "-1" }, entry.page.title);
  const container = h("div", { class: "page", id: `page-${path}` });
  replace(main, heading, container);
  if (focus) heading.focus();
  const ctx = { me, params, navigate: (hash) => (location.hash = hash) };
  try {
    const cleanup = await entry.page.render(container, ctx);
    // The page may have been left while it was rendering.
    if (container.isConnected) leavePage = cleanup || null;
    else if (typeof cleanup === "function") cleanup();
  } catch (error) {
    replace(container, errorNotice(error));
  }
}

start();
