// Tenants and keys: administration of tenants, users and API keys.
// - Tenants (permission `manage_tenants`): GET /api/v1/tenants; operators (admins of tenant
//   `default`) also create tenants (POST /api/v1/tenants {id, name, tier}) and activate or
//   deactivate them (POST /api/v1/tenants/{id}/activate|deactivate). A selected tenant
//   (`#/admin?tenant=…`) shows its usage: GET /api/v1/tenants/{id}/stats. A server without
//   tenancy answers 404 on the listing: shown as a calm notice.
// - Users (permission `admin`): GET /api/v1/auth/users, POST /api/v1/auth/users
//   {username, password, role, tenant_id?}.
// - API keys: GET /api/v1/auth/api-keys, POST /api/v1/auth/api-keys {name, role, expires_at?}
//   (the key is shown once), DELETE /api/v1/auth/api-keys/{id} (revoke).
// With authentication off (`me.type === "system"`) the identity routes answer 404, so users
// and keys are not asked for at all.

import { api } from "../api.js";
import {
  calm, cards, errorNotice, field, formatBytes, formatNumber, h, loadingText, notice, nowrap,
  onSubmit, replace, section, select, table, time,
} from "../ui.js";

const TIERS = ["free", "professional", "unlimited"];

/** Each role's permissions (the table of docs/API.md, "Conventions"). */
const ROLE_PERMISSIONS = {
  admin: ["read", "write", "admin", "metrics", "manage_schemas", "manage_pipelines", "manage_tenants"],
  developer: ["read", "write", "metrics", "manage_schemas", "manage_pipelines"],
  service_account: ["read", "write"],
  readonly: ["read", "metrics"],
};

const QUOTA_NAMES = {
  max_events_per_day: "Events per day",
  max_storage_bytes: "Storage",
  max_queries_per_hour: "Queries per hour",
  max_api_keys: "API keys",
  max_projections: "Projections",
  max_pipelines: "Pipelines",
  max_subscriptions: "Live subscriptions",
  max_webhooks: "Webhooks",
};

const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

/** The roles the caller may give a user or key: those whose every permission it holds. */
function grantableRoles(me) {
  const roles = Object.keys(ROLE_PERMISSIONS).filter((role) =>
    ROLE_PERMISSIONS[role].every((p) => me.permissions.includes(p)),
  );
  return roles.length > 0 ? roles : [me.role];
}

function badge(text, kind) {
  return h("span", { class: kind ? `badge ${kind}` : "badge", style: "white-space: nowrap" }, text);
}

// ---------------------------------------------------------------------------------------------
// Tenants

