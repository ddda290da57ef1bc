//! The HTTP side of `allsource admin`: the connection flags every online command shares
//! ([`Conn`]), one small client over reqwest that sends the credential ([`Client`]), and the
//! one mapping of failures to messages and exit codes ([`CliError`]).
//!
//! A failure is printed as words on stderr: the problem document's title and detail (and the
//! fields of a validation failure, and the request id to quote in a bug report), never a debug
//! dump. Exit codes tell scripts what kind of failure it was; they are listed in
//! [`EXIT_CODES_HELP`] (shown by `--help`) and in docs/OPERATIONS.md.

use std::fmt;
use std::time::Duration;

use clap::Args;
use reqwest::{Method, Url};
use serde_json::Value;

use super::output::Output;

/// Success.
pub const EXIT_OK: u8 = 0;
/// Anything not covered below: a local file that cannot be read, an answer that is not what
/// the server should send, a stream that ended abnormally.
pub const EXIT_FAILURE: u8 = 1;
/// Usage error: unknown flags, missing arguments (clap's own code), invalid local input.
pub const EXIT_USAGE: u8 = 2;
/// The server could not be reached, or did not answer within `--timeout`.
pub const EXIT_UNREACHABLE: u8 = 3;
/// The credential was refused (401) or does not allow this (403).
pub const EXIT_REFUSED: u8 = 4;
/// The resource does not exist (404).
pub const EXIT_NOT_FOUND: u8 = 5;
/// Any other client error (400 invalid input, 409 conflict, 429 rate limit or quota, ...).
pub const EXIT_CLIENT_ERROR: u8 = 6;
/// The server failed (5xx: unavailable, recovering, internal error).
pub const EXIT_SERVER_ERROR: u8 = 7;

/// The exit codes, for `--help`.
pub const EXIT_CODES_HELP: &str = exit_codes!();

/// The default server address (the server's default `server.port`).
pub const DEFAULT_URL: &str = "http://127.0.0.1:3900";

/// How to reach the server; shared by every online command (flags may follow the
/// subcommand: `allsource admin tenants list --output json`).
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// Base URL of the server.
    #[arg(long, env = "ALLSOURCE_URL", default_value = DEFAULT_URL, value_name = "URL", global = true)]
    pub url: String,
    /// Credential: an access token (from POST /api/v1/auth/login) or an API key (ask_...).
    /// Sent as `Authorization: Bearer`. Not needed against a `serve --dev` server.
    #[arg(
        long,
        env = "ALLSOURCE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        global = true
    )]
    pub token: Option<String>,
    /// Output format: `table` for people, `json` (the server's JSON as it sent it) for scripts.
    #[arg(
        long,
        env = "ALLSOURCE_OUTPUT",
        value_enum,
        default_value_t = Output::Table,
        global = true
    )]
    pub output: Output,
    /// Seconds to wait for an answer (for `tail`: for the connection to open).
    #[arg(
        long,
        default_value_t = 30,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..=86_400),
        global = true
    )]
    pub timeout: u64,
}

/// A problem document (RFC 9457) as the server sends it; every member optional, since a proxy
/// in front of the server may answer with anything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Problem {
    pub title: Option<String>,
    pub detail: Option<String>,
    /// The stable code (`not_found`, `validation_failed`, ...).
    pub error: Option<String>,
    pub request_id: Option<String>,
    /// `field: message` of a validation failure.
    pub errors: Vec<(String, String)>,
}

