//! `allsource admin tail`: follows the log through the WebSocket `GET /api/v1/events/stream`
//! and prints one line per event, in position order, until Ctrl-C, `--limit` events, or the
//! server closes the stream.
//!
//! Without `--consumer`, one `subscribe` frame starts the subscription: with
//! `--from-position N` a replay of every matching event after `N` (`0` = from the beginning),
//! then live; without it, live only. With `--consumer ID` the server replays after the
//! consumer's cursor with its registered filters (the consumer is created if missing, which
//! needs `write`); `--filter`/`--entity` then change its filters for this connection. The
//! server guarantees no gap and no duplicate between replay and live, so nothing is lost
//! between what was already there and what arrives.
//!
//! `--output json` prints each event as one line of JSON (the server's text, unless it spans
//! lines); `--output table` prints `position  timestamp  type  entity  vN  payload`.

use std::time::Duration;

use clap::Args;
use futures::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use super::client::{CliError, Client, Conn, EXIT_CODES_HELP, classify};
use super::output::{self, Output};

/// `admin tail`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES_HELP, after_long_help = concat!("\
Examples:
  allsource admin tail                                   # live events from now on
  allsource admin tail --from-position 0 --limit 10      # the first ten events, then stop
  allsource admin tail --filter 'order.*' --entity order-1
  allsource admin tail --consumer orders-projection --output json | jq .position

Stops on Ctrl-C (exit 0), after --limit events (exit 0), or when the server closes the
stream (shutdown: 3, storage failure: 7, too slow to read: 1).

", exit_codes!()))]
pub struct TailArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// An event type or a pattern such as `order.*`; repeat for several (none: every type).
    #[arg(long = "filter", value_name = "TYPE")]
    pub filters: Vec<String>,
    /// Only the events of this entity.
    #[arg(long, value_name = "ENTITY_ID")]
    pub entity: Option<String>,
    /// First replay the events after this position (0 = from the beginning); default: live only.
    #[arg(long, value_name = "N", conflicts_with = "consumer")]
    pub from_position: Option<u64>,
    /// Follow as this durable consumer: replay after its cursor, then live.
    #[arg(long, value_name = "CONSUMER_ID")]
    pub consumer: Option<String>,
    /// Stop after this many events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
}

/// The `subscribe` frame for these flags, or `None` when the consumer's own filters apply.
pub fn subscribe_frame(args: &TailArgs) -> Option<Value> {
    if args.consumer.is_some() && args.filters.is_empty() && args.entity.is_none() {
        return None;
    }
    let mut frame = serde_json::json!({"type": "subscribe", "filters": args.filters});
    if let Some(from) = args.from_position {
        frame["from_position"] = from.into();
    }
    if let Some(entity) = &args.entity {
        frame["entity_id"] = entity.as_str().into();
    }
    Some(frame)
}

/// What a server frame means for `tail`.
#[derive(Debug, PartialEq)]
pub enum Frame<'a> {
    /// An event (replayed or live): its JSON text as sent.
    Event(&'a str),
    /// The server could not use what we sent.
    Refused(String),
    /// Anything else (`replay_complete`, frames of later versions).
    Other,
}

/// Reads one text frame.
///
/// # Errors
/// A frame that is not a JSON object.
pub fn read_frame(text: &str) -> Result<Frame<'_>, CliError> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(rename = "type", default, borrow)]
        kind: Option<&'a str>,
        #[serde(default, borrow)]
        event: Option<&'a RawValue>,
        #[serde(default)]
        message: Option<String>,
    }
    let envelope: Envelope<'_> = serde_json::from_str(text).map_err(|e| {
        CliError::Other(format!(
            "the server sent a frame that is not a JSON object: {e}"
        ))
    })?;
    Ok(match envelope.kind {
        // A live event is a bare Event (no `type` member).
        None => Frame::Event(text),
        Some("replay") => envelope
            .event
            .map_or(Frame::Other, |event| Frame::Event(event.get())),
        Some("error") => Frame::Refused(
            envelope
                .message
                .unwrap_or_else(|| "the server could not read the subscription".into()),
        ),
        Some(_) => Frame::Other,
    })
}

/// One event as one line.
pub fn event_line(event: &Value, output: Output) -> String {
    match output {
        Output::Json => format!("{event}\n"),
        Output::Table => {
            let field = |name: &str| event.get(name).map_or_else(|| "-".to_owned(), output::cell);
            let payload = event
                .get("payload")
                .map_or_else(|| "-".to_owned(), |p| output::clean(&p.to_string()));
            format!(
                "{}  {}  {}  {}  v{}  {}\n",
                field("position"),
                field("timestamp"),
                field("event_type"),
                field("entity_id"),
                field("version"),
                payload
            )
        }
    }
}

