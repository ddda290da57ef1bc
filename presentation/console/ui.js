// Small DOM helpers shared by the pages: element building, tables, forms, formatting and the
// error notice. Plain modules, no framework: the console has to build offline and stay small.

/**
 * Builds an element. `attrs`: `class`, `text`, `style` (CSS text), `on<event>` handlers,
 * boolean attributes as booleans, anything else as an attribute. Children: nodes, strings, numbers, arrays, or
 * null/undefined/false (skipped).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "text") el.textContent = value;
    // Through the CSSOM: the Content Security Policy refuses `style` attributes.
    else if (name === "style") el.style.cssText = value;
    else if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "value") el.value = value;
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces the children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let nextId = 0;
/** A unique element id (labels point at inputs by id). */
export function uid(prefix = "f") {
  nextId += 1;
  return `${prefix}-${nextId}`;
}

/** A labelled form control: `<label for>` + the control, optional hint. */
export function field(label, control, hint) {
  if (!control.id) control.id = uid();
  const hintEl = hint ? h("small", { class: "hint", id: `${control.id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control, hintEl);
}

/** A `<select>` of `options` (strings, or [value, label] pairs). */
export function select(options, value, attrs = {}) {
  const el = h("select", attrs);
  for (const option of options) {
    const [v, label] = Array.isArray(option) ? option : [option, option];
    el.appendChild(h("option", { value: v, selected: v === value }, label));
  }
  return el;
}

/** The error notice: the API's problem in words, announced to screen readers. */
export function errorNotice(error) {
  return h("div", { class: "notice error", role: "alert" }, error?.message || String(error));
}

/** A short success or info notice. */
export function notice(text, kind = "info") {
  return h("div", { class: `notice ${kind}`, role: "status" }, text);
}

/** Keeps short values (ids, times, badges) on one line: tables scroll sideways instead. */
export function nowrap(...children) {
  return h("span", { style: "white-space: nowrap" }, ...children);
}

/**
 * A notice that is part of what the page shows (an empty result, a feature that is off), not
 * the outcome of an action: no status role, which marks content still loading.
 */
export function calm(text, kind = "info") {
  return h("div", { class: `notice ${kind}` }, text);
}

/** A placeholder while a part of a page loads (the browser test waits until none is left). */
export function loadingText(text = "Loading…") {
  return h("p", { class: "muted loading", role: "status" }, text);
}

/** A "Loading…" placeholder, replaced by what `promise` renders (or its error). */
export function loading(container, promise) {
  replace(container, loadingText());
  return promise.then(
    (node) => replace(container, node),
    (error) => replace(container, errorNotice(error)),
  );
}

/**
 * A table. `columns`: [{key, label, render?(row) → node|string, numeric?}]; `rows`: objects.
 * `caption` names it for screen readers; `empty`: what to say without rows.
 */
export function table({ columns, rows, caption, empty = "Nothing here yet.", rowAttrs }) {
  if (!rows || rows.length === 0) return h("p", { class: "muted empty" }, empty);
  return h(
    "div",
    { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption || "table" },
    h(
      "table",
      {},
      caption ? h("caption", { class: "sr-only" }, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.numeric ? "num" : null }, c.label)))),
      h(
        "tbody",
        {},
        rows.map((row) =>
          h(
            "tr",
            rowAttrs ? rowAttrs(row) : {},
            columns.map((c) =>
              h("td", { class: c.numeric ? "num" : null }, c.render ? c.render(row) : display(row[c.key])),
            ),
          ),
        ),
      ),
    ),
  );
}

/** A value as table text: JSON for objects, "—" for absent. */
export function display(value) {
  if (value === undefined || value === null) return "—";
  if (typeof value === "object") return compactJson(value);
  if (typeof value === "number") return formatNumber(value);
  return String(value);
}

/** JSON on one line, cut at `max` characters. */
export function compactJson(value, max = 160) {
  const text = JSON.stringify(value);
  if (text === undefined) return "—";
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** Pretty JSON in a `<pre>`. */
export function jsonBlock(value, label) {
  return h("pre", { class: "json", tabindex: "0", "aria-label": label || "JSON" }, JSON.stringify(value, null, 2));
}

const numberFormat = new Intl.NumberFormat("en");
export function formatNumber(n) {
  return typeof n === "number" ? numberFormat.format(n) : display(n);
}

export function formatBytes(n) {
  if (typeof n !== "number") return display(n);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** A server timestamp, shown in the reader's time zone with seconds; the exact value on hover. */
export function time(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return h("time", { datetime: iso, title: iso }, date.toLocaleString(undefined, { hour12: false }));
}

/** A link to one entity in the explorer. */
export function entityLink(entityId) {
  return h("a", { href: `#/entities?id=${encodeURIComponent(entityId)}` }, entityId);
}

/** Figures in a row of cards: [{label, value}]. */
export function cards(items) {
  return h(
    "dl",
    { class: "cards" },
    items.map((item) => h("div", { class: "card" }, h("dt", {}, item.label), h("dd", {}, item.value))),
  );
}

/** A section with a heading. */
export function section(title, ...children) {
  const id = uid("s");
  return h("section", { class: "panel", "aria-labelledby": id }, h("h2", { id }, title), ...children);
}

/** Runs `action` from a form submit; shows its error under the form, disables the button. */
export function onSubmit(form, output, action) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const buttons = form.querySelectorAll("button[type=submit]");
    buttons.forEach((b) => (b.disabled = true));
    try {
      await action();
    } catch (error) {
      replace(output, errorNotice(error));
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  });
}

/** Parses JSON typed by a person; the error says where it broke. */
export function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`${what} is not valid JSON: ${error.message}`);
  }
}
