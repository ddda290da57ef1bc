// Analytics: three analyses of the caller's tenant's events.
// - Event frequency: GET /api/v1/analytics/frequency (window, event_type, since, until), drawn
//   as bars per bucket; runs once on open with the defaults (hourly, the last 24 hours).
// - Funnel: POST /api/v1/analytics/funnel {steps: [{event_type}], within_ms, since?, until?},
//   drawn as bars of the entities entering each step, with a table of the conversions.
// - Cohorts: POST /api/v1/analytics/cohorts {first_event_type, return_event_type, period,
//   periods, since?, until?}, shown as a retention table shaded by rate.
// Funnel and cohorts run only when their form is submitted.

import { api } from "../api.js";
import { barChart, hbarChart } from "../chart.js";
import {
  cards, errorNotice, field, formatNumber, h, loadingText, onSubmit, replace, section, select, time,
} from "../ui.js";

const WINDOWS = ["minute", "hour", "day", "week", "month"];
const PERIODS = ["day", "week", "month"];
const TIME_HINT = "RFC 3339, e.g. 2026-11-22T10:00:00Z. Empty: the default range.";
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

/** The trimmed text of a time input, checked as RFC 3339; undefined when empty. */
function timeValue(input, name) {
  const text = input.value.trim();
  if (!text) return undefined;
  if (!RFC3339.test(text) || Number.isNaN(Date.parse(text.replace(/[t ]/, "T")))) {
    throw new Error(`${name} must be an RFC 3339 time such as 2026-11-22T10:00:00Z (seconds and a zone included).`);
  }
  return text;
}

/** Since/until inputs, as a pair of fields. */
function rangeInputs(prefix) {
  const since = h("input", { name: "since", id: `${prefix}-since`, placeholder: "optional", autocomplete: "off", size: 24 });
  const until = h("input", { name: "until", id: `${prefix}-until`, placeholder: "optional", autocomplete: "off", size: 24 });
  return {
    since,
    until,
    fields: [field("Since (inclusive)", since, TIME_HINT), field("Until (exclusive)", until, TIME_HINT)],
    values() {
      return { since: timeValue(since, "Since"), until: timeValue(until, "Until") };
    },
  };
}

/**
 * A notice that is part of what the page shows (an empty result, a feature that is off), not
 * the outcome of an action: no status role, which marks content still loading.
 */
function calm(text, kind = "info") {
  return h("div", { class: `notice ${kind}` }, text);
}

/** A fraction (0–1) as a percent with one decimal; "—" for null. */
function percent(fraction) {
  if (typeof fraction !== "number") return "—";
  return `${(fraction * 100).toFixed(1)}%`;
}

