//! Following the log over long-lived connections: `GET /api/v1/events/stream` (WebSocket) and
//! `GET /api/v1/events/sse` (Server-Sent Events). Both run one
//! [`Subscription`](allsource_application::subscriptions::Subscription) each, so both have the
//! same guarantees: position order, no gap and no duplicate between replay and live, never a
//! silently lost event for a slow client (it reads from storage until it has caught up).
//!
//! Credentials come in the handshake's `Authorization`/`X-API-Key` header, or as the
//! `access_token` query parameter for browsers (the request span records the path only, so
//! the token is never logged). Every connection holds one of the tenant's
//! `max_subscriptions` while it is open; errors before the stream starts (a bad filter, an
//! unknown consumer without `write`, the quota) are ordinary problem responses.
//!
//! # WebSocket frames (text frames, one JSON object each)
//! - client → server: `{"type": "subscribe", "filters": [...], "from_position"?: N,
//!   "entity_id"?: "..."}`. The first one (without `consumer_id`) starts the subscription:
//!   after `from_position` with replay, or live only when absent. Later ones change the
//!   filters of what follows (their `from_position` is ignored: positions a client sees only
//!   ever increase). With `consumer_id` the replay starts at once from the consumer's cursor
//!   with its registered filters; a `subscribe` changes the filters from then on.
//! - server → client: `{"type": "replay", "position": P, "event": Event}` while replaying,
//!   then `{"type": "replay_complete", "replayed": N}`, then each live event as a bare Event.
//!   A live-only subscription gets neither replay frames nor `replay_complete`. A message the
//!   server cannot read gets `{"type": "error", "message": "..."}` and changes nothing.
//! - pings every 20 s; close codes: 1000 when the client closes, 1001 at server shutdown,
//!   1008 for a client that does not read what it is sent within the send timeout
//!   ([`HttpLimits::stream_send_timeout`], `realtime.send_timeout_ms`; the reason
//!   names the last position it was sent), 1011 when storage fails (reason: the last position
//!   sent, to reconnect after).

use std::sync::Arc;
use std::time::Duration;

use allsource_application::subscriptions::{Delivery, SubscriptionError};
use allsource_application::use_cases::{
    ConsumerError, FieldError, FollowInput, Followed, parse_filter,
};
use allsource_domain::Permission::Read;
use allsource_domain::{EntityId, Event, EventFilter, TypeFilter, TypeFilters};
use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::SinkExt;
use serde::Deserialize;
use serde_json::json;

use crate::access::Access::Requires;
use crate::auth::CallerExtractor;
use crate::dto::EventResponse;
use crate::error::ApiError;
use crate::extract::Params;
use crate::routes::{Route, Routes};
use crate::{AppState, HttpLimits};

/// How often the WebSocket sends a ping.
const PING_EVERY: Duration = Duration::from_secs(20);
/// How long the close frame may take to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often SSE sends a comment heartbeat.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);

/// The streaming routes. Neither counts as a query of the tenant's quota: each holds a
/// subscription instead.
pub fn routes() -> Routes {
    Routes::new()
        .add(
            Route::get("/api/v1/events/stream", Requires(Read))
                .params::<StreamParams>()
                .responds(&[101])
                .token_in_query()
                .not_counted_as_query()
                .long_lived(),
            websocket,
        )
        .add(
            Route::get("/api/v1/events/sse", Requires(Read))
                .params::<SseParams>()
                .media_type("text/event-stream")
                .token_in_query()
                .not_counted_as_query()
                .long_lived(),
            sse,
        )
}

/// Events rendered as JSON once and shared by every follower that sends them live (100
/// subscribers of one event cost one serialization, not 100). Keyed by position, which is
/// unique in a store; one cache per router. Bounded: the oldest entries of a shard go first.
pub struct RenderedEvents {
    shards: Vec<std::sync::Mutex<Shard>>,
}

