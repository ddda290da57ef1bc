// Schemas: the tenant's schema registry.
// - The subjects: GET /api/v1/schemas (subject, latest_version, versions (a count),
//   compatibility, enforce).
// - One subject (`#/schemas?subject=…[&version=N]`): its versions
//   (GET /api/v1/schemas/{subject}/versions), one version's schema
//   (GET /api/v1/schemas/{subject}?version=N), and a payload checked against it
//   (POST /api/v1/schemas/validate {subject, payload, version}).
// - With `manage_schemas`: a new schema or version (POST /api/v1/schemas
//   {subject, schema, compatibility?, enforce?}).

import { api } from "../api.js";
import {
  errorNotice, field, formatNumber, h, jsonBlock, loadingText, notice, onSubmit, parseJson, replace, section, select, table, time,
} from "../ui.js";

const MODES = ["NONE", "BACKWARD", "FORWARD", "FULL"];

function plural(n, word) {
  return `${formatNumber(n)} ${word}${n === 1 ? "" : "s"}.`;
}

function yesNo(on) {
  return h("span", { class: on ? "badge good" : "badge", style: "white-space: nowrap" }, on ? "on" : "off");
}

function subjectLink(subject) {
  return h("a", { href: `#/schemas?subject=${encodeURIComponent(subject)}` }, subject);
}

function subjectPath(subject) {
  return `/api/v1/schemas/${encodeURIComponent(subject)}`;
}

/** The list of subjects; resolves with them by name. */
async function loadList(output) {
  const answer = await api("/api/v1/schemas");
  const subjects = answer.subjects || [];
  replace(
    output,
    table({
      caption: "Schema subjects",
      empty: "No schemas registered yet.",
      columns: [
        { key: "subject", label: "Subject", render: (r) => subjectLink(r.subject) },
        { key: "latest_version", label: "Latest version", numeric: true },
        { key: "versions", label: "Versions", numeric: true },
        { key: "compatibility", label: "Compatibility" },
        { key: "enforce", label: "Enforced", render: (r) => yesNo(r.enforce) },
      ],
      rows: subjects,
    }),
    subjects.length > 0 ? h("p", { class: "muted" }, plural(answer.total ?? subjects.length, "subject")) : null,
  );
  return new Map(subjects.map((s) => [s.subject, s]));
}

/** One subject: a version picker, the schema, and the validation form. */
function detail(subject, wantedVersion) {
  const output = h("div", { id: "schema-detail" });
  const versionOut = h("div", { id: "schema-version", "aria-live": "polite" });
  const versionSelect = h("select", { name: "version" });
  const payload = h("textarea", { name: "payload", rows: 6, required: true, spellcheck: "false", placeholder: '{"amount_cents": 100, "currency": "EUR"}' });
  const verdict = h("div", { id: "schema-verdict", "aria-live": "polite" });
  const validateForm = h(
    "form",
    { class: "stack", "aria-label": "Validate a payload" },
    field("Payload (JSON)", payload, "Checked against the version chosen above. Nothing is stored."),
    h("div", {}, h("button", { type: "submit", class: "primary" }, "Validate")),
  );

  async function show(version) {
    replace(versionOut, loadingText());
    try {
      const schema = await api(subjectPath(subject), { query: { version } });
      replace(
        versionOut,
        h(
          "div",
          { class: "status-line" },
          h("strong", {}, `Version ${formatNumber(schema.version)}`),
          h("span", {}, "Compatibility ", h("span", { class: "badge" }, schema.compatibility)),
          h("span", {}, "Enforced ", yesNo(schema.enforce)),
          h("span", { class: "muted" }, "Registered ", time(schema.registered_at)),
        ),
        jsonBlock(schema.schema, `Schema of ${subject}, version ${schema.version}`),
      );
    } catch (error) {
      replace(versionOut, errorNotice(error));
    }
  }

  versionSelect.addEventListener("change", () => {
    replace(verdict);
    show(versionSelect.value);
  });

  onSubmit(validateForm, verdict, async () => {
    const value = parseJson(payload.value, "The payload");
    const version = Number(versionSelect.value) || undefined;
    const answer = await api("/api/v1/schemas/validate", {
      method: "POST",
      body: { subject, payload: value, version },
    });
    if (answer.valid) {
      replace(verdict, notice(`Valid against version ${answer.version} of ${answer.subject}.`, "success"));
      return;
    }
    const errors = answer.errors || [];
    replace(
      verdict,
      h(
        "div",
        { class: "notice warning", role: "status" },
        h("p", { style: "margin: 0 0 .25rem" }, `Not valid against version ${answer.version}: ${errors.length} problem${errors.length === 1 ? "" : "s"}.`),
        h("ul", { style: "margin: 0" }, errors.map((e) => h("li", {}, h("code", {}, e.field || "payload"), `: ${e.message}`))),
      ),
    );
  });

  async function load() {
    replace(output, loadingText());
    try {
      const answer = await api(`${subjectPath(subject)}/versions`);
      const versions = [...(answer.versions || [])].sort((a, b) => b - a);
      const chosen = versions.includes(Number(wantedVersion)) ? Number(wantedVersion) : versions[0];
      replace(versionSelect, versions.map((v) => h("option", { value: String(v), selected: v === chosen }, `Version ${v}${v === versions[0] ? " (latest)" : ""}`)));
      replace(
        output,
        h("p", {}, h("a", { href: "#/schemas" }, "← All subjects")),
        h("form", { class: "row", "aria-label": "Choose a version", onsubmit: (e) => e.preventDefault() }, field("Version", versionSelect)),
        versionOut,
        h("h3", {}, "Validate a payload"),
        validateForm,
        verdict,
      );
      if (chosen !== undefined) await show(String(chosen));
    } catch (error) {
      replace(output, h("p", {}, h("a", { href: "#/schemas" }, "← All subjects")), errorNotice(error));
    }
  }

  return { node: section(`Subject ${subject}`, output), load };
}