/** A duration in milliseconds in the largest unit that keeps it readable. */
function duration(ms) {
  if (typeof ms !== "number") return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${(s / 60).toFixed(1)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

/**
 * A bucket's start, short. Minutes and hours in the reader's time zone (with the date for
 * hours when the series spans several days); days, weeks and months are UTC calendar units,
 * so they are named by their UTC date (a local date could be the day before).
 */
function bucketLabel(iso, window, spansDays) {
  const date = new Date(iso);
  if (window === "minute") return date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", hour12: false });
  if (window === "hour") {
    return spansDays
      ? date.toLocaleString(undefined, { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", hour12: false })
      : date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", hour12: false });
  }
  return periodLabel(iso, window);
}

/** A UTC day, week or month start as a short date. */
function periodLabel(iso, period) {
  const date = new Date(iso);
  if (period === "month") return date.toLocaleDateString(undefined, { timeZone: "UTC", month: "short", year: "numeric" });
  return date.toLocaleDateString(undefined, { timeZone: "UTC", day: "numeric", month: "short", year: period === "day" ? undefined : "numeric" });
}

function frequencySection() {
  const window = select(WINDOWS, "hour", { name: "window" });
  const eventType = h("input", { name: "event_type", placeholder: "order.placed", autocomplete: "off" });
  const range = rangeInputs("frequency");
  const output = h("div", { id: "analytics-frequency", "aria-live": "polite" });
  const form = h(
    "form",
    { class: "row", "aria-label": "Event frequency" },
    field("Window", window),
    field("Event type (exact, optional)", eventType),
    ...range.fields,
    h("button", { type: "submit", class: "primary" }, "Show"),
  );

  async function run() {
    const query = { window: window.value, event_type: eventType.value.trim(), ...range.values() };
    replace(output, loadingText());
    const answer = await api("/api/v1/analytics/frequency", { query });
    const buckets = answer.buckets || [];
    const first = buckets[0] ? new Date(buckets[0].timestamp).toDateString() : "";
    const spansDays = buckets.some((b) => new Date(b.timestamp).toDateString() !== first);
    const what = query.event_type ? `${query.event_type} events` : "events";
    replace(
      output,
      cards([
        { label: "Total events", value: formatNumber(answer.total_events) },
        { label: "Buckets", value: formatNumber(buckets.length) },
        { label: "Window", value: answer.window },
      ]),
      h("p", { class: "muted" }, "From ", time(answer.time_range?.from), " to ", time(answer.time_range?.to), " (end exclusive)."),
      answer.total_events === 0 ? calm(`No ${what} in this range.`) : null,
      buckets.length > 0
        ? barChart({
            title: `${formatNumber(answer.total_events)} ${what} per ${answer.window}`,
            labels: buckets.map((b) => bucketLabel(b.timestamp, answer.window, spansDays)),
            values: buckets.map((b) => b.count),
            labelName: "from",
            valueName: "events",
          })
        : null,
    );
  }

  onSubmit(form, output, run);
  return {
    node: section("Event frequency", form, output),
    start: () => run().catch((error) => replace(output, errorNotice(error))),
  };
}

function funnelSection() {
  const steps = h("textarea", {
    name: "steps",
    rows: 5,
    required: true,
    spellcheck: "false",
    placeholder: "user.signed_up\ncart.created\norder.placed",
  });
  const within = h("input", { name: "within_hours", type: "number", min: "0.001", step: "any", value: "24", required: true, size: 8 });
  const range = rangeInputs("funnel");
  const output = h("div", { id: "analytics-funnel", "aria-live": "polite" });
  const stepsField = field("Steps: one event type per line, in order", steps, "2 to 10 steps; each an exact event type.");
  stepsField.style.flex = "1 1 100%";
  const form = h(
    "form",
    { class: "row", "aria-label": "Funnel" },
    stepsField,
    field("Within (hours after the first step)", within),
    ...range.fields,
    h("button", { type: "submit", class: "primary" }, "Run the funnel"),
  );

  onSubmit(form, output, async () => {
    const types = steps.value.split("\n").map((line) => line.trim()).filter(Boolean);
    if (types.length < 2 || types.length > 10) {
      throw new Error(`A funnel has 2 to 10 steps, one event type per line (there are ${types.length}).`);
    }
    const hours = Number(within.value);
    if (!(hours > 0)) throw new Error("Within must be a positive number of hours.");
    const body = {
      steps: types.map((eventType) => ({ event_type: eventType })),
      within_ms: Math.max(1, Math.round(hours * 3600000)),
      ...range.values(),
    };
    replace(output, loadingText("Running…"));
    const answer = await api("/api/v1/analytics/funnel", { method: "POST", body });
    renderFunnel(output, answer);
  });

  return section("Funnel", form, output);
}

function renderFunnel(output, answer) {
  const stepsOut = answer.steps || [];
  replace(
    output,
    cards([
      { label: "Entered", value: formatNumber(answer.entered) },
      { label: "Completed", value: formatNumber(answer.completed) },
      { label: "Overall conversion", value: percent(answer.overall_conversion) },
      { label: "Within", value: duration(answer.within_ms) },
    ]),
    answer.entered === 0 ? calm("No entity reached the first step in this range.") : null,
    hbarChart({
      title: "Entities reaching each step (share of the first step)",
      labels: stepsOut.map((s) => s.name),
      values: stepsOut.map((s) => s.entered),
      notes: stepsOut.map((s) => (typeof s.conversion_from_start === "number" ? percent(s.conversion_from_start) : "")),
      labelName: "step",
      valueName: "entities",
    }),
    h(
      "div",
      { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Funnel steps" },
      h(
        "table",
        {},
        h("caption", { class: "sr-only" }, "Funnel steps; converted, rate and median time are about reaching the next step"),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", { scope: "col" }, "#"),
            h("th", { scope: "col" }, "Step"),
            h("th", { scope: "col", class: "num" }, "Entered"),
            h("th", { scope: "col", class: "num" }, "Converted to next"),
            h("th", { scope: "col", class: "num" }, "Conversion rate"),
            h("th", { scope: "col", class: "num" }, "From start"),
            h("th", { scope: "col", class: "num" }, "Median time to next"),
          ),
        ),
        h(
          "tbody",
          {},
          stepsOut.map((s, i) =>
            h(
              "tr",
              {},
              h("td", { class: "num" }, String(i + 1)),
              h("td", {}, s.name, s.name !== s.event_type ? h("span", { class: "muted" }, ` (${s.event_type})`) : null),
              h("td", { class: "num" }, formatNumber(s.entered)),
              h("td", { class: "num" }, s.converted === null || s.converted === undefined ? "—" : formatNumber(s.converted)),
              h("td", { class: "num" }, percent(s.conversion_rate)),
              h("td", { class: "num" }, percent(s.conversion_from_start)),
              h("td", { class: "num" }, duration(s.median_time_to_convert_ms)),
            ),
          ),
        ),
      ),
    ),
    h("p", { class: "muted" }, "Converted, rate and median time are about reaching the next step (none for the last)."),
  );
}

function cohortSection() {
  const first = h("input", { name: "first_event_type", required: true, placeholder: "user.signed_up", autocomplete: "off" });
  const back = h("input", { name: "return_event_type", required: true, placeholder: "order.placed", autocomplete: "off" });
  const period = select(PERIODS, "week", { name: "period" });
  const periods = h("input", { name: "periods", type: "number", min: "1", max: "100", step: "1", value: "8", required: true, size: 5 });
  const range = rangeInputs("cohorts");
  const output = h("div", { id: "analytics-cohorts", "aria-live": "polite" });
  const form = h(
    "form",
    { class: "row", "aria-label": "Cohorts" },
    field("First event type", first),
    field("Return event type", back),
    field("Period", period),
    field("Periods", periods, "1 to 100"),
    ...range.fields,
    h("button", { type: "submit", class: "primary" }, "Show retention"),
  );

  onSubmit(form, output, async () => {
    const count = Number(periods.value);
    if (!Number.isInteger(count) || count < 1 || count > 100) throw new Error("Periods must be a whole number from 1 to 100.");
    const body = {
      first_event_type: first.value.trim(),
      return_event_type: back.value.trim(),
      period: period.value,
      periods: count,
      ...range.values(),
    };
    replace(output, loadingText("Running…"));
    const answer = await api("/api/v1/analytics/cohorts", { method: "POST", body });
    renderCohorts(output, answer, count);
  });

  return section("Cohorts (retention)", form, output);
}

/** A retention cell: the rate as a percent on a background whose strength is the rate. */
function retentionCell(count, rate, size) {
  const value = typeof rate === "number" ? rate : 0;
  // At most 0.7 of the bar colour: dark text on light, light text on dark both stay readable.
  const alpha = Math.min(1, Math.max(0, value)) * 0.7;
  return h(
    "td",
    {
      class: "num",
      style: `background-color: rgba(59, 111, 224, ${alpha.toFixed(3)})`,
      title: `${formatNumber(count ?? 0)} of ${formatNumber(size)} entities`,
    },
    percent(value),
  );
}

function renderCohorts(output, answer, periods) {
  const cohorts = answer.cohorts || [];
  const unit = answer.period || "period";
  const header = h("p", { class: "muted" },
    `Entities by the ${unit} of their first ${answer.first_event_type}, and the share with a ${answer.return_event_type} in each later ${unit}. From `,
    time(answer.time_range?.from), " to ", time(answer.time_range?.to), ".");
  if (cohorts.length === 0) {
    replace(output, header, calm(`No entity had its first ${answer.first_event_type} in this range.`));
    return;
  }
  const width = Math.max(periods, ...cohorts.map((c) => (c.rates || []).length));
  const columns = Array.from({ length: width }, (_, k) => k);
  replace(
    output,
    header,
    h(
      "div",
      { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Retention" },
      h(
        "table",
        {},
        h("caption", { class: "sr-only" }, `Retention per ${unit}: rows are cohorts, columns the ${unit}s after the cohort's`),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", { scope: "col" }, "Cohort"),
            h("th", { scope: "col", class: "num" }, "Size"),
            columns.map((k) => h("th", { scope: "col", class: "num" }, `${unit} ${k}`)),
          ),
        ),
        h(
          "tbody",
          {},
          cohorts.map((c) =>
            h(
              "tr",
              {},
              h("th", { scope: "row" }, h("time", { datetime: c.cohort, title: c.cohort }, periodLabel(c.cohort, unit))),
              h("td", { class: "num" }, formatNumber(c.size)),
              columns.map((k) => retentionCell(c.retention?.[k], c.rates?.[k], c.size)),
            ),
          ),
        ),
      ),
    ),
    h("p", { class: "muted" }, `${unit} 0 is the cohort's own ${unit}; hover a cell for the count. Periods still to come count 0.`),
  );
}

export default {
  title: "Analytics",
  async render(container) {
    const frequency = frequencySection();
    replace(container, frequency.node, funnelSection(), cohortSection());
    await frequency.start();
  },
};
