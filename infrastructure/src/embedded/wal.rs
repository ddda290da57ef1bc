//! The write-ahead log: segment files and the records in them.
//!
//! # Format (little-endian)
//! A segment `wal/<seq:020>.wal` starts with a 16-byte header: the magic `ASWAL\0\0\0`, a `u32`
//! format version (1) and 4 reserved bytes. Then records:
//!
//! ```text
//! u32 length of (kind + body) | u32 CRC32C of (kind + body) | u8 kind | body
//! ```
//!
//! Kind 1 is one append request (so a batch is atomic): `u16` tenant length + tenant, `u32`
//! event count, then per event: 16-byte id, `u16` + entity id, `u16` + event type, `u64`
//! version, `u64` position, `i64` timestamp in microseconds, `u32` + payload JSON text, `u8`
//! metadata flag (+ `u32` + metadata JSON text).
//!
//! Decoding never trusts the bytes: lengths are bounds-checked, and every field goes through the
//! domain's validating constructors, so even a record with a valid checksum cannot panic the
//! server or put an invalid event in memory.

use std::sync::Arc;

use allsource_domain::{Event, EventId, Position, TenantId, Version};
use chrono::DateTime;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::intern::Interner;

pub const MAGIC: &[u8; 8] = b"ASWAL\0\0\0";
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 16;
const KIND_APPEND: u8 = 1;
/// No record is larger (a batch is bounded by the body limit of the API).
const MAX_RECORD_LEN: usize = 1 << 30;

/// The segment header.
pub fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// File name of segment `seq`.
pub fn segment_name(seq: u64) -> String {
    format!("{seq:020}.wal")
}

/// The sequence number of a segment file name.
pub fn segment_seq(name: &str) -> Option<u64> {
    name.strip_suffix(".wal")?.parse().ok()
}

fn put_u16_str(out: &mut Vec<u8>, s: &str) {
    // Tenant ids, entity ids and types are validated to be far below 64 KiB.
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_u32_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Appends one record holding `events` (all of `tenant`) to `out`.
pub fn encode_append(out: &mut Vec<u8>, tenant: &TenantId, events: &[Arc<Event>]) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]); // length and CRC, filled in below
    out.push(KIND_APPEND);
    put_u16_str(out, tenant.as_str());
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for e in events {
        out.extend_from_slice(e.id.as_uuid().as_bytes());
        put_u16_str(out, e.entity_id.as_str());
        put_u16_str(out, e.event_type.as_str());
        out.extend_from_slice(&e.version.get().to_le_bytes());
        out.extend_from_slice(&e.position.get().to_le_bytes());
        out.extend_from_slice(&e.timestamp.timestamp_micros().to_le_bytes());
        put_u32_bytes(out, e.payload.get().as_bytes());
        match &e.metadata {
            Some(m) => {
                out.push(1);
                put_u32_bytes(out, m.get().as_bytes());
            }
            None => out.push(0),
        }
    }
    let body = &out[start + 8..];
    let len = body.len() as u32;
    let crc = crc32c::crc32c(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).ok_or("length overflow")?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or_else(|| format!("record ends early at byte {}", self.at))?;
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u16(&mut self) -> Result<u16, String> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, String> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, String> {
        self.array().map(u64::from_le_bytes)
    }

    fn str16(&mut self) -> Result<&'a str, String> {
        let n = self.u16()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| "invalid UTF-8".to_owned())
    }

    fn str32(&mut self) -> Result<&'a str, String> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| "invalid UTF-8".to_owned())
    }
}

/// Where a record's frame says it ends, if its checksum holds: `Some((body, next offset))`.
fn frame_at(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(at..at.checked_add(8)?)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if len == 0 || len > MAX_RECORD_LEN {
        return None;
    }
    let body = bytes.get(at + 8..(at + 8).checked_add(len)?)?;
    (crc32c::crc32c(body) == crc).then_some((body, at + 8 + len))
}

/// Decodes a record body (kind + payload) into events.
///
/// # Errors
/// A description of what is wrong; never panics.
pub fn decode_record(body: &[u8], interner: &mut Interner) -> Result<Vec<Arc<Event>>, String> {
    let mut r = Reader { bytes: body, at: 0 };
    let kind = r.take(1)?[0];
    if kind != KIND_APPEND {
        return Err(format!("unknown record kind {kind}"));
    }
    let tenant = interner.tenant(r.str16()?)?;
    let count = r.u32()? as usize;
    let mut events = Vec::with_capacity(count.min(body.len() / 40 + 1));
    for _ in 0..count {
        let id = EventId::new(Uuid::from_bytes(r.array()?));
        let entity_id = interner.entity(r.str16()?)?;
        let event_type = interner.event_type(r.str16()?)?;
        let version = Version::new(r.u64()?);
        let position = Position::new(r.u64()?);
        let micros = r.u64()? as i64;
        let timestamp = DateTime::from_timestamp_micros(micros)
            .ok_or_else(|| format!("timestamp {micros} out of range"))?;
        let payload = RawValue::from_string(r.str32()?.to_owned())
            .map_err(|e| format!("payload is not JSON: {e}"))?;
        let metadata = match r.take(1)?[0] {
            0 => None,
            1 => Some(
                RawValue::from_string(r.str32()?.to_owned())
                    .map_err(|e| format!("metadata is not JSON: {e}"))?,
            ),
            other => return Err(format!("bad metadata flag {other}")),
        };
        if version.get() == 0 || position.get() == 0 {
            return Err("version and position start at 1".into());
        }
        events.push(Arc::new(Event {
            id,
            tenant_id: tenant.clone(),
            entity_id,
            event_type,
            version,
            position,
            timestamp,
            payload,
            metadata,
        }));
    }
    if r.at != body.len() {
        return Err("trailing bytes after the last event".into());
    }
    Ok(events)
}

