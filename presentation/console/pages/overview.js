// Overview: the tenant's figures (GET /api/v1/stats), the event rate of the last hour or day
// (GET /api/v1/analytics/frequency), the busiest event types (GET /api/v1/event-types) and
// what the storage reports. Refreshed every 15 s while the page is open.

import { api } from "../api.js";
import { barChart, hbarChart } from "../chart.js";
import { cards, errorNotice, field, formatBytes, formatNumber, h, replace, section, select } from "../ui.js";

const RANGES = [
  ["minute", "Last hour, per minute"],
  ["hour", "Last 24 hours, per hour"],
  ["day", "Last 30 days, per day"],
];

/** A bucket's start, short: the time for minutes and hours, the date for days. */
function bucketLabel(iso, window) {
  const date = new Date(iso);
  if (window === "day") return date.toLocaleDateString(undefined, { month: "short", day: "numeric" });
  return date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", hour12: false });
}

/** The storage description as rows of name → value (nested members joined with dots). */
function flatten(value, prefix = "", rows = []) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    for (const [key, inner] of Object.entries(value)) flatten(inner, prefix ? `${prefix}.${key}` : key, rows);
  } else {
    rows.push([prefix, value]);
  }
  return rows;
}

function storageTable(storage) {
  const rows = flatten(storage || {});
  if (rows.length === 0) return h("p", { class: "muted" }, "The backend reports nothing more.");
  return h(
    "dl",
    { class: "kv" },
    rows.map(([name, value]) => [
      h("dt", {}, name.replaceAll("_", " ").replaceAll(".", " · ")),
      h("dd", {}, /bytes$/.test(name) ? formatBytes(value) : typeof value === "number" ? formatNumber(value) : String(value)),
    ]),
  );
}

export default {
  title: "Overview",
  async render(container) {
    const figures = h("div", { id: "overview-figures", "aria-live": "polite" });
    const rateOut = h("div", { id: "overview-rate" });
    const typesOut = h("div", { id: "overview-types" });
    const storageOut = h("div", { id: "overview-storage" });
    const range = select(RANGES, "minute", { name: "window" });
    range.addEventListener("change", () => refresh());

    replace(
      container,
      figures,
      section("Event rate", field("Range", range), rateOut),
      h("div", { class: "grid2" }, section("Event types", typesOut), section("Storage", storageOut)),
    );

    let busy = false;
    async function refresh() {
      if (busy) return;
      busy = true;
      try {
        await Promise.all([
          api("/api/v1/stats").then(
            (stats) => {
              replace(
                figures,
                cards([
                  { label: "Events", value: formatNumber(stats.total_events) },
                  { label: "Entities", value: formatNumber(stats.total_entities) },
                  { label: "Event types", value: formatNumber(stats.total_event_types) },
                  { label: "Last position", value: formatNumber(stats.last_position) },
                ]),
              );
              replace(storageOut, storageTable(stats.storage));
            },
            (error) => replace(figures, errorNotice(error)),
          ),
          api("/api/v1/analytics/frequency", { query: { window: range.value } }).then(
            (answer) => {
              const title = `${RANGES.find(([w]) => w === range.value)[1]}: ${formatNumber(answer.total_events)} events`;
              replace(
                rateOut,
                barChart({
                  title,
                  labels: answer.buckets.map((b) => bucketLabel(b.timestamp, range.value)),
                  values: answer.buckets.map((b) => b.count),
                  labelName: "from",
                  valueName: "events",
                }),
              );
            },
            (error) => replace(rateOut, errorNotice(error)),
          ),
          api("/api/v1/event-types").then(
            (answer) => {
              const top = [...answer.event_types].sort((a, b) => b.count - a.count).slice(0, 12);
              replace(
                typesOut,
                top.length === 0
                  ? h("p", { class: "muted" }, "No events yet. Append one with POST /api/v1/events.")
                  : hbarChart({
                      title: `The ${top.length} busiest of ${answer.total} event types`,
                      labels: top.map((t) => t.event_type),
                      values: top.map((t) => t.count),
                      labelName: "event type",
                      valueName: "events",
                    }),
              );
            },
            (error) => replace(typesOut, errorNotice(error)),
          ),
        ]);
      } finally {
        busy = false;
      }
    }

    await refresh();
    const timer = setInterval(refresh, 15000);
    return () => clearInterval(timer);
  },
};
