// Consumers: who follows the tenant's log, and how far behind they are.
// - Durable consumers: GET /api/v1/stats (`last_position`, the head) and GET /api/v1/consumers
//   (consumer_id, event_type_filters, cursor_position, updated_at); lag = head − cursor.
// - Consumer groups: GET /api/v1/consumer-groups, then GET /api/v1/consumer-groups/{group}/stats
//   for each (head, read, committed, lag / lag_capped, in flight, waiting, parked, members).
// Refreshed every 5 s while the page is open (never two refreshes at once), and on demand.

import { api } from "../api.js";
import { hbarChart } from "../chart.js";
import {
  errorNotice, formatNumber, h, loadingText, replace, section, table, time,
} from "../ui.js";

const REFRESH_MS = 5000;
const STATS_AT_ONCE = 6;

/** `fn` over `items`, at most `limit` at a time, results in order. */
async function mapLimit(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const i = next;
      next += 1;
      results[i] = await fn(items[i], i);
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** Keeps short values (ids, times, badges) on one line: tables scroll sideways instead. */
function nowrap(...children) {
  return h("span", { style: "white-space: nowrap" }, ...children);
}

function filtersText(filters) {
  return filters && filters.length > 0 ? filters.join(", ") : "every type";
}

function consumerLag(head, consumer) {
  return Math.max(0, head - (consumer.cursor_position ?? 0));
}

function renderConsumers(output, head, consumers) {
  const rows = consumers.map((c) => ({ ...c, lag: consumerLag(head, c) }));
  replace(
    output,
    h("p", { class: "muted" }, `Head of the log: position ${formatNumber(head)}. Lag counts every event after the cursor, whatever its type.`),
    table({
      caption: "Durable consumers",
      empty: "No consumers yet. Register one with POST /api/v1/consumers.",
      columns: [
        { key: "consumer_id", label: "Consumer", render: (c) => h("code", {}, c.consumer_id) },
        { key: "event_type_filters", label: "Filters", render: (c) => filtersText(c.event_type_filters) },
        {
          key: "cursor_position",
          label: "Cursor",
          numeric: true,
          render: (c) => (c.cursor_position === null || c.cursor_position === undefined ? "none yet" : formatNumber(c.cursor_position)),
        },
        { key: "lag", label: "Lag", numeric: true },
        { key: "updated_at", label: "Updated", render: (c) => nowrap(time(c.updated_at)) },
      ],
      rows,
    }),
    rows.length > 0
      ? hbarChart({
          title: "Lag per consumer (events after its cursor)",
          labels: rows.map((c) => c.consumer_id),
          values: rows.map((c) => c.lag),
          labelName: "consumer",
          valueName: "lag",
        })
      : null,
  );
}

function groupLagText(stats) {
  return stats.lag_capped ? `${formatNumber(stats.lag)}+` : formatNumber(stats.lag);
}

function renderGroups(output, groups, stats, errors) {
  const rows = groups
    .map((g, i) => ({ group: g, stats: stats[i] }))
    .filter((r) => r.stats);
  replace(
    output,
    errors.map((e) => errorNotice(e)),
    table({
      caption: "Consumer groups",
      empty: groups.length === 0 ? "No consumer groups yet. Create one with POST /api/v1/consumer-groups." : "No group's figures could be read.",
      columns: [
        { key: "group", label: "Group", render: (r) => h("code", {}, r.group.group) },
        { key: "filters", label: "Filters", render: (r) => filtersText(r.group.event_type_filters) },
        { key: "head", label: "Head", numeric: true, render: (r) => formatNumber(r.stats.head_position) },
        { key: "read", label: "Read", numeric: true, render: (r) => formatNumber(r.stats.read_position) },
        { key: "committed", label: "Committed", numeric: true, render: (r) => formatNumber(r.stats.committed_position) },
        { key: "lag", label: "Lag", numeric: true, render: (r) => nowrap(groupLagText(r.stats)) },
        { key: "in_flight", label: "In flight", numeric: true, render: (r) => formatNumber(r.stats.in_flight) },
        { key: "waiting", label: "Waiting", numeric: true, render: (r) => formatNumber(r.stats.waiting) },
        {
          key: "parked",
          label: "Parked",
          numeric: true,
          render: (r) =>
            nowrap(
              formatNumber(r.stats.parked),
              r.stats.parked_full ? " " : null,
              r.stats.parked_full ? h("span", { class: "badge bad", title: "The parked list is full: the group takes nothing new from the log" }, "full") : null,
            ),
        },
        { key: "members", label: "Members", numeric: true, render: (r) => formatNumber((r.stats.members || []).length) },
      ],
      rows,
    }),
    rows.length > 0
      ? hbarChart({
          title: "Lag per group (matching events not delivered yet, counted up to 1,000)",
          labels: rows.map((r) => r.group.group),
          values: rows.map((r) => r.stats.lag),
          notes: rows.map((r) => (r.stats.lag_capped ? "capped" : "")),
          labelName: "group",
          valueName: "lag",
        })
      : null,
  );
}

export default {
  title: "Consumers",
  async render(container) {
    const consumersOut = h("div", { id: "consumers-list" }, loadingText());
    const groupsOut = h("div", { id: "consumer-groups" }, loadingText());
    const updated = h("span", { class: "muted", id: "consumers-updated" });
    const refreshButton = h("button", { type: "button", id: "consumers-refresh", onclick: () => refresh() }, "Refresh");
    let busy = false;
    let stopped = false;

    replace(
      container,
      h("div", { class: "status-line" }, refreshButton, updated, h("span", { class: "muted" }, "Refreshed every 5 s while this page is open.")),
      section("Durable consumers", consumersOut),
      section("Consumer groups", groupsOut),
    );

    async function loadConsumers() {
      try {
        const [stats, answer] = await Promise.all([api("/api/v1/stats"), api("/api/v1/consumers")]);
        if (!stopped) renderConsumers(consumersOut, stats.last_position ?? 0, answer.consumers || []);
      } catch (error) {
        if (!stopped) replace(consumersOut, errorNotice(error));
      }
    }

    async function loadGroups() {
      try {
        const answer = await api("/api/v1/consumer-groups");
        const groups = answer.groups || [];
        const errors = [];
        const stats = await mapLimit(groups, STATS_AT_ONCE, (g) =>
          api(`/api/v1/consumer-groups/${encodeURIComponent(g.group)}/stats`).catch((error) => {
            // A group deleted since the listing is simply gone; anything else is shown.
            if (error.status !== 404) errors.push(error);
            return null;
          }),
        );
        if (!stopped) renderGroups(groupsOut, groups, stats, errors.slice(0, 3));
      } catch (error) {
        if (!stopped) replace(groupsOut, errorNotice(error));
      }
    }

    async function refresh() {
      if (busy || stopped) return;
      busy = true;
      // aria-busy rather than disabled: a disabled button would lose the keyboard focus.
      refreshButton.setAttribute("aria-busy", "true");
      try {
        await Promise.all([loadConsumers(), loadGroups()]);
        if (!stopped) {
          replace(updated, "Updated ", h("time", { datetime: new Date().toISOString() }, new Date().toLocaleTimeString(undefined, { hour12: false })));
        }
      } finally {
        busy = false;
        refreshButton.removeAttribute("aria-busy");
      }
    }

    await refresh();
    const timer = setInterval(refresh, REFRESH_MS);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  },
};