#[derive(Default)]
struct Shard {
    by_position: std::collections::HashMap<u64, Arc<str>>,
    order: std::collections::VecDeque<u64>,
}

impl RenderedEvents {
    const SHARDS: usize = 16;
    const PER_SHARD: usize = 4096;

    pub fn new() -> Self {
        Self {
            shards: (0..Self::SHARDS).map(|_| Default::default()).collect(),
        }
    }

    /// The event's JSON, rendered once for every follower (live frames).
    pub fn shared(&self, event: &Event) -> Arc<str> {
        let position = event.position.get();
        let shard = &self.shards[(position as usize) % Self::SHARDS];
        if let Some(hit) = shard
            .lock()
            .ok()
            .and_then(|s| s.by_position.get(&position).cloned())
        {
            return hit;
        }
        let text: Arc<str> = Arc::from(self.render(event));
        if let Ok(mut s) = shard.lock()
            && !s.by_position.contains_key(&position)
        {
            if s.order.len() >= Self::PER_SHARD
                && let Some(oldest) = s.order.pop_front()
            {
                s.by_position.remove(&oldest);
            }
            s.order.push_back(position);
            s.by_position.insert(position, Arc::clone(&text));
        }
        text
    }

    /// The event's JSON, not kept (replay frames: one reader, read once).
    pub fn render(&self, event: &Event) -> String {
        serde_json::to_string(&EventResponse::from(event)).unwrap_or_else(|error| {
            // Stored events always encode; this would be a bug, not bad input.
            tracing::error!(%error, "cannot encode an event");
            "null".to_owned()
        })
    }
}

impl Default for RenderedEvents {
    fn default() -> Self {
        Self::new()
    }
}

/// Query parameters of `GET /api/v1/events/stream`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    pub consumer_id: Option<String>,
    /// Read by authentication; declared so that it is not refused as unknown.
    pub access_token: Option<String>,
}

/// A `subscribe` message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeMessage {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    filters: Vec<String>,
    #[serde(default)]
    from_position: Option<u64>,
    #[serde(default)]
    entity_id: Option<String>,
}

/// `GET /api/v1/events/stream[?consumer_id=ID]`: the WebSocket (see the module docs).
pub async fn websocket(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    Params(params): Params<StreamParams>,
    Extension(limits): Extension<HttpLimits>,
    Extension(rendered): Extension<Arc<RenderedEvents>>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::invalid(
            "upgrade",
            format!(
                "this route is a WebSocket: open it with a WebSocket handshake ({})",
                rejection.body_text()
            ),
        )
    })?;
    // The subscription is opened before the upgrade, so that what can go wrong answers HTTP.
    let (followed, mode) = match params.consumer_id.as_deref() {
        Some(id) => {
            let (_, followed) = app.consumers.follow_consumer(&caller, id).await?;
            (followed, Mode::Replaying { replayed: 0 })
        }
        None => {
            let followed = app
                .consumers
                .follow(&caller, FollowInput::default())
                .await?;
            (followed, Mode::WaitingForSubscribe)
        }
    };
    let sender = Sender {
        timeout: limits.stream_send_timeout,
    };
    Ok(upgrade.on_upgrade(move |socket| run_socket(socket, followed, mode, sender, rendered)))
}

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Without a consumer, nothing is sent before the first `subscribe`.
    WaitingForSubscribe,
    /// Sending `replay` frames; `replay_complete` follows.
    Replaying { replayed: u64 },
    /// Sending bare events.
    Live,
}

/// Sends frames within the send timeout.
#[derive(Debug, Clone, Copy)]
struct Sender {
    timeout: Duration,
}

