//! `HttpWebhookSender`: the `WebhookSender` port on reqwest (HTTP/1.1; TLS by rustls with the
//! aws-lc-rs provider and the platform's trust store), signing bodies with HMAC-SHA256.
//!
//! How it keeps the port's contract:
//! - **Only the registered URL.** Redirects are not followed (`redirect::Policy::none()`: a
//!   `3xx` is returned as an answer), no proxy is used (not even one from the environment),
//!   and reqwest's own retries are off (the use case counts attempts).
//! - **Only checked addresses.** Host names are resolved by [`CheckedResolver`], which checks
//!   every address the name resolves to *at connection time* and hands the connector only
//!   those; one refused address refuses the name, so a name re-pointed at a private address
//!   after registration (DNS rebinding) is refused too. IP literals never reach a resolver,
//!   so `send` checks them itself before connecting.
//! - **Bounded.** One timeout bounds resolution, connection and the whole exchange.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use allsource_application::ports::{DestinationError, SendError, WebhookRequest, WebhookSender};
use allsource_application::webhooks::{Refusal, UrlHost, WebhookUrl};
use async_trait::async_trait;
use hmac::{Hmac, Mac};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use sha2::Sha256;

/// How the sender behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookSenderConfig {
    /// Bounds name resolution, connection and the whole exchange of one attempt.
    pub timeout: Duration,
    /// `webhooks.allow_private_destinations`: skip the address rules (tests, private
    /// deployments whose receivers live on the internal network).
    pub allow_private_destinations: bool,
}

impl Default for WebhookSenderConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            allow_private_destinations: false,
        }
    }
}

/// The signature header's value: `sha256=` and the lowercase hex HMAC-SHA256 of `body` keyed
/// with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for byte in tag {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Resolves a name within the timeout.
async fn lookup(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
    match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Err(_) => Err(format!(
            "resolving took longer than {} ms",
            timeout.as_millis()
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err("no address".to_owned())
            } else {
                Ok(addrs)
            }
        }
    }
}

/// The resolver of the HTTP client: resolves, then refuses the name if any of its addresses
/// falls under a rule (unless private destinations are allowed).
struct CheckedResolver {
    config: WebhookSenderConfig,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let config = self.config;
        Box::pin(async move {
            // Port 0: the client puts in the URL's port.
            let addrs = lookup(&host, 0, config.timeout).await?;
            if !config.allow_private_destinations {
                for addr in &addrs {
                    Refusal::check(&host, addr.ip())?;
                }
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The `WebhookSender` adapter (see the module docs).
pub struct HttpWebhookSender {
    client: reqwest::Client,
    config: WebhookSenderConfig,
}

impl HttpWebhookSender {
    /// # Errors
    /// When the HTTP client cannot be built (its TLS setup failed).
    pub fn new(config: WebhookSenderConfig) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .retry(reqwest::retry::never())
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .dns_resolver(Arc::new(CheckedResolver { config }))
            .user_agent(concat!("AllSource-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the webhook HTTP client: {e}"))?;
        Ok(Self { client, config })
    }

    fn check_literal(&self, url: &WebhookUrl) -> Result<(), Refusal> {
        match url.host() {
            UrlHost::Ip(ip) if !self.config.allow_private_destinations => {
                Refusal::check(url.host_str(), ip)
            }
            _ => Ok(()),
        }
    }
}

/// The refusal somewhere in an error's causes, if it is one.
fn refusal_in(error: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(refusal) = e.downcast_ref::<Refusal>() {
            return Some(refusal.clone());
        }
        cause = e.source();
    }
    None
}

/// An error with its causes, for the delivery log (the URL is left out).
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = e.source();
    }
    text
}

#[async_trait]
impl WebhookSender for HttpWebhookSender {
    async fn check_destination(&self, url: &WebhookUrl) -> Result<(), DestinationError> {
        if self.config.allow_private_destinations {
            return Ok(());
        }
        match url.host() {
            UrlHost::Ip(ip) => {
                Refusal::check(url.host_str(), ip).map_err(DestinationError::Refused)
            }
            UrlHost::Domain(name) => {
                let addrs = lookup(&name, url.port(), self.config.timeout)
                    .await
                    .map_err(DestinationError::Unresolvable)?;
                for addr in addrs {
                    Refusal::check(&name, addr.ip()).map_err(DestinationError::Refused)?;
                }
                Ok(())
            }
        }
    }