function tenantsSection(ctx, operator) {
  const selected = ctx.params.get("tenant");
  const listOut = h("div", { id: "tenants-list" }, loadingText());
  const actionOut = h("div", { id: "tenants-action", "aria-live": "polite" });
  const usageOut = h("div", { id: "tenant-usage" });
  const formArea = h("div", {});

  async function setActive(tenant, active) {
    if (!active && !window.confirm(`Deactivate tenant "${tenant.id}"? Its credentials are refused at once.`)) return;
    try {
      await api(`/api/v1/tenants/${encodeURIComponent(tenant.id)}/${active ? "activate" : "deactivate"}`, { method: "POST" });
      replace(actionOut, notice(`Tenant ${tenant.id} is ${active ? "active" : "deactivated"}.`, "success"));
      await loadList();
      if (selected === tenant.id) await loadUsage();
    } catch (error) {
      replace(actionOut, errorNotice(error));
    }
  }

  function actions(tenant) {
    if (tenant.active) {
      // `default` cannot be deactivated: not offered.
      if (tenant.id === "default") return "—";
      return h("button", { type: "button", class: "danger", onclick: () => setActive(tenant, false) }, "Deactivate");
    }
    return h("button", { type: "button", onclick: () => setActive(tenant, true) }, "Activate");
  }

  /** Resolves false when tenancy is off (the listing answered 404). */
  async function loadList() {
    try {
      const answer = await api("/api/v1/tenants");
      replace(
        listOut,
        table({
          caption: "Tenants",
          empty: "No tenants.",
          columns: [
            {
              key: "id",
              label: "Id",
              render: (t) =>
                nowrap(h("a", { href: `#/admin?tenant=${encodeURIComponent(t.id)}`, "aria-current": t.id === selected ? "true" : null }, t.id)),
            },
            { key: "name", label: "Name" },
            { key: "tier", label: "Tier" },
            { key: "active", label: "Active", render: (t) => (t.active ? badge("active", "good") : badge("inactive", "bad")) },
            { key: "created_at", label: "Created", render: (t) => nowrap(time(t.created_at)) },
            ...(operator ? [{ key: "actions", label: "Actions", render: actions }] : []),
          ],
          rows: answer.tenants || [],
        }),
      );
      return true;
    } catch (error) {
      if (error.status === 404) {
        replace(listOut, calm("Tenancy is off on this server."));
        return false;
      }
      replace(listOut, errorNotice(error));
      return true;
    }
  }

  async function loadUsage() {
    if (!selected) return;
    replace(usageOut, loadingText());
    try {
      const stats = await api(`/api/v1/tenants/${encodeURIComponent(selected)}/stats`);
      const rows = Object.entries(stats.usage || {}).map(([quota, use]) => ({ quota, ...use }));
      const amount = (quota, n) => (quota === "max_storage_bytes" ? formatBytes(n) : formatNumber(n));
      replace(
        usageOut,
        h(
          "div",
          { class: "status-line" },
          h("strong", {}, `Tenant ${stats.tenant_id}`),
          badge(stats.tier),
          stats.active ? badge("active", "good") : badge("inactive", "bad"),
          h("a", { href: "#/admin" }, "Close"),
        ),
        cards([
          { label: "Events", value: formatNumber(stats.events?.total_events) },
          { label: "Entities", value: formatNumber(stats.events?.total_entities) },
          { label: "Event types", value: formatNumber(stats.events?.total_event_types) },
          { label: "Last position", value: formatNumber(stats.events?.last_position) },
        ]),
        table({
          caption: `Quota usage of ${stats.tenant_id}`,
          empty: "No quotas reported.",
          columns: [
            { key: "quota", label: "Quota", render: (r) => QUOTA_NAMES[r.quota] || r.quota },
            { key: "used", label: "Used", numeric: true, render: (r) => amount(r.quota, r.used) },
            { key: "limit", label: "Limit", numeric: true, render: (r) => (typeof r.limit === "number" ? amount(r.quota, r.limit) : "unlimited") },
            {
              key: "share",
              label: "Share",
              render: (r) => {
                if (typeof r.limit !== "number") return "—";
                const share = r.limit > 0 ? Math.min(100, (r.used / r.limit) * 100) : 100;
                return h(
                  "progress",
                  { max: 100, value: share, "aria-label": `${QUOTA_NAMES[r.quota] || r.quota}: ${share.toFixed(0)}% used`, title: `${share.toFixed(1)}% used` },
                  `${share.toFixed(0)}%`,
                );
              },
            },
          ],
          rows,
        }),
      );
    } catch (error) {
      replace(usageOut, errorNotice(error));
    }
  }

  function createForm() {
    const id = h("input", { name: "id", required: true, maxlength: 64, autocomplete: "off", spellcheck: "false", placeholder: "acme" });
    const name = h("input", { name: "name", required: true, autocomplete: "off", placeholder: "Acme Corp." });
    const tier = select(TIERS, "free", { name: "tier" });
    const output = h("div", { "aria-live": "polite" });
    const form = h(
      "form",
      { class: "row", "aria-label": "Create a tenant" },
      field("Id", id, "1–64 of A-Z a-z 0-9 _ -, not starting with _"),
      field("Name", name),
      field("Tier", tier),
      h("button", { type: "submit", class: "primary" }, "Create tenant"),
    );
    onSubmit(form, output, async () => {
      const tenant = await api("/api/v1/tenants", {
        method: "POST",
        body: { id: id.value.trim(), name: name.value.trim(), tier: tier.value },
      });
      replace(output, notice(`Created tenant ${tenant.id} (${tenant.tier}).`, "success"));
      form.reset();
      await loadList();
    });
    return h("div", {}, h("h3", {}, "Create a tenant"), form, output);
  }

  return {
    node: section("Tenants", selected ? usageOut : null, actionOut, listOut, formArea),
    async load() {
      const [tenancy] = await Promise.all([loadList(), loadUsage()]);
      if (!tenancy) {
        replace(usageOut);
        return;
      }
      if (operator) replace(formArea, createForm());
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Users

function usersSection(ctx, operator, roles) {
  const listOut = h("div", { id: "users-list" }, loadingText());

  async function loadList() {
    try {
      const answer = await api("/api/v1/auth/users");
      replace(
        listOut,
        table({
          caption: "Users",
          empty: "No users.",
          columns: [
            { key: "username", label: "Username" },
            { key: "role", label: "Role", render: (u) => nowrap(u.role) },
            { key: "tenant_id", label: "Tenant" },
            { key: "created_at", label: "Created", render: (u) => nowrap(time(u.created_at)) },
          ],
          rows: answer.users || [],
        }),
      );
    } catch (error) {
      replace(listOut, errorNotice(error));
    }
  }

  const username = h("input", { name: "username", required: true, maxlength: 64, autocomplete: "off", spellcheck: "false", autocapitalize: "none" });
  const password = h("input", { name: "new-password", type: "password", required: true, minlength: 12, maxlength: 1024, autocomplete: "new-password" });
  const role = select(roles, roles.includes("readonly") ? "readonly" : roles[roles.length - 1], { name: "role" });
  const tenant = operator ? h("input", { name: "tenant_id", autocomplete: "off", spellcheck: "false", placeholder: ctx.me.tenant_id }) : null;
  const output = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "row", "aria-label": "Create a user" },
    field("Username", username, "1–64 of a-z 0-9 . _ @ -"),
    field("Password", password, "12 characters or more"),
    field("Role", role),
    tenant ? field("Tenant (optional)", tenant, `Empty: ${ctx.me.tenant_id}`) : null,
    h("button", { type: "submit", class: "primary" }, "Create user"),
  );
  onSubmit(form, output, async () => {
    if (password.value.length < 12) throw new Error("The password needs at least 12 characters.");
    const body = { username: username.value.trim(), password: password.value, role: role.value };
    if (tenant && tenant.value.trim()) body.tenant_id = tenant.value.trim();
    const user = await api("/api/v1/auth/users", { method: "POST", body });
    replace(output, notice(`Created user ${user.username} (${user.role}, tenant ${user.tenant_id}).`, "success"));
    form.reset();
    await loadList();
  });

  return {
    node: section("Users", listOut, h("h3", {}, "Create a user"), form, output),
    load: loadList,
  };
}

// ---------------------------------------------------------------------------------------------
// API keys

function keyState(key) {
  if (key.revoked_at) return "revoked";
  if (key.expires_at && Date.parse(key.expires_at) <= Date.now()) return "expired";
  return "active";
}

/** The new key, shown once, with a copy button. */
function secretBox(key, onDone) {
  const secret = h("div", { class: "secret", id: "new-api-key", tabindex: "0", "aria-label": "The new API key" }, key.key);
  const copied = h("span", { class: "muted", role: "status" });
  const copy = h("button", {
    type: "button",
    class: "primary",
    onclick: async () => {
      try {
        if (!navigator.clipboard) throw new Error("no clipboard");
        await navigator.clipboard.writeText(key.key);
        copied.textContent = "Copied.";
      } catch {
        // No clipboard access (plain http, or refused): select the text for Ctrl+C / ⌘C.
        const selection = window.getSelection();
        selection.removeAllRanges();
        const range = document.createRange();
        range.selectNodeContents(secret);
        selection.addRange(range);
        secret.focus();
        copied.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
      }
    },
  }, "Copy");
  return h(
    "div",
    { class: "panel", style: "margin-top: .75rem" },
    h("p", { class: "notice warning", role: "alert", style: "margin-top: 0" },
      `The key "${key.name}" (${key.role}) is shown this once: the server keeps only a digest. Copy it now.`),
    secret,
    h("div", { class: "status-line" }, copy, h("button", { type: "button", onclick: onDone }, "I have saved it"), copied),
  );
}

function keysSection(ctx, roles) {
  const listOut = h("div", { id: "api-keys-list" }, loadingText());
  const actionOut = h("div", { "aria-live": "polite" });

  async function revoke(key) {
    if (!window.confirm(`Revoke the API key "${key.name}" (${key.prefix}…)? It stops working at once.`)) return;
    try {
      await api(`/api/v1/auth/api-keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
      replace(actionOut, notice(`Revoked the key ${key.name}.`, "success"));
      await loadList();
    } catch (error) {
      replace(actionOut, errorNotice(error));
    }
  }

  async function loadList() {
    try {
      const answer = await api("/api/v1/auth/api-keys");
      replace(
        listOut,
        table({
          caption: "API keys",
          empty: "No API keys yet.",
          columns: [
            { key: "name", label: "Name" },
            { key: "role", label: "Role", render: (k) => nowrap(k.role) },
            { key: "prefix", label: "Prefix", render: (k) => nowrap(h("code", {}, k.prefix)) },
            { key: "created_at", label: "Created", render: (k) => nowrap(time(k.created_at)) },
            { key: "expires_at", label: "Expires", render: (k) => (k.expires_at ? nowrap(time(k.expires_at)) : "never") },
            { key: "last_used_at", label: "Last used", render: (k) => (k.last_used_at ? nowrap(time(k.last_used_at)) : "never") },
            {
              key: "state",
              label: "State",
              render: (k) => {
                const state = keyState(k);
                return badge(state, state === "active" ? "good" : "bad");
              },
            },
            {
              key: "actions",
              label: "Actions",
              render: (k) =>
                keyState(k) === "active"
                  ? h("button", { type: "button", class: "danger", "aria-label": `Revoke ${k.name}`, onclick: () => revoke(k) }, "Revoke")
                  : "—",
            },
          ],
          rows: answer.api_keys || [],
        }),
      );
    } catch (error) {
      replace(listOut, errorNotice(error));
    }
  }

  const name = h("input", { name: "key-name", required: true, autocomplete: "off", placeholder: "ingest-service" });
  const role = select(roles, roles.includes(ctx.me.role) ? ctx.me.role : roles[0], { name: "role" });
  const expires = h("input", { name: "expires_at", autocomplete: "off", placeholder: "2027-01-01T00:00:00Z", size: 24 });
  const output = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "row", "aria-label": "Create an API key" },
    field("Name", name),
    field("Role", role, "At most your own role."),
    field("Expires at (optional)", expires, "RFC 3339, in the future. Empty: never."),
    h("button", { type: "submit", class: "primary" }, "Create key"),
  );
  onSubmit(form, output, async () => {
    const body = { name: name.value.trim(), role: role.value };
    const until = expires.value.trim();
    if (until) {
      if (!RFC3339.test(until)) throw new Error("Expires at must be an RFC 3339 time such as 2027-01-01T00:00:00Z.");
      body.expires_at = until;
    }
    const key = await api("/api/v1/auth/api-keys", { method: "POST", body });
    form.reset();
    role.value = roles.includes(ctx.me.role) ? ctx.me.role : roles[0];
    replace(output, secretBox(key, () => {
      replace(output, calm(`The key ${key.name} is ready; its secret is no longer shown.`));
      name.focus();
    }));
    output.querySelector(".secret")?.focus();
    await loadList();
  });

  return {
    node: section("API keys", actionOut, listOut, h("h3", {}, "Create an API key"), form, output),
    load: loadList,
  };
}

export default {
  title: "Tenants and keys",
  async render(container, ctx) {
    const me = ctx.me;
    const operator = me.tenant_id === "default" && me.permissions.includes("admin");
    const roles = grantableRoles(me);
    const parts = [];

    if (me.permissions.includes("manage_tenants")) parts.push(tenantsSection(ctx, operator));
    if (me.type === "system") {
      parts.push({
        node: section("Users and API keys", calm("Authentication is off on this server: users and keys need it.")),
        load: async () => {},
      });
    } else {
      if (me.permissions.includes("admin")) parts.push(usersSection(ctx, operator, roles));
      parts.push(keysSection(ctx, roles));
    }

    replace(container, parts.map((p) => p.node));
    await Promise.all(parts.map((p) => p.load()));
  },
};
