// Entity explorer. Without `?id=`: the tenant's entities, most recently changed first
// (GET /api/v1/entities), or those whose id contains a text (a read-only SQL query on
// POST /api/v1/sql). With `?id=`: the entity's stream (GET /api/v1/entities/{id}/events), its
// state at a chosen time with a slider over the times of its events
// (GET /api/v1/entities/{id}/state?as_of=), and the difference between the states at two
// versions. States always come from the server, which folds them by its rule.

import { api } from "../api.js";
import {
  compactJson, entityLink, errorNotice, field, formatNumber, h, jsonBlock, loadingText, notice, onSubmit, replace, section, select, table, time,
} from "../ui.js";

const PAGE_SIZE = 50;

/** A text as an SQL string literal. */
function sqlText(text) {
  return `'${text.replaceAll("'", "''")}'`;
}

function listing(container, ctx) {
  const search = h("input", { name: "contains", value: ctx.params.get("contains") || "", placeholder: "order-" });
  const prefix = h("input", { name: "event_type_prefix", value: ctx.params.get("prefix") || "", placeholder: "order." });
  const open = h("input", { name: "entity_id", placeholder: "order-42" });
  const output = h("div", { id: "entities-list" });
  let offset = Number(ctx.params.get("offset") || 0);

  const searchForm = h(
    "form",
    { class: "row", role: "search", "aria-label": "Find entities" },
    field("Entity id contains", search),
    field("Has an event type starting with", prefix),
    h("button", { type: "submit", class: "primary" }, "Search"),
  );
  const openForm = h(
    "form",
    { class: "row", "aria-label": "Open an entity" },
    field("Open the entity", open),
    h("button", { type: "submit" }, "Open"),
  );
  onSubmit(openForm, output, async () => {
    if (open.value.trim()) ctx.navigate(`#/entities?id=${encodeURIComponent(open.value.trim())}`);
  });
  onSubmit(searchForm, output, async () => {
    offset = 0;
    await load();
  });

  async function load() {
    replace(output, loadingText());
    try {
      let rows;
      let hasMore;
      let total = null;
      const text = search.value.trim();
      if (text) {
        // No route searches ids by substring: SQL does, within the caller's tenant.
        let statement =
          `SELECT entity_id, count(*) AS event_count, max(version) AS version, ` +
          `max("timestamp") AS last_event_at FROM events WHERE strpos(entity_id, ${sqlText(text)}) > 0 ` +
          `GROUP BY entity_id`;
        if (prefix.value.trim()) {
          statement += ` HAVING sum(CASE WHEN starts_with(event_type, ${sqlText(prefix.value.trim())}) THEN 1 ELSE 0 END) > 0`;
        }
        statement += ` ORDER BY last_event_at DESC, entity_id LIMIT ${PAGE_SIZE + 1} OFFSET ${offset}`;
        const answer = await api("/api/v1/sql", { method: "POST", body: { query: statement } });
        hasMore = answer.rows.length > PAGE_SIZE;
        rows = answer.rows.slice(0, PAGE_SIZE);
      } else {
        const answer = await api("/api/v1/entities", {
          query: { limit: PAGE_SIZE, offset, event_type_prefix: prefix.value.trim() },
        });
        rows = answer.entities;
        hasMore = answer.has_more;
        total = answer.total;
      }
      const pager = h(
        "div",
        { class: "status-line" },
        h("span", { class: "muted" }, total === null
          ? `${formatNumber(rows.length)} shown from ${formatNumber(offset + 1)}`
          : `${formatNumber(total)} entities`),
        offset > 0 ? h("button", { type: "button", onclick: () => { offset = Math.max(0, offset - PAGE_SIZE); load(); } }, "Previous") : null,
        hasMore ? h("button", { type: "button", onclick: () => { offset += PAGE_SIZE; load(); } }, "Next") : null,
      );
      replace(
        output,
        table({
          caption: "Entities",
          empty: text ? `No entity id contains "${text}".` : "No entities yet.",
          columns: [
            { key: "entity_id", label: "Entity", render: (r) => entityLink(r.entity_id) },
            { key: "event_count", label: "Events", numeric: true },
            { key: "version", label: "Version", numeric: true },
            ...(text ? [] : [{ key: "last_event_type", label: "Last event type" }]),
            { key: "last_event_at", label: "Last change", render: (r) => time(r.last_event_at) },
          ],
          rows,
        }),
        rows.length > 0 ? pager : null,
      );
    } catch (error) {
      replace(output, errorNotice(error));
    }
  }

  replace(container, section("Find", searchForm, openForm), section("Entities", output));
  return load();
}

/** Leaf paths of a state: `customer.tier` → its JSON text; arrays are leaves. */
function leaves(value, prefix = "", out = new Map()) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    const keys = Object.keys(value);
    if (keys.length === 0 && prefix) out.set(prefix, "{}");
    for (const key of keys) leaves(value[key], prefix ? `${prefix}.${key}` : key, out);
  } else {
    out.set(prefix || "(whole state)", JSON.stringify(value));
  }
  return out;
}