    async fn send(&self, request: WebhookRequest) -> Result<u16, SendError> {
        self.check_literal(&request.url)
            .map_err(SendError::Refused)?;
        let mut builder = self
            .client
            .post(request.url.as_str())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-AllSource-Event-Type", &request.event_type)
            .header("X-AllSource-Delivery-Id", &request.delivery_id)
            .header("X-AllSource-Webhook-Id", &request.webhook_id);
        if let Some(secret) = &request.secret {
            builder = builder.header(
                "X-AllSource-Signature",
                signature(secret.expose(), &request.body),
            );
        }
        match builder.body(request.body).send().await {
            Ok(response) => Ok(response.status().as_u16()),
            Err(e) => {
                let e = e.without_url();
                if let Some(refusal) = refusal_in(&e) {
                    Err(SendError::Refused(refusal))
                } else if e.is_timeout() {
                    Err(SendError::Timeout(
                        u64::try_from(self.config.timeout.as_millis()).unwrap_or(u64::MAX),
                    ))
                } else {
                    Err(SendError::Failed(describe(&e)))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use allsource_application::ports::Secret;
    use allsource_application::webhooks::AddressRule;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// One request as a tiny test server received it.
    #[derive(Debug, Clone)]
    struct Seen {
        head: String,
        body: Vec<u8>,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<String> {
            self.head.lines().find_map(|line| {
                let (n, v) = line.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        }
    }

    /// A raw HTTP/1.1 server on 127.0.0.1 answering `status` (with `extra` header lines) to
    /// every request, or never answering with `None`.
    async fn server(
        status: Option<&'static str>,
        extra: &'static str,
    ) -> (String, Arc<parking_lot::Mutex<Vec<Seen>>>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (log, count) = (seen.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let log = log.clone();
                tokio::spawn(async move {
                    let mut data = Vec::new();
                    let mut buf = [0u8; 4096];
                    let (head, body_start) = loop {
                        let Ok(n) = socket.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        data.extend_from_slice(&buf[..n]);
                        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                            break (String::from_utf8_lossy(&data[..end]).into_owned(), end + 4);
                        }
                    };
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (n, v) = l.split_once(':')?;
                            n.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while data.len() < body_start + length {
                        let Ok(n) = socket.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            break;
                        }
                        data.extend_from_slice(&buf[..n]);
                    }
                    log.lock().push(Seen {
                        head,
                        body: data[body_start..].to_vec(),
                    });
                    match status {
                        Some(status) => {
                            let answer = format!(
                                "HTTP/1.1 {status}\r\ncontent-length: 0\r\n{extra}connection: close\r\n\r\n"
                            );
                            let _ = socket.write_all(answer.as_bytes()).await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(30)).await,
                    }
                });
            }
        });
        (format!("http://127.0.0.1:{port}"), seen, connections)
    }

    fn sender(allow_private_destinations: bool) -> HttpWebhookSender {
        HttpWebhookSender::new(WebhookSenderConfig {
            timeout: Duration::from_millis(500),
            allow_private_destinations,
        })
        .unwrap()
    }

    fn request(url: &str, secret: Option<&str>) -> WebhookRequest {
        WebhookRequest {
            url: WebhookUrl::parse(url).unwrap(),
            webhook_id: "w-1".into(),
            delivery_id: "d-1".into(),
            event_type: "order.placed".into(),
            body: br#"{"webhook_id":"w-1","event":{"n":1}}"#.to_vec(),
            secret: secret.map(Secret::new),
        }
    }

    #[test]
    fn the_signature_is_the_rfc_4231_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[tokio::test]
    async fn a_delivery_carries_its_headers_its_exact_body_and_a_signature_when_there_is_a_secret()
    {
        let (base, seen, _) = server(Some("204 No Content"), "").await;
        let sender = sender(true);
        let signed = request(&format!("{base}/in"), Some("a-very-long-secret"));
        let body = signed.body.clone();
        assert_eq!(sender.send(signed).await, Ok(204));
        assert_eq!(
            sender.send(request(&format!("{base}/in"), None)).await,
            Ok(204)
        );
        let seen = seen.lock().clone();
        assert_eq!(seen.len(), 2);
        let first = &seen[0];
        assert!(
            first.head.starts_with("POST /in HTTP/1.1"),
            "{}",
            first.head
        );
        assert_eq!(first.body, body);
        assert_eq!(
            first.header("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(
            first.header("x-allsource-event-type").as_deref(),
            Some("order.placed")
        );
        assert_eq!(
            first.header("x-allsource-delivery-id").as_deref(),
            Some("d-1")
        );
        assert_eq!(
            first.header("x-allsource-webhook-id").as_deref(),
            Some("w-1")
        );
        assert_eq!(
            first.header("x-allsource-signature"),
            Some(signature("a-very-long-secret", &body))
        );
        assert_eq!(seen[1].header("x-allsource-signature"), None);
    }

    #[tokio::test]
    async fn redirects_are_answers_and_are_not_followed() {
        let (target, target_seen, _) = server(Some("200 OK"), "").await;
        let location: &'static str =
            Box::leak(format!("location: {target}/elsewhere\r\n").into_boxed_str());
        let (base, seen, _) = server(Some("307 Temporary Redirect"), location).await;
        assert_eq!(sender(true).send(request(&base, None)).await, Ok(307));
        assert_eq!(seen.lock().len(), 1);
        assert!(
            target_seen.lock().is_empty(),
            "the redirect was not followed"
        );
    }

    #[tokio::test]
    async fn private_destinations_are_refused_before_connecting_literal_or_resolved() {
        let (base, _, connections) = server(Some("200 OK"), "").await;
        let strict = sender(false);
        let literal = strict.send(request(&base, None)).await;
        assert!(
            matches!(&literal, Err(SendError::Refused(r)) if r.rule == AddressRule::Loopback),
            "{literal:?}"
        );
        // A name resolved at connection time (what DNS rebinding would change).
        let port = base.rsplit(':').next().unwrap();
        let named = strict
            .send(request(&format!("http://localhost:{port}/"), None))
            .await;
        assert!(
            matches!(&named, Err(SendError::Refused(r)) if r.rule == AddressRule::Loopback && r.host == "localhost"),
            "{named:?}"
        );
        assert_eq!(connections.load(Ordering::SeqCst), 0, "nothing was sent");
        let url = WebhookUrl::parse(&format!("http://localhost:{port}/")).unwrap();
        assert!(matches!(
            strict.check_destination(&url).await,
            Err(DestinationError::Refused(r)) if r.rule == AddressRule::Loopback
        ));
        let metadata = WebhookUrl::parse("http://169.254.169.254/latest/meta-data").unwrap();
        assert!(matches!(
            strict.check_destination(&metadata).await,
            Err(DestinationError::Refused(r)) if r.rule == AddressRule::LinkLocal
        ));
        let mapped = WebhookUrl::parse("http://[::ffff:10.0.0.1]/").unwrap();
        assert!(matches!(
            strict.check_destination(&mapped).await,
            Err(DestinationError::Refused(r)) if r.rule == AddressRule::Private
        ));
        // Allowed: the same destinations are reached.
        let lenient = sender(true);
        assert_eq!(lenient.check_destination(&url).await, Ok(()));
        assert_eq!(lenient.send(request(&base, None)).await, Ok(200));
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_cannot_be_registered() {
        let url = WebhookUrl::parse("http://does-not-exist.invalid/").unwrap();
        assert!(matches!(
            sender(false).check_destination(&url).await,
            Err(DestinationError::Unresolvable(_))
        ));
    }

    #[tokio::test]
    async fn a_silent_receiver_is_a_timeout_and_a_closed_port_a_failure() {
        let (base, _, _) = server(None, "").await;
        assert_eq!(
            sender(true).send(request(&base, None)).await,
            Err(SendError::Timeout(500))
        );
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let refused = sender(true)
            .send(request(&format!("http://127.0.0.1:{port}/"), None))
            .await;
        assert!(matches!(refused, Err(SendError::Failed(_))), "{refused:?}");
    }
}
