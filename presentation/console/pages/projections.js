// Projections: the tenant's projections and their replay jobs.
// - The list: GET /api/v1/projections (name, builtin, status {checkpoint, head_position,
//   lag_events, lag_capped, caught_up, keys, last_error}) and GET /api/v1/replay (jobs).
// - One projection (`#/projections?name=…`): GET /api/v1/projections/{name} (definition and
//   status), its state a page of 100 keys at a time
//   (GET /api/v1/projections/{name}/state?limit=100&after=…), and, with `manage_pipelines`, a
//   rebuild (POST /api/v1/projections/{name}/rebuild → 202 with the replay job) followed every
//   500 ms on GET /api/v1/replay/{id} until the job is completed, cancelled or failed.

import { api } from "../api.js";
import {
  calm, cards, display, errorNotice, formatNumber, h, jsonBlock, loadingText, nowrap, replace,
  section, table, time,
} from "../ui.js";

const STATE_PAGE = 100;
const POLL_MS = 500;
const FINAL = new Set(["completed", "cancelled", "failed"]);

function projectionPath(name) {
  return `/api/v1/projections/${encodeURIComponent(name)}`;
}

function projectionLink(name) {
  return h("a", { href: `#/projections?name=${encodeURIComponent(name)}` }, name);
}

/** The lag as the status gives it: counted up to 1,000, then "1,000+". */
function lagText(status) {
  if (!status) return "—";
  return `${formatNumber(status.lag_events)}${status.lag_capped ? "+" : ""}`;
}

function caughtUpBadge(status) {
  if (!status) return "—";
  return status.caught_up
    ? nowrap(h("span", { class: "badge good" }, "caught up"))
    : nowrap(h("span", { class: "badge" }, "catching up"));
}

function jobBadge(status) {
  const kind = status === "completed" ? "badge good" : status === "failed" ? "badge bad" : "badge";
  return h("span", { class: kind, style: "white-space: nowrap" }, status);
}

function jobsTable(jobs, caption) {
  const newestFirst = [...jobs].reverse().slice(0, 20);
  return h(
    "div",
    {},
    table({
      caption,
      empty: "No replay jobs (finished jobs are kept for 24 hours).",
      columns: [
        { key: "id", label: "Job", render: (j) => h("code", { title: j.id }, j.id.slice(0, 8)) },
        { key: "projection", label: "Projection", render: (j) => projectionLink(j.projection) },
        { key: "status", label: "Status", render: (j) => jobBadge(j.status) },
        { key: "processed", label: "Processed", numeric: true, render: (j) => nowrap(`${formatNumber(j.processed)} / ${formatNumber(j.total)}`) },
        { key: "percent", label: "%", numeric: true, render: (j) => `${Number(j.percent || 0).toFixed(0)}%` },
        { key: "events_per_second", label: "Events/s", numeric: true, render: (j) => formatNumber(Math.round(j.events_per_second || 0)) },
        { key: "started_at", label: "Started", render: (j) => nowrap(time(j.started_at)) },
        { key: "finished_at", label: "Finished", render: (j) => nowrap(time(j.finished_at)) },
        { key: "error", label: "Error", render: (j) => display(j.error) },
      ],
      rows: newestFirst,
    }),
    jobs.length > newestFirst.length ? h("p", { class: "muted" }, `The 20 newest of ${formatNumber(jobs.length)} jobs.`) : null,
  );
}