/// The line for an event's text: as sent for `json` (reformatted only if it spans lines, so
/// that every event is one line), columns for `table`.
///
/// # Errors
/// Text that is not JSON.
pub fn raw_event_line(raw: &str, output: Output) -> Result<String, CliError> {
    if output == Output::Json && !raw.contains(['\n', '\r']) {
        return Ok(format!("{}\n", raw.trim()));
    }
    let event: Value = serde_json::from_str(raw)
        .map_err(|e| CliError::Other(format!("the server sent an event that is not JSON: {e}")))?;
    Ok(event_line(&event, output))
}

/// What a close frame from the server means.
pub fn closed(frame: Option<&CloseFrame>, url: &str) -> Result<(), CliError> {
    let Some(frame) = frame else {
        return Err(CliError::Unreachable {
            url: url.to_owned(),
            cause: "the connection was closed without a reason".into(),
        });
    };
    let reason = frame.reason.as_str();
    let with_reason = |what: &str| {
        if reason.is_empty() {
            what.to_owned()
        } else {
            format!("{what} ({reason})")
        }
    };
    match frame.code {
        CloseCode::Normal => Ok(()),
        CloseCode::Away => Err(CliError::Unreachable {
            url: url.to_owned(),
            cause: with_reason("the server is shutting down"),
        }),
        CloseCode::Error => Err(CliError::ServerFailed(with_reason(
            "the server closed the stream because its storage failed; start again after the \
             last position printed",
        ))),
        CloseCode::Policy => Err(CliError::Other(with_reason(
            "the server closed the stream: this client did not read fast enough",
        ))),
        other => Err(CliError::Other(with_reason(&format!(
            "the server closed the stream (code {})",
            u16::from(other)
        )))),
    }
}

/// Maps a WebSocket error (before or after the handshake).
fn ws_error(e: tungstenite::Error, url: &str, sent_credential: bool) -> CliError {
    match e {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            let text = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            match classify(status, text, sent_credential) {
                Err(e) => e,
                Ok(_) => CliError::Other(format!(
                    "the server answered the WebSocket handshake with {status}"
                )),
            }
        }
        tungstenite::Error::Io(io) => CliError::Unreachable {
            url: url.to_owned(),
            cause: format!("cannot connect ({io})"),
        },
        tungstenite::Error::Url(tungstenite::error::UrlError::TlsFeatureNotEnabled) => {
            CliError::Usage(
                "tail follows plain ws:// only: give an http:// --url (or use \
                 GET /api/v1/events/sse over https)"
                    .into(),
            )
        }
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            CliError::Unreachable {
                url: url.to_owned(),
                cause: "the connection was closed".into(),
            }
        }
        other => CliError::Other(format!("WebSocket: {other}")),
    }
}

/// Writes a line; `false` once stdout is closed (`| head`), which ends the tail.
fn write_line(line: &str) -> Result<bool, CliError> {
    output::write_stdout(line)
}

/// Runs `admin tail`.
///
/// # Errors
/// See [`CliError`] and [`closed`].
pub async fn run(client: &Client, args: TailArgs) -> Result<(), CliError> {
    let mut url = client.url(&["events", "stream"]);
    let origin = url.origin().ascii_serialization();
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    url.set_scheme(scheme)
        .map_err(|()| CliError::Usage("--url: cannot be turned into a ws:// URL".into()))?;
    if let Some(consumer) = &args.consumer {
        url.query_pairs_mut().append_pair("consumer_id", consumer);
    }
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| ws_error(e, &origin, false))?;
    if let Some(token) = client.token() {
        let value = format!("Bearer {token}").parse().map_err(|_| {
            CliError::Usage("--token holds characters a header cannot carry".into())
        })?;
        request
            .headers_mut()
            .insert(tungstenite::http::header::AUTHORIZATION, value);
    }
    let sent_credential = client.token().is_some();
    let (mut socket, _) =
        match tokio::time::timeout(client.timeout, tokio_tungstenite::connect_async(request)).await
        {
            Err(_) => {
                return Err(CliError::Unreachable {
                    url: origin,
                    cause: "no answer in time (see --timeout)".into(),
                });
            }
            Ok(Err(e)) => return Err(ws_error(e, &origin, sent_credential)),
            Ok(Ok(connected)) => connected,
        };
    if let Some(frame) = subscribe_frame(&args) {
        socket
            .send(Message::Text(frame.to_string().into()))
            .await
            .map_err(|e| ws_error(e, &origin, sent_credential))?;
    }
    let mut printed = 0_u64;
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        let message = tokio::select! {
            _ = &mut stop => {
                close(&mut socket).await;
                return Ok(());
            }
            message = socket.next() => message,
        };
        let message = match message {
            None => {
                return Err(CliError::Unreachable {
                    url: origin,
                    cause: "the connection was lost".into(),
                });
            }
            Some(Err(e)) => return Err(ws_error(e, &origin, sent_credential)),
            Some(Ok(message)) => message,
        };
        match message {
            Message::Text(text) => match read_frame(text.as_str())? {
                Frame::Event(raw) => {
                    if !write_line(&raw_event_line(raw, client.output)?)? {
                        close(&mut socket).await;
                        return Ok(());
                    }
                    printed += 1;
                    if args.limit.is_some_and(|limit| printed >= limit) {
                        close(&mut socket).await;
                        return Ok(());
                    }
                }
                Frame::Refused(message) => {
                    close(&mut socket).await;
                    return Err(CliError::Rejected(format!(
                        "the server refused the subscription: {message}"
                    )));
                }
                Frame::Other => {}
            },
            Message::Close(frame) => return closed(frame.as_ref(), &origin),
            // Pings are answered by the library; binary frames are not part of the protocol.
            _ => {}
        }
    }
}

