//! The `WebhookSender` port: checking a webhook's destination and POSTing one delivery to it;
//! and [`EventEncoder`], the shape of an event in a delivery's body (the same as the REST
//! API's, which the HTTP layer owns and the composition root passes in).
//!
//! # Contract of `send`
//! - One `POST` to the request's URL and nowhere else: redirects are **not** followed (a `3xx`
//!   is an answer like any other, and not a success), no proxy is used.
//! - Headers: `Content-Type: application/json`, `X-AllSource-Event-Type`,
//!   `X-AllSource-Delivery-Id`, `X-AllSource-Webhook-Id`, and — only when the request has a
//!   secret — `X-AllSource-Signature: sha256=<lowercase hex HMAC-SHA256 of the exact body
//!   bytes, keyed with the secret's UTF-8 bytes>`. The body is sent byte for byte as given.
//! - Unless the adapter is configured to allow private destinations, every address the URL's
//!   host is (or resolves to, at connection time) is checked with
//!   [`Refusal::check`](crate::webhooks::Refusal::check), and the connection goes only to an
//!   address that was checked: one refused address refuses the request
//!   ([`SendError::Refused`]), and no byte is sent.
//! - The whole exchange is bounded by the adapter's timeout ([`SendError::Timeout`]).
//! - Any answer is `Ok(status)`; the caller decides what counts as delivered (`2xx`).

use std::fmt;

use async_trait::async_trait;
use serde_json::value::RawValue;

use allsource_domain::Event;

use crate::webhooks::{Refusal, WebhookUrl};

/// A webhook's signing secret: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for signing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRequest {
    pub url: WebhookUrl,
    pub webhook_id: String,
    pub delivery_id: String,
    pub event_type: String,
    /// The exact bytes to send (and to sign).
    pub body: Vec<u8>,
    pub secret: Option<Secret>,
}

/// Why a delivery attempt got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The destination is (or now resolves to) a refused address; nothing was sent.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// No complete answer within the timeout.
    #[error("no answer within {0} ms")]
    Timeout(u64),
    /// The name did not resolve, the connection or TLS failed, or the exchange broke off.
    #[error("{0}")]
    Failed(String),
}

/// Why a destination cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// An address of the destination falls under a rule.
    #[error("{0}")]
    Refused(Refusal),
    /// The host name does not resolve, so it cannot be checked.
    #[error("{0}")]
    Unresolvable(String),
}

/// Outbound HTTP for webhooks.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait WebhookSender: Send + Sync {
    /// Checks a destination as [`send`](Self::send) would: an IP literal directly, a name by
    /// resolving it now and checking every address. With private destinations allowed,
    /// always `Ok` (nothing is resolved).
    ///
    /// # Errors
    /// [`DestinationError::Refused`] naming the first refused address and its rule;
    /// [`DestinationError::Unresolvable`] when the name does not resolve (within the timeout).
    async fn check_destination(&self, url: &WebhookUrl) -> Result<(), DestinationError>;

    /// Sends one attempt (see the module docs) and answers the response's status code.
    ///
    /// # Errors
    /// [`SendError::Refused`], [`SendError::Timeout`], [`SendError::Failed`].
    async fn send(&self, request: WebhookRequest) -> Result<u16, SendError>;
}

/// An event as the REST API shows it (`GET /api/v1/events/{id}`): the `event` member of a
/// delivery's body.
pub trait EventEncoder: Send + Sync {
    /// # Errors
    /// Only if the event cannot be written as JSON (a bug).
    fn encode(&self, event: &Event) -> Result<Box<RawValue>, serde_json::Error>;
}