/** What changed from state `a` to state `b`, as a list. */
function diffList(a, b) {
  const before = leaves(a);
  const after = leaves(b);
  const items = [];
  let same = 0;
  for (const [path, value] of after) {
    if (!before.has(path)) items.push(h("li", { class: "added" }, `+ ${path}: ${value}`));
    else if (before.get(path) !== value) items.push(h("li", { class: "changed" }, `~ ${path}: ${before.get(path)} → ${value}`));
    else same += 1;
  }
  for (const [path, value] of before) {
    if (!after.has(path)) items.push(h("li", { class: "removed" }, `− ${path}: ${value}`));
  }
  return h(
    "div",
    {},
    items.length === 0 ? notice("The two states are the same.") : h("ul", { class: "diff", "aria-label": "Differences" }, items),
    h("p", { class: "muted" }, `${formatNumber(items.length)} changed, ${formatNumber(same)} unchanged.`),
  );
}

async function entity(container, ctx, entityId) {
  const path = `/api/v1/entities/${encodeURIComponent(entityId)}`;
  replace(container, loadingText());
  const stream = await api(`${path}/events`, { query: { limit: 1000 } });
  const events = stream.events;
  const back = h("p", {}, h("a", { href: "#/entities" }, "← All entities"));
  if (events.length === 0) {
    replace(container, back, notice(`The entity "${entityId}" has no events.`));
    return;
  }

  // The slider moves over the distinct times of the entity's events (several events of a
  // batch share one time, and `as_of` is a time).
  const times = [...new Set(events.map((e) => e.timestamp))];
  const slider = h("input", {
    type: "range", id: "state-slider", min: 0, max: times.length - 1, step: 1, value: times.length - 1,
    "aria-valuetext": times[times.length - 1],
  });
  const asOf = h("input", { id: "state-as-of", name: "as_of", value: times[times.length - 1], class: "mono", size: 32 });
  const stateOut = h("div", { id: "state-output", "aria-live": "polite" });
  let request = 0;

  async function showState(at) {
    request += 1;
    const mine = request;
    try {
      const state = await api(`${path}/state`, { query: { as_of: at } });
      if (mine !== request) return;
      stateOut.dataset.version = String(state.version);
      replace(
        stateOut,
        h("p", { class: "status-line" },
          h("strong", {}, `Version ${formatNumber(state.version)}`),
          h("span", { class: "muted" }, `${formatNumber(state.event_count)} events, last change `, time(state.last_updated))),
        jsonBlock(state.current_state, `State at ${at}`),
      );
    } catch (error) {
      if (mine !== request) return;
      delete stateOut.dataset.version;
      replace(stateOut, errorNotice(error));
    }
  }

  slider.addEventListener("input", () => {
    const at = times[Number(slider.value)];
    asOf.value = at;
    slider.setAttribute("aria-valuetext", at);
    showState(at);
  });
  const asOfForm = h(
    "form",
    { class: "row", "aria-label": "State at a time" },
    field("As of (RFC 3339)", asOf, "Any time; the slider picks the times of the entity's events."),
    h("button", { type: "submit" }, "Show"),
  );
  onSubmit(asOfForm, stateOut, () => showState(asOf.value.trim()));

  // Compare: the states right after two versions (as of their events' times).
  const versions = events.map((e) => [String(e.version), `v${e.version} · ${e.event_type} · ${e.timestamp}`]);
  const fromVersion = select(versions, String(events[Math.max(0, events.length - 2)].version), { id: "diff-from" });
  const toVersion = select(versions, String(events[events.length - 1].version), { id: "diff-to" });
  const diffOut = h("div", { id: "diff-output", "aria-live": "polite" });
  const diffForm = h(
    "form",
    { class: "row", "aria-label": "Compare two versions" },
    field("From version", fromVersion),
    field("To version", toVersion),
    h("button", { type: "submit", class: "primary" }, "Compare"),
  );
  const byVersion = new Map(events.map((e) => [String(e.version), e]));
  onSubmit(diffForm, diffOut, async () => {
    const [a, b] = await Promise.all(
      [fromVersion.value, toVersion.value].map((v) => api(`${path}/state`, { query: { as_of: byVersion.get(v).timestamp } })),
    );
    const notes = [[fromVersion.value, a], [toVersion.value, b]]
      .filter(([asked, state]) => String(state.version) !== asked)
      .map(([asked, state]) => notice(`Version ${asked} shares its time with later events: the state shown is that of version ${state.version}.`, "warning"));
    replace(diffOut, notes, diffList(a.current_state, b.current_state));
  });

  replace(
    container,
    back,
    h("h2", { class: "mono entity-title", id: "entity-title" }, entityId),
    h("p", { class: "muted" }, `${formatNumber(events.length)} events${stream.has_more ? " (the first 1,000 shown)" : ""}.`),
    section(
      "State at a time",
      field("Time", slider),
      h("p", { class: "status-line muted ends" }, h("span", {}, "first event ", time(times[0])), h("span", {}, "last event ", time(times[times.length - 1]))),
      asOfForm,
      stateOut,
    ),
    section("Compare two versions", diffForm, diffOut),
    section(
      "Events",
      table({
        caption: `Events of ${entityId}`,
        columns: [
          { key: "version", label: "Version", numeric: true },
          { key: "position", label: "Position", numeric: true },
          { key: "event_type", label: "Type" },
          { key: "timestamp", label: "Time", render: (e) => time(e.timestamp) },
          { key: "payload", label: "Payload", render: (e) => h("code", {}, compactJson(e.payload)) },
          { key: "metadata", label: "Metadata", render: (e) => (e.metadata ? h("code", {}, compactJson(e.metadata)) : "—") },
        ],
        rows: events,
      }),
    ),
  );
  await showState(times[times.length - 1]);
}

export default {
  title: "Entities",
  render(container, ctx) {
    const id = ctx.params.get("id");
    return id ? entity(container, ctx, id) : listing(container, ctx);
  },
};