/** Without a name: every projection, then the replay jobs. */
async function listing(container) {
  const listOut = h("div", { id: "projections-list" }, loadingText());
  const jobsOut = h("div", { id: "projections-jobs" }, loadingText());
  replace(container, section("Projections", listOut), section("Replay jobs", jobsOut));
  await Promise.all([
    api("/api/v1/projections").then(
      (answer) =>
        replace(
          listOut,
          table({
            caption: "Projections",
            empty: "No projections yet. Define one with POST /api/v1/projections (see PROJECTIONS.md).",
            columns: [
              { key: "name", label: "Name", render: (p) => projectionLink(p.name) },
              { key: "builtin", label: "Kind", render: (p) => (p.builtin ? "built-in" : "defined") },
              { key: "checkpoint", label: "Checkpoint", numeric: true, render: (p) => formatNumber(p.status?.checkpoint) },
              { key: "head", label: "Head", numeric: true, render: (p) => formatNumber(p.status?.head_position) },
              { key: "lag", label: "Lag", numeric: true, render: (p) => lagText(p.status) },
              { key: "caught_up", label: "State", render: (p) => caughtUpBadge(p.status) },
              { key: "keys", label: "Keys", numeric: true, render: (p) => formatNumber(p.status?.keys) },
              { key: "last_error", label: "Last error", render: (p) => display(p.status?.last_error) },
            ],
            rows: answer.projections || [],
          }),
        ),
      (error) => replace(listOut, errorNotice(error)),
    ),
    api("/api/v1/replay").then(
      (answer) => replace(jobsOut, jobsTable(answer.jobs || [], "Replay jobs")),
      (error) => replace(jobsOut, errorNotice(error)),
    ),
  ]);
}