/// How a segment's scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every byte belongs to a whole, valid record.
    Clean,
    /// An incomplete or damaged record with nothing valid after it: what a crash mid-write
    /// leaves. `offset` is where the valid part ends.
    TornTail { offset: usize },
    /// A bad record followed by valid ones (or a bad header): real corruption.
    Corrupt { offset: usize, detail: String },
}

/// Scans a whole segment file, handing every decoded record's events to `each`.
pub fn scan_segment(
    bytes: &[u8],
    interner: &mut Interner,
    mut each: impl FnMut(Vec<Arc<Event>>) -> Result<(), String>,
) -> ScanEnd {
    if bytes.len() < HEADER_LEN {
        // A segment cut off while its header was written holds nothing.
        return ScanEnd::TornTail { offset: 0 };
    }
    if &bytes[..8] != MAGIC {
        return ScanEnd::Corrupt {
            offset: 0,
            detail: "not an AllSource WAL segment (bad magic)".into(),
        };
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != FORMAT_VERSION {
        return ScanEnd::Corrupt {
            offset: 8,
            detail: format!("unsupported WAL format version {version}"),
        };
    }
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        let Some((body, next)) = frame_at(bytes, at) else {
            return classify_bad_record(bytes, at, "bad length or checksum".into());
        };
        let decoded = decode_record(body, interner).and_then(&mut each);
        if let Err(detail) = decoded {
            // The checksum held, so the bytes are what was written: this is not a torn write.
            return ScanEnd::Corrupt { offset: at, detail };
        }
        at = next;
    }
    ScanEnd::Clean
}