impl Problem {
    /// Reads a problem document out of an error answer's body (any JSON object; anything else
    /// gives an empty problem, and the status alone speaks).
    pub fn from_body(body: &Value) -> Self {
        let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
        let errors = body
            .get("errors")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .map(|e| {
                        let field = e.get("field").and_then(Value::as_str).unwrap_or("");
                        let message = e.get("message").and_then(Value::as_str).unwrap_or("");
                        (field.to_owned(), message.to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            title: text("title"),
            detail: text("detail"),
            error: text("error"),
            request_id: text("request_id"),
            errors,
        }
    }
}

/// Why a command failed. `Display` is the message for stderr; [`CliError::exit_code`] the code.
#[derive(Debug)]
pub enum CliError {
    /// No connection, or no answer in time.
    Unreachable { url: String, cause: String },
    /// The server answered with an error status.
    Http {
        status: u16,
        problem: Problem,
        /// Whether a credential was sent (shapes the hint of a 401).
        sent_credential: bool,
    },
    /// Invalid local input (a flag's value, a file that is not JSON).
    Usage(String),
    /// The server refused what was sent outside an HTTP answer (a WebSocket `error` frame).
    Rejected(String),
    /// The server failed outside an HTTP answer (a stream closed on a storage failure).
    ServerFailed(String),
    /// Anything else.
    Other(String),
}

impl CliError {
    /// The process exit code for this failure (see [`EXIT_CODES_HELP`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Unreachable { .. } => EXIT_UNREACHABLE,
            Self::Http { status, .. } => match status {
                401 | 403 => EXIT_REFUSED,
                404 => EXIT_NOT_FOUND,
                400..=499 => EXIT_CLIENT_ERROR,
                500..=599 => EXIT_SERVER_ERROR,
                _ => EXIT_FAILURE,
            },
            Self::Usage(_) => EXIT_USAGE,
            Self::Rejected(_) => EXIT_CLIENT_ERROR,
            Self::ServerFailed(_) => EXIT_SERVER_ERROR,
            Self::Other(_) => EXIT_FAILURE,
        }
    }

    /// A reqwest failure before any answer arrived.
    pub fn from_transport(url: &Url, e: &reqwest::Error) -> Self {
        let cause = if e.is_timeout() {
            "no answer in time (see --timeout)".to_owned()
        } else if e.is_connect() {
            format!("cannot connect ({})", root_cause(e))
        } else {
            root_cause(e)
        };
        Self::Unreachable {
            url: origin(url),
            cause,
        }
    }
}

/// The innermost cause of an error, which is the one that says what happened
/// ("Connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// `scheme://host:port` of a URL (what a user typed as `--url`, without our path).
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable { url, cause } => write!(
                f,
                "the server at {url} cannot be reached: {cause}. Is it running? \
                 (set --url or ALLSOURCE_URL)"
            ),
            Self::Http {
                status,
                problem,
                sent_credential,
            } => {
                let title = problem
                    .title
                    .clone()
                    .unwrap_or_else(|| default_title(*status).to_owned());
                match status {
                    401 => write!(f, "the server refused the credential ({status} {title})")?,
                    403 => write!(f, "not allowed ({status} {title})")?,
                    _ => write!(f, "{title} ({status})")?,
                }
                if let Some(detail) = &problem.detail {
                    write!(f, ": {detail}")?;
                }
                for (field, message) in &problem.errors {
                    if field.is_empty() {
                        write!(f, "\n  - {message}")?;
                    } else {
                        write!(f, "\n  - {field}: {message}")?;
                    }
                }
                if *status == 401 {
                    if *sent_credential {
                        write!(
                            f,
                            "\n  The token may have expired or been revoked: log in again or \
                             use another API key (--token or ALLSOURCE_TOKEN)."
                        )?;
                    } else {
                        write!(
                            f,
                            "\n  Give a credential: --token or ALLSOURCE_TOKEN (an access token \
                             or an API key ask_...)."
                        )?;
                    }
                }
                if let Some(id) = &problem.request_id {
                    write!(f, "\n  request id: {id}")?;
                }
                Ok(())
            }
            Self::Usage(message)
            | Self::Rejected(message)
            | Self::ServerFailed(message)
            | Self::Other(message) => f.write_str(message),
        }
    }
}

/// A title for a status whose answer had no problem document.
fn default_title(status: u16) -> &'static str {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("HTTP error")
}

/// A successful answer: its status, its JSON (`Null` for an empty body) and its text as sent.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

/// Classifies a finished exchange: 2xx is an [`Answer`], anything else a [`CliError::Http`].
///
/// # Errors
/// An error status, or a 2xx whose body is not JSON.
pub fn classify(status: u16, text: String, sent_credential: bool) -> Result<Answer, CliError> {
    let parsed = if text.trim().is_empty() {
        Ok(Value::Null)
    } else {
        serde_json::from_str::<Value>(&text)
    };
    if (200..300).contains(&status) {
        let body = parsed.map_err(|_| {
            CliError::Other(format!(
                "the server answered {status} with a body that is not JSON (is --url the \
                 AllSource server?)"
            ))
        })?;
        return Ok(Answer { status, body, text });
    }
    let problem = parsed.as_ref().map(Problem::from_body).unwrap_or_default();
    Err(CliError::Http {
        status,
        problem,
        sent_credential,
    })
}