impl Sender {
    /// Sends one frame, or fails when the client takes longer than the timeout (or is gone).
    async fn send(self, socket: &mut WebSocket, message: Message) -> Result<(), ()> {
        match tokio::time::timeout(self.timeout, socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    /// Queues one frame without flushing (it waits only when the send buffer is full).
    async fn feed(self, socket: &mut WebSocket, message: Message) -> Result<(), ()> {
        match tokio::time::timeout(self.timeout, SinkExt::feed(socket, message)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    /// Writes what was queued.
    async fn flush(self, socket: &mut WebSocket) -> Result<(), ()> {
        match tokio::time::timeout(self.timeout, SinkExt::flush(socket)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }
}

/// Writes the delivery, and every further one ready without waiting (up to a batch), then
/// flushes once: one write to the socket per page or commit group, not per event.
/// `Err` carries the close to send (or `None`: just end).
#[allow(clippy::too_many_arguments)]
async fn write_batch(
    socket: &mut WebSocket,
    followed: &mut Followed,
    mode: &mut Mode,
    first: Result<Delivery, SubscriptionError>,
    rendered: &RenderedEvents,
    sender: Sender,
    last_sent: &mut Option<u64>,
) -> Result<(), Option<(u16, String)>> {
    const BATCH: usize = 256;
    let mut delivery = Some(first);
    let mut fed = 0usize;
    while let Some(next) = delivery.take() {
        let (text, position) = match next {
            Ok(Delivery::Event { event, .. }) => match mode {
                Mode::Replaying { replayed } => {
                    *replayed += 1;
                    let body = rendered.render(&event);
                    (
                        format!(
                            "{{\"type\":\"replay\",\"position\":{},\"event\":{body}}}",
                            event.position.get()
                        ),
                        Some(event.position.get()),
                    )
                }
                _ => (
                    rendered.shared(&event).to_string(),
                    Some(event.position.get()),
                ),
            },
            Ok(Delivery::CaughtUp) => match *mode {
                Mode::Replaying { replayed } => {
                    *mode = Mode::Live;
                    (
                        json!({"type": "replay_complete", "replayed": replayed}).to_string(),
                        None,
                    )
                }
                _ => {
                    delivery = followed.subscription.next_ready().map(Ok);
                    continue;
                }
            },
            Err(SubscriptionError::Closed) => {
                return Err(Some((1001, "the server is shutting down".to_owned())));
            }
            Err(SubscriptionError::Storage(error)) => {
                tracing::warn!(tenant = %followed.subscription.tenant(), %error, "a websocket subscription lost its storage");
                return Err(Some((
                    1011,
                    resume_reason("storage unavailable", *last_sent),
                )));
            }
        };
        if sender
            .feed(socket, Message::Text(text.into()))
            .await
            .is_err()
        {
            return Err(too_slow(*last_sent));
        }
        if position.is_some() {
            *last_sent = position;
        }
        fed += 1;
        if fed < BATCH {
            delivery = followed.subscription.next_ready().map(Ok);
        }
    }
    if sender.flush(socket).await.is_err() {
        return Err(too_slow(*last_sent));
    }
    Ok(())
}

async fn run_socket(
    mut socket: WebSocket,
    mut followed: Followed,
    mut mode: Mode,
    sender: Sender,
    rendered: Arc<RenderedEvents>,
) {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut last_sent: Option<u64> = None;
    let close = loop {
        tokio::select! {
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => {
                    if let Err(problem) = on_message(&text, &mut followed, &mut mode) {
                        let frame = json!({"type": "error", "message": problem}).to_string();
                        if sender.send(&mut socket, Message::Text(frame.into())).await.is_err() {
                            break too_slow(last_sent);
                        }
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let frame = json!({"type": "error", "message": "send text frames (JSON)"});
                    if sender.send(&mut socket, Message::Text(frame.to_string().into())).await.is_err() {
                        break too_slow(last_sent);
                    }
                }
                Some(Ok(Message::Close(_))) | None => break None,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Err(error)) => {
                    tracing::debug!(%error, "websocket read failed");
                    break None;
                }
            },
            delivery = followed.subscription.next(), if mode != Mode::WaitingForSubscribe => {
                let written = write_batch(
                    &mut socket,
                    &mut followed,
                    &mut mode,
                    delivery,
                    &rendered,
                    sender,
                    &mut last_sent,
                )
                .await;
                if let Err(close) = written {
                    break close;
                }
            },
            _ = ping.tick() => {
                if sender.send(&mut socket, Message::Ping(Default::default())).await.is_err() {
                    break too_slow(last_sent);
                }
            },
        }
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        };
        // A client too slow to read may still take the close frame once it reads again.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
    }
}

fn too_slow(last_sent: Option<u64>) -> Option<(u16, String)> {
    Some((1008, resume_reason("too slow to read", last_sent)))
}

fn resume_reason(why: &str, last_sent: Option<u64>) -> String {
    match last_sent {
        Some(p) => format!("{why}; last position sent {p}"),
        None => format!("{why}; nothing sent yet"),
    }
}

/// Applies a client message; `Err` is the problem to tell the client.
fn on_message(text: &str, followed: &mut Followed, mode: &mut Mode) -> Result<(), String> {
    let message: SubscribeMessage = serde_json::from_str(text).map_err(|e| {
        format!(
            "not a subscribe message ({e}); send {{\"type\": \"subscribe\", \"filters\": [...]}}"
        )
    })?;
    if message.kind != "subscribe" {
        return Err(format!(
            "unknown message type '{}'; the only one is 'subscribe'",
            message.kind
        ));
    }
    let filter = parse_filter(&message.filters, message.entity_id.as_deref(), "filters").map_err(
        |e| match e {
            ConsumerError::Invalid(errors) => errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        },
    )?;
    if *mode == Mode::WaitingForSubscribe {
        followed.restart(filter, message.from_position);
        *mode = if message.from_position.is_some() {
            Mode::Replaying { replayed: 0 }
        } else {
            Mode::Live
        };
    } else {
        followed.subscription.set_filter(filter);
    }
    Ok(())
}

/// Query parameters of `GET /api/v1/events/sse`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SseParams {
    pub from_position: Option<String>,
    /// A type or a filter pattern (`order.*`).
    pub event_type: Option<String>,
    /// Types starting with this text (as `/api/v1/events/query` reads it).
    pub event_type_prefix: Option<String>,
    pub entity_id: Option<String>,
    /// Read by authentication; declared so that it is not refused as unknown.
    pub access_token: Option<String>,
}

/// `GET /api/v1/events/sse`: one `event: event` / `id: <position>` / `data: <Event>` per
/// event; `Last-Event-ID` resumes after that position (it wins over `from_position`); without
/// either, live only. Comment heartbeats every 15 s.
pub async fn sse(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    headers: HeaderMap,
    Extension(rendered): Extension<Arc<RenderedEvents>>,
    Params(params): Params<SseParams>,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(value) => match value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(p) => Some(p),
            None => {
                errors.push((
                    "Last-Event-ID",
                    "must be a position (a whole number)".to_owned(),
                ));
                None
            }
        },
    };
    let from_position = match params.from_position.as_deref() {
        None => None,
        Some(raw) => match raw.parse::<u64>() {
            Ok(p) => Some(p),
            Err(_) => {
                errors.push(("from_position", "must be a whole number".to_owned()));
                None
            }
        },
    };
    let exact = match params.event_type.as_deref().map(TypeFilter::parse) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            errors.push(("event_type", e.0));
            None
        }
    };
    let prefix = params
        .event_type_prefix
        .filter(|p| !p.is_empty())
        .map(TypeFilter::StartsWith);
    let entity_id = match params.entity_id.as_deref().map(EntityId::parse) {
        None => None,
        Some(Ok(e)) => Some(e),
        Some(Err(e)) => {
            errors.push(("entity_id", e.0));
            None
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::validation(
            errors
                .into_iter()
                .map(|(field, message)| FieldError::new(field, message))
                .collect(),
        ));
    }
    // Both given: an event must pass both, as on `/api/v1/events/query`.
    let (types, also) = match (exact, prefix) {
        (Some(exact), also) => (vec![exact], also),
        (None, Some(prefix)) => (vec![prefix], None),
        (None, None) => (Vec::new(), None),
    };
    let filter = EventFilter {
        types: TypeFilters::of(types),
        entity_id,
    };
    let mut followed = app
        .consumers
        .follow(&caller, FollowInput::default())
        .await?;
    followed.restart(filter, last_event_id.or(from_position));
    let stream = events_of(followed, also, rendered);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT_EVERY).text("heartbeat"))
        .into_response())
}