/** The registration form; `subjects()` gives the known subjects, `done(subject)` refreshes. */
function registerForm(initialSubject, subjects, done) {
  const subject = h("input", { name: "subject", required: true, value: initialSubject || "", placeholder: "order.placed", autocomplete: "off", spellcheck: "false" });
  const schema = h("textarea", {
    name: "schema",
    rows: 10,
    required: true,
    spellcheck: "false",
    placeholder: '{"type": "object", "properties": {"amount_cents": {"type": "integer"}}, "required": ["amount_cents"]}',
  });
  const compatibility = select([["", "Server default (BACKWARD)"], ...MODES], "", { name: "compatibility" });
  const enforce = h("input", { name: "enforce", type: "checkbox", checked: true });
  const modeHint = h("p", { class: "hint", id: "schema-mode-hint" });
  compatibility.setAttribute("aria-describedby", modeHint.id);
  enforce.setAttribute("aria-describedby", modeHint.id);
  const output = h("div", { id: "schema-register-output", "aria-live": "polite" });
  const enforceField = field("Enforce on appends", enforce);
  enforceField.style.justifyItems = "start";
  const form = h(
    "form",
    { class: "stack", "aria-label": "Register a schema" },
    field("Subject (usually the event type)", subject),
    field("JSON Schema (draft 2020-12)", schema),
    field("Compatibility", compatibility),
    enforceField,
    modeHint,
    h("div", {}, h("button", { type: "submit", class: "primary" }, "Register")),
  );
  form.style.maxWidth = "720px";

  // A subject's mode and enforcement are set when it is created; a later registration may only
  // repeat them, so for a known subject they are shown, not offered.
  function sync() {
    const known = subjects().get(subject.value.trim());
    compatibility.disabled = Boolean(known);
    enforce.disabled = Boolean(known);
    if (known) {
      compatibility.value = "";
      enforce.checked = known.enforce;
      modeHint.textContent = `${known.subject} exists (compatibility ${known.compatibility}, enforcement ${known.enforce ? "on" : "off"}): a new version keeps them.`;
    } else {
      modeHint.textContent = "Compatibility and enforcement are chosen when a subject is created.";
    }
  }
  subject.addEventListener("input", sync);

  onSubmit(form, output, async () => {
    const name = subject.value.trim();
    const value = parseJson(schema.value, "The schema");
    const known = subjects().get(name);
    const body = { subject: name, schema: value };
    if (!known) {
      if (compatibility.value) body.compatibility = compatibility.value;
      body.enforce = enforce.checked;
    }
    const answer = await api("/api/v1/schemas", { method: "POST", body });
    const created = !known || answer.version > known.latest_version;
    replace(
      output,
      notice(
        created
          ? `Registered ${answer.subject} version ${answer.version}.`
          : `This schema is already version ${answer.version} of ${answer.subject}: nothing new was registered.`,
        "success",
      ),
      h("p", {}, h("a", { href: `#/schemas?subject=${encodeURIComponent(answer.subject)}&version=${answer.version}` }, `Open ${answer.subject} version ${answer.version}`)),
    );
    await done(answer.subject);
    sync();
  });

  return { node: section("Register a schema", form, output), sync };
}

export default {
  title: "Schemas",
  async render(container, ctx) {
    const canManage = ctx.me.permissions.includes("manage_schemas");
    const selected = ctx.params.get("subject");
    const listOut = h("div", { id: "schemas-list" });
    let subjects = new Map();

    const one = selected ? detail(selected, ctx.params.get("version")) : null;
    const register = canManage
      ? registerForm(selected, () => subjects, async (subject) => {
          await refreshList();
          if (one && subject === selected) await one.load();
        })
      : null;

    async function refreshList() {
      try {
        subjects = await loadList(listOut);
      } catch (error) {
        replace(listOut, errorNotice(error));
      }
    }

    replace(
      container,
      one ? one.node : null,
      section("Subjects", listOut),
      register ? register.node : null,
    );
    replace(listOut, loadingText());
    await Promise.all([refreshList(), one ? one.load() : null]);
    if (register) register.sync();
  },
};