/// One server, one credential.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    pub output: Output,
    pub timeout: Duration,
}

impl Client {
    /// # Errors
    /// A `--url` that is not an http(s) URL, or a token that cannot be a header value.
    pub fn new(conn: &Conn) -> Result<Self, CliError> {
        let base = parse_base(&conn.url)?;
        let token = conn
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        if let Some(token) = &token
            && reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).is_err()
        {
            return Err(CliError::Usage(
                "--token / ALLSOURCE_TOKEN holds characters a header cannot carry".into(),
            ));
        }
        let timeout = Duration::from_secs(conn.timeout);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("allsource-admin/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Other(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            token,
            output: conn.output,
            timeout,
        })
    }

    /// The credential, if one was given.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// `<base>/api/v1/<segments...>`, each segment percent-encoded (ids may hold any text).
    pub fn url(&self, segments: &[&str]) -> Url {
        api_url(&self.base, segments)
    }

    /// `GET` with query parameters.
    pub async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Answer, CliError> {
        self.send(Method::GET, segments, query, None).await
    }

    /// `POST` with an optional JSON body.
    pub async fn post(&self, segments: &[&str], body: Option<&Value>) -> Result<Answer, CliError> {
        self.send(Method::POST, segments, &[], body).await
    }

    /// `PUT` with a JSON body.
    pub async fn put(&self, segments: &[&str], body: &Value) -> Result<Answer, CliError> {
        self.send(Method::PUT, segments, &[], Some(body)).await
    }

    /// `DELETE`.
    pub async fn delete(&self, segments: &[&str]) -> Result<Answer, CliError> {
        self.send(Method::DELETE, segments, &[], None).await
    }

    /// One request; the answer read whole.
    ///
    /// # Errors
    /// See [`CliError`].
    pub async fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Answer, CliError> {
        let mut url = self.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let mut request = self.http.request(method, url.clone());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|e| CliError::from_transport(&url, &e))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| CliError::from_transport(&url, &e))?;
        classify(status, text, self.token.is_some())
    }
}