/// A bad record is a torn tail only if nothing valid follows it.
fn classify_bad_record(bytes: &[u8], at: usize, detail: String) -> ScanEnd {
    if (at + 1..bytes.len()).any(|later| frame_at(bytes, later).is_some()) {
        ScanEnd::Corrupt { offset: at, detail }
    } else {
        ScanEnd::TornTail { offset: at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allsource_domain::{EntityId, EventType, ProposedEvent};
    use proptest::prelude::*;

    fn event(
        entity: &str,
        version: u64,
        position: u64,
        payload: &str,
        meta: Option<&str>,
    ) -> Arc<Event> {
        Arc::new(
            ProposedEvent {
                id: EventId::generate(),
                entity_id: EntityId::parse(entity).unwrap(),
                event_type: EventType::parse("t.x").unwrap(),
                payload: RawValue::from_string(payload.into()).unwrap(),
                metadata: meta.map(|m| RawValue::from_string(m.into()).unwrap()),
                expected_version: Default::default(),
            }
            .into_event(
                TenantId::default_tenant(),
                Version::new(version),
                Position::new(position),
                DateTime::from_timestamp_micros(1_763_800_000_123_456).unwrap(),
            ),
        )
    }

    fn segment(records: &[Vec<Arc<Event>>]) -> Vec<u8> {
        let mut bytes = header().to_vec();
        for r in records {
            encode_append(&mut bytes, &TenantId::default_tenant(), r);
        }
        bytes
    }

    fn scan(bytes: &[u8]) -> (Vec<Arc<Event>>, ScanEnd) {
        let mut all = Vec::new();
        let end = scan_segment(bytes, &mut Interner::default(), |events| {
            all.extend(events);
            Ok(())
        });
        (all, end)
    }

    #[test]
    fn round_trip() {
        let records = vec![
            vec![
                event("a", 1, 1, r#"{"x": 1}"#, None),
                event("b", 1, 2, "[1,2]", Some(r#"{"m":"ü"}"#)),
            ],
            vec![event("a", 2, 3, "null", None)],
        ];
        let (events, end) = scan(&segment(&records));
        assert_eq!(end, ScanEnd::Clean);
        let expected: Vec<Event> = records.concat().iter().map(|e| (**e).clone()).collect();
        let got: Vec<Event> = events.iter().map(|e| (**e).clone()).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn every_cut_inside_the_last_record_is_a_torn_tail() {
        let first = segment(&[vec![event("a", 1, 1, "1", None)]]);
        let whole = segment(&[
            vec![event("a", 1, 1, "1", None)],
            vec![event("a", 2, 2, r#"{"k":"v"}"#, None)],
        ]);
        for cut in first.len()..whole.len() {
            let (events, end) = scan(&whole[..cut]);
            assert_eq!(events.len(), 1, "cut at {cut}");
            let expected = if cut == first.len() {
                ScanEnd::Clean
            } else {
                ScanEnd::TornTail {
                    offset: first.len(),
                }
            };
            assert_eq!(end, expected, "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_bit_before_valid_records_is_corruption() {
        let records = vec![
            vec![event("a", 1, 1, "1", None)],
            vec![event("a", 2, 2, "2", None)],
            vec![event("a", 3, 3, "3", None)],
        ];
        let mut bytes = segment(&records);
        let second = segment(&records[..1]).len();
        bytes[second + 20] ^= 0x04;
        let (events, end) = scan(&bytes);
        assert_eq!(events.len(), 1);
        assert!(
            matches!(end, ScanEnd::Corrupt { offset, .. } if offset == second),
            "{end:?}"
        );
    }

    #[test]
    fn a_flipped_bit_in_the_last_record_is_a_torn_tail() {
        let records = vec![
            vec![event("a", 1, 1, "1", None)],
            vec![event("a", 2, 2, "2", None)],
        ];
        let mut bytes = segment(&records);
        let last = bytes.len() - 3;
        bytes[last] ^= 0x01;
        assert_eq!(
            scan(&bytes).1,
            ScanEnd::TornTail {
                offset: segment(&records[..1]).len()
            }
        );
    }

    #[test]
    fn bad_headers() {
        assert_eq!(scan(&[]).1, ScanEnd::TornTail { offset: 0 });
        assert!(matches!(
            scan(b"NOTAWAL!xxxxxxxxxxxx").1,
            ScanEnd::Corrupt { offset: 0, .. }
        ));
        let mut future = header();
        future[8] = 9;
        assert!(matches!(
            scan(&future).1,
            ScanEnd::Corrupt { offset: 8, .. }
        ));
    }

    #[test]
    fn names() {
        assert_eq!(segment_name(7), "00000000000000000007.wal");
        assert_eq!(segment_seq("00000000000000000007.wal"), Some(7));
        assert_eq!(segment_seq("x.wal"), None);
        assert_eq!(segment_seq("00000000000000000007.wal.corrupt-1"), None);
    }

    fn arb_event() -> impl Strategy<Value = Arc<Event>> {
        (
            "[a-z0-9 :/-]{1,20}",
            "[a-z]{1,8}(\\.[a-z]{1,8})?",
            1u64..1_000_000,
            1u64..u64::MAX / 2,
            -1_000_000_000_000_000i64..4_000_000_000_000_000,
            prop_oneof![
                Just("null".to_owned()),
                any::<i64>().prop_map(|n| n.to_string()),
                "[a-z]{0,10}".prop_map(|s| format!("{{\"k\":\"{s}\"}}"))
            ],
            proptest::option::of("[a-z]{0,10}".prop_map(|s| format!("{{\"m\":\"{s}\"}}"))),
        )
            .prop_filter_map(
                "valid entity",
                |(entity, ty, version, position, micros, payload, meta)| {
                    let entity = entity.trim().to_owned();
                    Some(Arc::new(Event {
                        id: EventId::new(Uuid::new_v4()),
                        tenant_id: TenantId::default_tenant(),
                        entity_id: EntityId::parse(&entity).ok()?,
                        event_type: EventType::parse(&ty).ok()?,
                        version: Version::new(version),
                        position: Position::new(position),
                        timestamp: DateTime::from_timestamp_micros(micros)?,
                        payload: RawValue::from_string(payload).ok()?,
                        metadata: meta.map(|m| RawValue::from_string(m).unwrap()),
                    }))
                },
            )
    }

    proptest! {
        #[test]
        fn records_round_trip(events in prop::collection::vec(arb_event(), 1..8)) {
            let mut bytes = Vec::new();
            encode_append(&mut bytes, &TenantId::default_tenant(), &events);
            let (body, next) = frame_at(&bytes, 0).expect("frame");
            prop_assert_eq!(next, bytes.len());
            let decoded = decode_record(body, &mut Interner::default()).expect("decode");
            let a: Vec<Event> = decoded.iter().map(|e| (**e).clone()).collect();
            let b: Vec<Event> = events.iter().map(|e| (**e).clone()).collect();
            prop_assert_eq!(a, b);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_record(&bytes, &mut Interner::default());
            let mut segment = header().to_vec();
            segment.extend_from_slice(&bytes);
            let _ = scan(&segment);
        }

        #[test]
        fn mutated_records_never_panic(events in prop::collection::vec(arb_event(), 1..4), flip in any::<usize>(), value in any::<u8>()) {
            let mut bytes = Vec::new();
            encode_append(&mut bytes, &TenantId::default_tenant(), &events);
            let i = flip % bytes.len();
            bytes[i] = value;
            let _ = decode_record(&bytes[8..], &mut Interner::default());
        }
    }
}
