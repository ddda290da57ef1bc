// The console's API client: the caller's credential on every request, problem documents
// turned into sentences, the access token refreshed before it expires, and the WebSocket URL
// of the live tail (browsers cannot set headers on a handshake, so the credential goes in the
// `access_token` query parameter, which the server never logs).

const SESSION_KEY = "allsource.console.session";

/** An answer that was not a success, with the problem document the server sent. */
export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(describeProblem(status, problem, retryAfter));
    this.status = status;
    this.problem = problem;
  }
}

/** The problem document of an error answer, in words a person can act on. */
export function describeProblem(status, problem, retryAfter) {
  if (status === 0) {
    return "The server cannot be reached. Is it running, and is this the right address?";
  }
  const p = problem && typeof problem === "object" ? problem : {};
  const title = p.title || `HTTP ${status}`;
  let text = p.detail && p.detail !== title ? `${title}: ${p.detail}` : title;
  if (Array.isArray(p.errors) && p.errors.length > 0) {
    const fields = p.errors.map((e) => (e.field ? `${e.field}: ${e.message}` : e.message));
    text += ` (${fields.join("; ")})`;
  }
  if (status === 403) {
    text += p.policy_id ? ` (policy ${p.policy_id})` : ". Your role does not allow this.";
  } else if (status === 429 && retryAfter) {
    text += `. Try again in ${retryAfter} s.`;
  }
  return text;
}

/** The signed-in session: a login's tokens, an API key, or none (authentication off). */
export const session = {
  current: null,
  load() {
    try {
      this.current = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    } catch {
      this.current = null;
    }
    return this.current;
  },
  save(value) {
    this.current = value;
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(value));
  },
  clear() {
    this.current = null;
    sessionStorage.removeItem(SESSION_KEY);
    clearTimeout(refreshTimer);
  },
  /** The credential as the `access_token` query parameter takes it, or null. */
  secret() {
    const s = this.current;
    if (!s) return null;
    if (s.kind === "token") return s.access_token;
    if (s.kind === "key") return s.key;
    return null;
  },
};

let unauthorizedHandler = () => {};
let refreshTimer = 0;

/** Called when the server refuses the session's credential (401). */
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

function credentialHeaders() {
  const s = session.current;
  if (s?.kind === "token") return { Authorization: `Bearer ${s.access_token}` };
  if (s?.kind === "key") return { "X-API-Key": s.key };
  return {};
}

/**
 * Calls the API. `query` members that are undefined, null or "" are left out; `body` is sent
 * as JSON. Resolves with the parsed answer (null for 204), rejects with an ApiError. A 401
 * ends the session (the shell shows the sign-in page), unless `signingIn`: the credential is
 * being tried.
 */
export async function api(path, { method = "GET", query, body, signingIn = false } = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") {
      url.searchParams.set(name, String(value));
    }
  }
  const headers = { Accept: "application/json", ...credentialHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, null);
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { title: text.slice(0, 200) };
    }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data, response.headers.get("retry-after"));
    if (response.status === 401 && !signingIn && session.current && session.current.kind !== "none") {
      unauthorizedHandler(error);
    }
    throw error;
  }
  return data;
}

/** Signs in with a username and password; keeps the tokens and refreshes them in time. */
export async function login(username, password) {
  const answer = await api("/api/v1/auth/login", {
    method: "POST",
    body: { username, password },
    signingIn: true,
  });
  keepTokens(answer);
}

/** Signs in with an API key (checked by asking who it is). */
export async function useApiKey(key) {
  session.current = { kind: "key", key };
  try {
    await api("/api/v1/auth/me", { signingIn: true });
  } catch (error) {
    session.current = null;
    throw error;
  }
  session.save({ kind: "key", key });
}

function keepTokens(answer) {
  session.save({
    kind: "token",
    access_token: answer.access_token,
    refresh_token: answer.refresh_token,
    expires_at: Date.now() + answer.expires_in * 1000,
  });
  scheduleRefresh();
}

/** Refreshes the access token at 80% of its life (the refresh needs a valid one). */
export function scheduleRefresh() {
  clearTimeout(refreshTimer);
  const s = session.current;
  if (s?.kind !== "token") return;
  const wait = Math.max(1000, (s.expires_at - Date.now()) * 0.8);
  refreshTimer = setTimeout(async () => {
    try {
      const answer = await api("/api/v1/auth/refresh", {
        method: "POST",
        body: { refresh_token: session.current.refresh_token },
      });
      keepTokens(answer);
    } catch (error) {
      unauthorizedHandler(error);
    }
  }, wait);
}

/** The WebSocket URL of `path` with the session's credential. */
export function webSocketUrl(path, query = {}) {
  const url = new URL(path, location.origin);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const secret = session.secret();
  if (secret) url.searchParams.set("access_token", secret);
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  return url.toString();
}