/// The events of a subscription as SSE events; ends at shutdown or when storage fails (the
/// client reconnects with `Last-Event-ID`).
fn events_of(
    followed: Followed,
    also: Option<TypeFilter>,
    rendered: Arc<RenderedEvents>,
) -> impl futures::Stream<Item = Result<SseEvent, std::convert::Infallible>> {
    futures::stream::unfold(followed, move |mut followed| {
        let also = also.clone();
        let rendered = Arc::clone(&rendered);
        async move {
            loop {
                match followed.subscription.next().await {
                    Ok(Delivery::Event { event, live }) => {
                        if also
                            .as_ref()
                            .is_some_and(|f| !f.matches(event.event_type.as_str()))
                        {
                            continue;
                        }
                        let data = if live {
                            rendered.shared(&event).to_string()
                        } else {
                            rendered.render(&event)
                        };
                        let sse = SseEvent::default()
                            .event("event")
                            .id(event.position.get().to_string())
                            .data(data);
                        return Some((Ok(sse), followed));
                    }
                    Ok(Delivery::CaughtUp) => {}
                    Err(SubscriptionError::Closed) => return None,
                    Err(SubscriptionError::Storage(error)) => {
                        tracing::warn!(%error, "an SSE subscription lost its storage");
                        return None;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use allsource_domain::{
        EntityId, EventId, EventType, ExpectedVersion, Position, ProposedEvent,
    };
    use allsource_domain::{TenantId, Version};

    fn event(position: u64) -> Event {
        ProposedEvent {
            id: EventId::generate(),
            entity_id: EntityId::parse("e").expect("entity"),
            event_type: EventType::parse("t").expect("type"),
            payload: serde_json::value::to_raw_value(&json!({"n": position})).expect("json"),
            metadata: None,
            expected_version: ExpectedVersion::Any,
        }
        .into_event(
            TenantId::parse("a").expect("tenant"),
            Version::new(1),
            Position::new(position),
            chrono::Utc::now(),
        )
    }

    #[test]
    fn a_live_event_is_rendered_once_and_shared() {
        let rendered = RenderedEvents::new();
        let e = event(7);
        let first = rendered.shared(&e);
        let second = rendered.shared(&e);
        assert!(Arc::ptr_eq(&first, &second), "one rendering, shared");
        let value: serde_json::Value = serde_json::from_str(&first).expect("JSON");
        assert_eq!(value["position"], 7);
        assert_eq!(value["payload"], json!({"n": 7}));
        assert_eq!(
            &*first,
            rendered.render(&e),
            "the same text as a replay frame's event"
        );
    }

    #[test]
    fn the_cache_keeps_a_bounded_number_of_the_newest_events() {
        let rendered = RenderedEvents::new();
        let total = (RenderedEvents::SHARDS * RenderedEvents::PER_SHARD + 1000) as u64;
        let events: Vec<Event> = (1..=total).map(event).collect();
        let kept_first = rendered.shared(&events[0]);
        for e in &events {
            rendered.shared(e);
        }
        let held: usize = rendered
            .shards
            .iter()
            .map(|s| s.lock().expect("lock").by_position.len())
            .sum();
        assert_eq!(held, RenderedEvents::SHARDS * RenderedEvents::PER_SHARD);
        // The oldest went first: rendering it again makes a new string.
        assert!(!Arc::ptr_eq(&kept_first, &rendered.shared(&events[0])));
    }
}