/// Closes the stream politely, without waiting long for the server's answer.
async fn close<S>(socket: &mut tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(
        filters: &[&str],
        entity: Option<&str>,
        from: Option<u64>,
        consumer: Option<&str>,
    ) -> TailArgs {
        TailArgs {
            conn: Conn {
                url: super::super::client::DEFAULT_URL.into(),
                token: None,
                output: Output::Table,
                timeout: 30,
            },
            filters: filters.iter().map(|f| (*f).to_owned()).collect(),
            entity: entity.map(str::to_owned),
            from_position: from,
            consumer: consumer.map(str::to_owned),
            limit: None,
        }
    }

    #[test]
    fn the_subscribe_frame_carries_the_flags() {
        assert_eq!(
            subscribe_frame(&args(&[], None, None, None)),
            Some(json!({"type": "subscribe", "filters": []}))
        );
        assert_eq!(
            subscribe_frame(&args(&["order.*"], Some("order-1"), Some(0), None)),
            Some(
                json!({"type": "subscribe", "filters": ["order.*"], "from_position": 0,
                "entity_id": "order-1"})
            )
        );
        assert_eq!(subscribe_frame(&args(&[], None, None, Some("c"))), None);
        assert_eq!(
            subscribe_frame(&args(&["a"], None, None, Some("c"))),
            Some(json!({"type": "subscribe", "filters": ["a"]}))
        );
    }

    #[test]
    fn frames_are_events_refusals_or_ignored() {
        let live = r#"{"id":"e","position":3,"event_type":"a","payload":{}}"#;
        assert_eq!(read_frame(live).unwrap(), Frame::Event(live));
        let replay = r#"{"type":"replay","position":1,"event":{"position":1,"payload":{"x":1}}}"#;
        assert_eq!(
            read_frame(replay).unwrap(),
            Frame::Event(r#"{"position":1,"payload":{"x":1}}"#)
        );
        assert_eq!(
            read_frame(r#"{"type":"replay_complete","replayed":1}"#).unwrap(),
            Frame::Other
        );
        assert_eq!(
            read_frame(r#"{"type":"error","message":"filters[0]: bad"}"#).unwrap(),
            Frame::Refused("filters[0]: bad".into())
        );
        assert_eq!(read_frame("[1]").unwrap_err().exit_code(), 1);
    }

    #[test]
    fn events_are_one_line_each() {
        let raw = "{\"position\":7,\"timestamp\":\"2026-12-02T00:00:00.000000Z\",\
                   \"event_type\":\"order.placed\",\"entity_id\":\"order-1\",\"version\":2,\
                   \"payload\":{\"total\":10}}";
        assert_eq!(
            raw_event_line(raw, Output::Json).unwrap(),
            format!("{raw}\n")
        );
        assert_eq!(
            raw_event_line(raw, Output::Table).unwrap(),
            "7  2026-12-02T00:00:00.000000Z  order.placed  order-1  v2  {\"total\":10}\n"
        );
        // A payload stored with its client's line breaks still gives one line.
        let spread = "{\"position\":8,\"payload\":{\n  \"a\": 1\n}}";
        let line = raw_event_line(spread, Output::Json).unwrap();
        assert_eq!(line.lines().count(), 1, "{line}");
        assert_eq!(
            serde_json::from_str::<Value>(&line).unwrap()["payload"]["a"],
            1
        );
    }

    #[test]
    fn close_codes_map_to_exit_codes() {
        let frame = |code: CloseCode, reason: &str| CloseFrame {
            code,
            reason: reason.to_owned().into(),
        };
        assert!(closed(Some(&frame(CloseCode::Normal, "")), "u").is_ok());
        let away = closed(Some(&frame(CloseCode::Away, "")), "u").unwrap_err();
        assert_eq!(away.exit_code(), 3);
        let storage =
            closed(Some(&frame(CloseCode::Error, "last position sent 41")), "u").unwrap_err();
        assert_eq!(storage.exit_code(), 7);
        assert!(
            storage.to_string().contains("last position sent 41"),
            "{storage}"
        );
        let slow = closed(Some(&frame(CloseCode::Policy, "too slow")), "u").unwrap_err();
        assert_eq!(slow.exit_code(), 1);
        assert_eq!(closed(None, "u").unwrap_err().exit_code(), 3);
    }
}
