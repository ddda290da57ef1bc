//! `allsource mcp`: the MCP server over stdio, for desktop agents. It talks to a running
//! AllSource server over HTTP with the key it is given; the tools are the server's
//! ([`allsource_presentation::mcp`]), so what an agent may see and do is what that key may
//! over REST. Standard output carries the protocol only; logs go to standard error.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use allsource_presentation::mcp::McpServer;
use allsource_presentation::mcp::rest::{Rest, RestAnswer, RestRequest, TOOL_HEADER};
use clap::Args;
use futures::future::BoxFuture;
use rmcp::ServiceExt;
use serde_json::Value;

use crate::admin::client::{DEFAULT_URL, parse_base};

/// `allsource mcp` flags.
#[derive(Debug, Clone, Args)]
#[command(after_long_help = MCP_HELP)]
pub struct McpArgs {
    /// Base URL of the AllSource server.
    #[arg(long, env = "ALLSOURCE_URL", default_value = DEFAULT_URL, value_name = "URL")]
    pub url: String,
    /// An API key (ask_...), sent as X-API-Key. Not needed against a `serve --dev` server.
    #[arg(
        long,
        env = "ALLSOURCE_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
    /// Or an access token (from POST /api/v1/auth/login), sent as `Authorization: Bearer`.
    #[arg(
        long,
        env = "ALLSOURCE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        conflicts_with = "api_key"
    )]
    pub token: Option<String>,
    /// Hide and refuse every tool that writes (a readonly key does this by itself).
    #[arg(long)]
    pub read_only: bool,
    /// Seconds to wait for each answer of the server.
    #[arg(long, default_value_t = 60, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub timeout: u64,
}

const MCP_HELP: &str = "\
A desktop agent starts this command and speaks MCP over its standard input and output. For
example, in the agent's MCP configuration (JSON):

  {\"mcpServers\": {\"allsource\": {\"command\": \"allsource\",
     \"args\": [\"mcp\", \"--url\", \"http://127.0.0.1:3900\"],
     \"env\": {\"ALLSOURCE_API_KEY\": \"ask_...\"}}}}

The server itself also serves MCP at POST /mcp (streamable HTTP) with the caller's credential.
See docs/MCP.md.";

/// The REST API over HTTP.
struct HttpRest {
    http: reqwest::Client,
    base: String,
    credential: Option<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
}

impl Rest for HttpRest {
    fn send(&self, request: RestRequest) -> BoxFuture<'_, Result<RestAnswer, String>> {
        Box::pin(async move {
            let url = format!("{}{}", self.base, request.target);
            let mut builder = self
                .http
                .request(request.method, &url)
                .header(TOOL_HEADER, request.tool);
            if let Some((name, value)) = &self.credential {
                builder = builder.header(name.clone(), value.clone());
            }
            if let Some(body) = request.body {
                builder = builder
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string());
            }
            let response = builder.send().await.map_err(|e| describe(&url, &e))?;
            let status = response.status();
            let bytes = response.bytes().await.map_err(|e| describe(&url, &e))?;
            Ok(RestAnswer {
                status,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            })
        })
    }
}

fn describe(url: &str, error: &reqwest::Error) -> String {
    if error.is_connect() {
        format!("nothing answers at {url} (is the server running? set --url or ALLSOURCE_URL)")
    } else if error.is_timeout() {
        format!("{url} did not answer in time (--timeout)")
    } else {
        format!("{url}: {error}")
    }
}

/// Runs the stdio server until the agent closes standard input.
pub fn run(args: McpArgs) -> ExitCode {
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: McpArgs) -> anyhow::Result<()> {
    let base = parse_base(&args.url).map_err(|e| anyhow::anyhow!("{e}"))?;
    let credential = match (&args.api_key, &args.token) {
        (Some(key), _) => Some((
            reqwest::header::HeaderName::from_static("x-api-key"),
            reqwest::header::HeaderValue::from_str(key.trim())
                .map_err(|_| anyhow::anyhow!("--api-key holds characters a header cannot carry"))?,
        )),
        (None, Some(token)) => Some((
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                .map_err(|_| anyhow::anyhow!("--token holds characters a header cannot carry"))?,
        )),
        (None, None) => None,
    };
    let timeout = Duration::from_secs(args.timeout);
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("allsource-mcp/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let rest = HttpRest {
        http,
        base: base.as_str().trim_end_matches('/').to_owned(),
        credential,
    };
    let server = McpServer::over(Arc::new(rest)).read_only(args.read_only);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let running = server
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| anyhow::anyhow!("the MCP handshake failed: {e}"))?;
        running.waiting().await?;
        anyhow::Ok(())
    })
}