/// Parses `--url`: http or https, with an optional path prefix (a server behind a proxy).
///
/// # Errors
/// Anything else, as a usage error naming the flag.
pub fn parse_base(raw: &str) -> Result<Url, CliError> {
    let url = Url::parse(raw.trim()).map_err(|e| {
        CliError::Usage(format!(
            "--url {raw}: not a URL ({e}); expected e.g. {DEFAULT_URL}"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(CliError::Usage(format!(
            "--url {raw}: must be an http:// or https:// URL, e.g. {DEFAULT_URL}"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(CliError::Usage(format!(
            "--url {raw}: give the server's base URL, without a query or fragment"
        )));
    }
    Ok(url)
}

/// `<base>/api/v1/<segments...>`.
pub fn api_url(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(["api", "v1"]).extend(segments);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_encode_each_segment_and_keep_a_path_prefix() {
        let base = parse_base("http://127.0.0.1:3900").unwrap();
        assert_eq!(
            api_url(&base, &["tenants", "acme", "stats"]).as_str(),
            "http://127.0.0.1:3900/api/v1/tenants/acme/stats"
        );
        assert_eq!(
            api_url(&base, &["schemas", "order placed/v1?x"]).as_str(),
            "http://127.0.0.1:3900/api/v1/schemas/order%20placed%2Fv1%3Fx"
        );
        let prefixed = parse_base("https://ops.example.com/allsource/").unwrap();
        assert_eq!(
            api_url(&prefixed, &["stats"]).as_str(),
            "https://ops.example.com/allsource/api/v1/stats"
        );
    }

    #[test]
    fn bad_urls_are_usage_errors_naming_the_flag() {
        for raw in ["localhost:3900", "ftp://x", "not a url", "http://h/?a=b"] {
            let e = parse_base(raw).unwrap_err();
            assert_eq!(e.exit_code(), EXIT_USAGE, "{raw}");
            assert!(e.to_string().starts_with("--url "), "{e}");
        }
    }

    #[test]
    fn statuses_map_to_exit_codes() {
        let code = |status| {
            classify(status, String::new(), false)
                .map(|_| EXIT_OK)
                .unwrap_or_else(|e| e.exit_code())
        };
        assert_eq!(code(200), EXIT_OK);
        assert_eq!(code(201), EXIT_OK);
        assert_eq!(code(202), EXIT_OK);
        assert_eq!(code(204), EXIT_OK);
        assert_eq!(code(401), EXIT_REFUSED);
        assert_eq!(code(403), EXIT_REFUSED);
        assert_eq!(code(404), EXIT_NOT_FOUND);
        assert_eq!(code(400), EXIT_CLIENT_ERROR);
        assert_eq!(code(409), EXIT_CLIENT_ERROR);
        assert_eq!(code(429), EXIT_CLIENT_ERROR);
        assert_eq!(code(500), EXIT_SERVER_ERROR);
        assert_eq!(code(503), EXIT_SERVER_ERROR);
        let unreachable = CliError::Unreachable {
            url: "http://x".into(),
            cause: "refused".into(),
        };
        assert_eq!(unreachable.exit_code(), EXIT_UNREACHABLE);
        // Codes are distinct.
        let mut all = vec![
            EXIT_OK,
            EXIT_FAILURE,
            EXIT_USAGE,
            EXIT_UNREACHABLE,
            EXIT_REFUSED,
            EXIT_NOT_FOUND,
            EXIT_CLIENT_ERROR,
            EXIT_SERVER_ERROR,
        ];
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 8);
    }

    #[test]
    fn a_problem_document_is_printed_in_words() {
        let body = json!({
            "type": "https://allsource.dev/problems/validation-failed",
            "title": "Validation failed", "status": 400, "detail": "2 fields are invalid",
            "error": "validation_failed", "request_id": "req-1",
            "errors": [{"field": "id", "message": "must not be empty"},
                       {"field": "tier", "message": "unknown tier"}]
        });
        let e = classify(400, body.to_string(), true).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_CLIENT_ERROR);
        assert_eq!(
            e.to_string(),
            "Validation failed (400): 2 fields are invalid\n  - id: must not be empty\n  - \
             tier: unknown tier\n  request id: req-1"
        );
        assert!(!format!("{e}").contains("Problem {"), "no debug dump");
    }

    #[test]
    fn a_refused_credential_says_what_to_do() {
        let body = json!({"title": "Unauthorized", "status": 401, "detail": "bad token"});
        let sent = classify(401, body.to_string(), true)
            .unwrap_err()
            .to_string();
        assert!(
            sent.starts_with("the server refused the credential (401 Unauthorized): bad token"),
            "{sent}"
        );
        assert!(sent.contains("expired or been revoked"), "{sent}");
        let missing = classify(401, body.to_string(), false)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("Give a credential"), "{missing}");
        let forbidden = classify(403, json!({"title": "Forbidden"}).to_string(), true)
            .unwrap_err()
            .to_string();
        assert_eq!(forbidden, "not allowed (403 Forbidden)");
    }

    #[test]
    fn an_answer_without_a_problem_document_still_reads() {
        let e = classify(502, "<html>bad gateway</html>".into(), false).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_SERVER_ERROR);
        assert_eq!(e.to_string(), "Bad Gateway (502)");
        let e = classify(200, "<html>".into(), false).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_FAILURE);
        assert!(e.to_string().contains("not JSON"), "{e}");
    }

    #[test]
    fn empty_and_json_answers_are_kept_as_sent() {
        let a = classify(204, String::new(), false).unwrap();
        assert_eq!(a.body, Value::Null);
        let a = classify(200, "{\"b\":1,\"a\":2}".into(), false).unwrap();
        assert_eq!(a.text, "{\"b\":1,\"a\":2}");
        assert_eq!(a.body["a"], 2);
    }

    #[test]
    fn unreachable_names_the_server_and_the_flag() {
        let e = CliError::Unreachable {
            url: "http://127.0.0.1:1".into(),
            cause: "cannot connect (Connection refused (os error 111))".into(),
        };
        let text = e.to_string();
        assert!(text.contains("http://127.0.0.1:1"), "{text}");
        assert!(text.contains("ALLSOURCE_URL"), "{text}");
    }
}