/** One projection: status, definition, rebuild with progress, state pages, its jobs. */
async function one(container, ctx, name) {
  const canManage = ctx.me.permissions.includes("manage_pipelines");
  const statusOut = h("div", { id: "projection-status", "aria-live": "polite" }, loadingText());
  const definitionOut = h("div", { id: "projection-definition" });
  const rebuildOut = h("div", { id: "projection-rebuild", "aria-live": "polite" });
  const stateOut = h("div", { id: "projection-state" }, loadingText());
  const jobsOut = h("div", { id: "projection-jobs" }, loadingText());
  let stopped = false;
  let timer = 0;
  let following = null;
  // The `after` cursor of each page shown so far: the last one is the current page.
  const cursors = [undefined];

  const rebuildButton = canManage
    ? h("button", { type: "button", class: "primary", id: "projection-rebuild-button", onclick: () => rebuild() }, "Rebuild")
    : null;

  async function loadStatus() {
    try {
      const p = await api(projectionPath(name));
      const s = p.status || {};
      replace(
        statusOut,
        cards([
          { label: "Checkpoint", value: formatNumber(s.checkpoint) },
          { label: "Head position", value: formatNumber(s.head_position) },
          { label: "Lag (events)", value: lagText(s) },
          { label: "Keys", value: formatNumber(s.keys) },
        ]),
        h(
          "div",
          { class: "status-line" },
          caughtUpBadge(s),
          h("span", { class: "badge" }, p.builtin ? "built-in" : "defined"),
          h("span", { class: "muted" }, "Created ", time(p.created_at)),
          p.generation ? h("span", { class: "muted" }, "Generation ", h("code", {}, p.generation)) : null,
        ),
        s.last_error ? calm(`The last catch-up failed: ${s.last_error}`, "warning") : null,
      );
      replace(definitionOut, jsonBlock(p.definition, `Definition of ${name}`));
      return true;
    } catch (error) {
      replace(statusOut, errorNotice(error));
      replace(definitionOut);
      return false;
    }
  }

  async function loadState() {
    const after = cursors[cursors.length - 1];
    replace(stateOut, loadingText());
    try {
      const page = await api(`${projectionPath(name)}/state`, { query: { limit: STATE_PAGE, after } });
      const rows = Object.entries(page.state || {}).map(([key, value]) => ({ key, value }));
      const first = (cursors.length - 1) * STATE_PAGE + 1;
      const pager = () => h(
        "div",
        { class: "status-line" },
        h(
          "span",
          { class: "muted" },
          rows.length > 0 ? `Keys ${formatNumber(first)}–${formatNumber(first + rows.length - 1)}` : "",
          ` at checkpoint ${formatNumber(page.checkpoint)}`,
        ),
        cursors.length > 1
          ? h("button", { type: "button", onclick: () => { cursors.pop(); loadState(); } }, "Previous page")
          : null,
        page.has_more && page.next_after !== null && page.next_after !== undefined
          ? h("button", { type: "button", onclick: () => { cursors.push(page.next_after); loadState(); } }, "Next page")
          : null,
      );
      replace(
        stateOut,
        rows.length > 20 ? pager() : null,
        table({
          caption: `State of ${name}`,
          empty: cursors.length > 1 ? "No more keys." : "The state is empty: no event has been folded in yet.",
          columns: [
            { key: "key", label: "Key", render: (r) => h("code", {}, r.key) },
            { key: "value", label: "State", render: (r) => h("code", {}, display(r.value)) },
          ],
          rows,
        }),
        pager(),
      );
    } catch (error) {
      replace(stateOut, errorNotice(error));
    }
  }

  async function loadJobs() {
    try {
      const answer = await api("/api/v1/replay");
      const mine = (answer.jobs || []).filter((j) => j.projection === name);
      replace(jobsOut, jobsTable(mine, `Replay jobs of ${name}`));
      return mine;
    } catch (error) {
      replace(jobsOut, errorNotice(error));
      return [];
    }
  }

  function showJob(job) {
    const percent = Math.max(0, Math.min(100, Number(job.percent) || 0));
    const progressId = `job-progress-${job.id}`;
    const eps = formatNumber(Math.round(job.events_per_second || 0));
    replace(
      rebuildOut,
      h("label", { for: progressId }, `Rebuild of ${name}: ${job.status}`),
      h("progress", { id: progressId, max: 100, value: percent }, `${percent.toFixed(0)}%`),
      h(
        "p",
        { class: "status-line" },
        h("span", {}, `${formatNumber(job.processed)} / ${formatNumber(job.total)} events (${percent.toFixed(0)}%)`),
        h("span", {}, `${eps} events/s`),
        jobBadge(job.status),
      ),
      job.status === "failed" ? errorNotice(new Error(`The rebuild failed: ${job.error || "no reason given"}`)) : null,
      job.status === "completed" ? calm("Rebuilt: the new state is in place.", "success") : null,
      job.status === "cancelled" ? calm("The rebuild was cancelled; the previous state is kept.", "warning") : null,
    );
  }

  /** Follows a job every 500 ms until its status is final, then refreshes the page's figures. */
  function follow(job) {
    following = job.id;
    if (rebuildButton) rebuildButton.disabled = true;
    showJob(job);
    const tick = async () => {
      if (stopped || following !== job.id) return;
      try {
        const current = await api(`/api/v1/replay/${encodeURIComponent(job.id)}`);
        if (stopped || following !== job.id) return;
        showJob(current);
        if (!FINAL.has(current.status)) {
          timer = setTimeout(tick, POLL_MS);
          return;
        }
      } catch (error) {
        if (stopped) return;
        rebuildOut.appendChild(errorNotice(error));
      }
      following = null;
      if (rebuildButton) rebuildButton.disabled = false;
      cursors.length = 1;
      await Promise.all([loadStatus(), loadState(), loadJobs()]);
    };
    if (FINAL.has(job.status)) {
      tick();
    } else {
      timer = setTimeout(tick, POLL_MS);
    }
  }

  async function rebuild() {
    if (following) return;
    rebuildButton.disabled = true;
    replace(rebuildOut, loadingText("Starting the rebuild…"));
    try {
      const job = await api(`${projectionPath(name)}/rebuild`, { method: "POST" });
      if (stopped) return;
      follow(job);
      loadJobs();
    } catch (error) {
      rebuildButton.disabled = false;
      replace(rebuildOut, errorNotice(error));
    }
  }

  replace(
    container,
    h("p", {}, h("a", { href: "#/projections" }, "← All projections")),
    section(
      `Projection ${name}`,
      statusOut,
      canManage
        ? h(
            "div",
            {},
            h("div", { class: "status-line" }, rebuildButton, h("span", { class: "muted" }, "Re-runs the whole log into a new state, swapped in when done.")),
            rebuildOut,
          )
        : null,
      h("h3", {}, "Definition"),
      definitionOut,
    ),
    section("State", stateOut),
    section("Replay jobs", jobsOut),
  );

  const found = await loadStatus();
  if (!found) {
    replace(stateOut);
    replace(jobsOut);
    return () => {};
  }
  const [, jobs] = await Promise.all([loadState(), loadJobs()]);
  // A rebuild already running (started elsewhere, or before a reload) is followed too.
  const running = jobs.filter((j) => j.status === "running").pop();
  if (running && !stopped) follow(running);

  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

export default {
  title: "Projections",
  async render(container, ctx) {
    const name = ctx.params.get("name");
    if (!name) return listing(container);
    return one(container, ctx, name);
  },
};
