// Query: read-only SQL over the tenant's `events` table (POST /api/v1/sql) and the JSON
// query language (POST /api/v1/query). Answers are shown as a table and, when a column holds
// numbers, as a bar chart of one numeric column against a label column. Ctrl+Enter runs.

import { api } from "../api.js";
import { barChart } from "../chart.js";
import {
  compactJson, display, entityLink, field, formatNumber, h, loadingText, onSubmit, parseJson, replace, section, select, table, time,
} from "../ui.js";

const SQL_EXAMPLE = `SELECT event_type, count(*) AS events
FROM events
GROUP BY event_type
ORDER BY events DESC
LIMIT 20`;

const DSL_EXAMPLE = `{
  "where": ["exists", "payload"],
  "order_by": [{"field": "position", "direction": "desc"}],
  "limit": 20
}`;

/** A bar chart of a numeric column against a label column, with pickers for both. */
function chartOf(columns, rows) {
  const numeric = columns.filter((c) => rows.some((r) => typeof r[c] === "number"));
  if (numeric.length === 0 || rows.length === 0) return null;
  const labels = columns.filter((c) => !numeric.includes(c));
  const labelPick = select([["", "row number"], ...columns.map((c) => [c, c])], labels[0] || "", { id: "chart-label" });
  const valuePick = select(numeric, numeric[0], { id: "chart-value" });
  const out = h("div", { id: "chart-output" });
  const draw = () => {
    const shown = rows.slice(0, 60);
    replace(
      out,
      barChart({
        title: `${valuePick.value} by ${labelPick.value || "row"}${rows.length > shown.length ? ` (first ${shown.length} rows)` : ""}`,
        labels: shown.map((r, i) => (labelPick.value ? display(r[labelPick.value]) : String(i + 1))),
        values: shown.map((r) => (typeof r[valuePick.value] === "number" ? r[valuePick.value] : 0)),
        labelName: labelPick.value || "row",
        valueName: valuePick.value,
      }),
    );
  };
  labelPick.addEventListener("change", draw);
  valuePick.addEventListener("change", draw);
  draw();
  return h("div", { class: "chart-block" }, h("div", { class: "row" }, field("Label", labelPick), field("Value", valuePick)), out);
}

function runOnCtrlEnter(textarea, form) {
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
}

function sqlTab(panel) {
  const editor = h("textarea", { id: "sql-editor", name: "query", rows: 7, spellcheck: "false" }, SQL_EXAMPLE);
  const output = h("div", { id: "sql-output", "aria-live": "polite" });
  const form = h(
    "form",
    { class: "stack wide", "aria-label": "SQL query" },
    field("SQL", editor, "One read-only statement over the table events (id, entity_id, event_type, version, position, \"timestamp\", payload, metadata). Ctrl+Enter runs it."),
    h("div", {}, h("button", { type: "submit", class: "primary", id: "sql-run" }, "Run SQL")),
  );
  runOnCtrlEnter(editor, form);
  onSubmit(form, output, async () => {
    replace(output, loadingText("Running…"));
    const started = performance.now();
    const answer = await api("/api/v1/sql", { method: "POST", body: { query: editor.value } });
    const took = Math.round(performance.now() - started);
    replace(
      output,
      h("p", { class: "muted", id: "sql-summary" }, `${formatNumber(answer.row_count)} rows in ${formatNumber(took)} ms.`),
      table({
        caption: "SQL answer",
        empty: "The query answered no rows.",
        columns: answer.columns.map((c) => ({ key: c, label: c, numeric: answer.rows.some((r) => typeof r[c] === "number") })),
        rows: answer.rows,
      }),
      chartOf(answer.columns, answer.rows),
    );
  });
  replace(panel, form, output);
}

function dslTab(panel) {
  const editor = h("textarea", { id: "dsl-editor", name: "query", rows: 8, spellcheck: "false" }, DSL_EXAMPLE);
  const output = h("div", { id: "dsl-output", "aria-live": "polite" });
  const form = h(
    "form",
    { class: "stack wide", "aria-label": "DSL query" },
    field("Query (JSON)", editor, "select, where, order_by, limit: see the API reference. Ctrl+Enter runs it."),
    h("div", {}, h("button", { type: "submit", class: "primary" }, "Run query")),
  );
  runOnCtrlEnter(editor, form);
  onSubmit(form, output, async () => {
    const body = parseJson(editor.value, "The query");
    replace(output, loadingText("Running…"));
    const answer = await api("/api/v1/query", { method: "POST", body });
    const more = answer.has_more ? " More match: raise limit or narrow the condition." : "";
    if (answer.rows) {
      const columns = [...new Set(answer.rows.flatMap((r) => Object.keys(r)))];
      replace(
        output,
        h("p", { class: "muted" }, `${formatNumber(answer.count)} rows.${more}`),
        table({ caption: "Query answer", columns: columns.map((c) => ({ key: c, label: c })), rows: answer.rows }),
        chartOf(columns, answer.rows),
      );
    } else {
      replace(
        output,
        h("p", { class: "muted" }, `${formatNumber(answer.count)} events.${more}`),
        table({
          caption: "Matching events",
          empty: "No event matches.",
          columns: [
            { key: "position", label: "Position", numeric: true },
            { key: "timestamp", label: "Time", render: (e) => time(e.timestamp) },
            { key: "entity_id", label: "Entity", render: (e) => entityLink(e.entity_id) },
            { key: "event_type", label: "Type" },
            { key: "version", label: "Version", numeric: true },
            { key: "payload", label: "Payload", render: (e) => h("code", {}, compactJson(e.payload)) },
          ],
          rows: answer.events,
        }),
      );
    }
  });
  replace(panel, form, output);
}

export default {
  title: "Query",
  render(container, ctx) {
    const tabs = [
      { id: "sql", label: "SQL", build: sqlTab },
      { id: "dsl", label: "Query language", build: dslTab },
    ];
    const panel = h("div", { role: "tabpanel", id: "query-panel", tabindex: "0" });
    const buttons = tabs.map((tab) =>
      h("button", { type: "button", role: "tab", id: `tab-${tab.id}`, "aria-controls": "query-panel" }, tab.label),
    );
    const choose = (index, focus) => {
      buttons.forEach((b, i) => {
        b.setAttribute("aria-selected", String(i === index));
        b.tabIndex = i === index ? 0 : -1;
      });
      panel.setAttribute("aria-labelledby", buttons[index].id);
      tabs[index].build(panel);
      if (focus) buttons[index].focus();
    };
    buttons.forEach((button, i) => {
      button.addEventListener("click", () => choose(i));
      // Arrow keys move between tabs, as the ARIA tabs pattern says.
      button.addEventListener("keydown", (event) => {
        if (event.key === "ArrowRight") choose((i + 1) % tabs.length, true);
        if (event.key === "ArrowLeft") choose((i + tabs.length - 1) % tabs.length, true);
      });
    });
    replace(container, section("Ask", h("div", { class: "tabs", role: "tablist", "aria-label": "Query kind" }, buttons), panel));
    choose(ctx.params.get("kind") === "dsl" ? 1 : 0);
  },
};
