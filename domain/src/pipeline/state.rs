//! What the operators remember, and applying them to records.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::aggregate::Group;
use super::operators::{flat_map, group_key};
use super::{
    Attribute, Effects, FieldPath, MAX_GROUPS, MAX_KEYS, Operator, OperatorError,
    PipelineDefinition, PipelineState, Record, ReduceSpec, WindowKind, WindowSpec,
};

/// Most windows (tumbling or sliding) or sessions a window keeps open at once; a record that
/// would open one more is an operator error.
pub const MAX_OPEN_WINDOWS: usize = 10_000;
/// Earliest record time a window accepts: 0000-01-01T00:00:00Z.
pub const MIN_TIME_MS: i64 = -62_167_219_200_000;
/// Latest record time a window accepts: 9999-12-31T23:59:59.999Z.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// What one operator remembers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorState {
    /// Nothing (filter, map, flat_map, enrich, branch, window: a window's state is its
    /// reduce's).
    Stateless,
    Dedupe(KeyTimes),
    Throttle(KeyCounts),
    /// A reduce after a window: the open windows (or sessions) and their groups.
    Windows(OpenWindows),
    /// A reduce without a window: every group.
    Groups(RunningGroups),
}

/// The keys a dedupe saw, with the time it saw each.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(from = "KeyTimesDoc", into = "KeyTimesDoc")]
pub struct KeyTimes {
    at: BTreeMap<String, i64>,
    /// `(time, key)`: oldest first.
    order: BTreeSet<(i64, String)>,
}

#[derive(Clone, Serialize, Deserialize)]
struct KeyTimesDoc {
    keys: BTreeMap<String, i64>,
}

impl From<KeyTimesDoc> for KeyTimes {
    fn from(doc: KeyTimesDoc) -> Self {
        Self {
            order: doc.keys.iter().map(|(k, t)| (*t, k.clone())).collect(),
            at: doc.keys,
        }
    }
}

impl From<KeyTimes> for KeyTimesDoc {
    fn from(state: KeyTimes) -> Self {
        Self { keys: state.at }
    }
}

/// A throttle's count per key in the key's current fixed window.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(from = "KeyCountsDoc", into = "KeyCountsDoc")]
pub struct KeyCounts {
    /// key → (window number, records passed in it).
    counts: BTreeMap<String, (i64, u64)>,
    /// `(window number, key)`: oldest first.
    order: BTreeSet<(i64, String)>,
}

#[derive(Clone, Serialize, Deserialize)]
struct KeyCountsDoc {
    keys: BTreeMap<String, (i64, u64)>,
}

impl From<KeyCountsDoc> for KeyCounts {
    fn from(doc: KeyCountsDoc) -> Self {
        Self {
            order: doc.keys.iter().map(|(k, (w, _))| (*w, k.clone())).collect(),
            counts: doc.keys,
        }
    }
}

impl From<KeyCounts> for KeyCountsDoc {
    fn from(state: KeyCounts) -> Self {
        Self { keys: state.counts }
    }
}

/// A session: its window `[start, end)` (end = last record's time + gap) and its group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Session {
    start: i64,
    end: i64,
    group: Group,
}

/// The open windows of a windowed reduce.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(from = "OpenWindowsDoc", into = "OpenWindowsDoc")]
pub struct OpenWindows {
    /// Records aggregated so far (their sequence numbers order `first` and `last`).
    seq: u64,
    /// Tumbling and sliding: `(end, start)` → group key → group.
    windows: BTreeMap<(i64, i64), BTreeMap<String, Group>>,
    /// Sessions: group key → its sessions (disjoint).
    sessions: BTreeMap<String, Vec<Session>>,
    /// `(end, start, group key)` of every session.
    ends: BTreeSet<(i64, i64, String)>,
}

#[derive(Clone, Serialize, Deserialize)]
struct WindowDoc {
    start: i64,
    end: i64,
    groups: BTreeMap<String, Group>,
}

#[derive(Clone, Serialize, Deserialize)]
struct OpenWindowsDoc {
    seq: u64,
    #[serde(default)]
    windows: Vec<WindowDoc>,
    #[serde(default)]
    sessions: BTreeMap<String, Vec<Session>>,
}

impl From<OpenWindowsDoc> for OpenWindows {
    fn from(doc: OpenWindowsDoc) -> Self {
        let ends = doc
            .sessions
            .iter()
            .flat_map(|(k, list)| list.iter().map(|s| (s.end, s.start, k.clone())))
            .collect();
        Self {
            seq: doc.seq,
            windows: doc
                .windows
                .into_iter()
                .map(|w| ((w.end, w.start), w.groups))
                .collect(),
            sessions: doc.sessions,
            ends,
        }
    }
}

impl From<OpenWindows> for OpenWindowsDoc {
    fn from(state: OpenWindows) -> Self {
        Self {
            seq: state.seq,
            windows: state
                .windows
                .into_iter()
                .map(|((end, start), groups)| WindowDoc { start, end, groups })
                .collect(),
            sessions: state.sessions,
        }
    }
}

/// The groups of a reduce without a window.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RunningGroups {
    seq: u64,
    groups: BTreeMap<String, Group>,
}

fn ms(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn rfc3339(t: i64) -> Value {
    DateTime::<Utc>::from_timestamp_millis(t).map_or(Value::from(t), |d| {
        Value::from(d.to_rfc3339_opts(SecondsFormat::Micros, true))
    })
}

/// A record's time for a window: `@timestamp`, or a payload value holding an RFC 3339 time or
/// milliseconds since the epoch (a fractional part is dropped).
///
/// # Errors
/// A missing or unusable time, or one outside years 0000 to 9999.
pub fn record_time(time_field: &FieldPath, record: &Record) -> Result<i64, String> {
    let field = time_field.to_text();
    let t = match time_field {
        FieldPath::Attribute(Attribute::Timestamp) => record.source.time_ms(),
        _ => match time_field.get(record) {
            None | Some(Value::Null) => return Err(format!("{field} is missing: no time")),
            Some(Value::String(s)) => DateTime::parse_from_rfc3339(&s)
                .map_err(|_| format!("{field} is not an RFC 3339 time: {s:?}"))?
                .timestamp_millis(),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(t) => t,
                None => n
                    .as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 1e15)
                    .map(|f| f.floor() as i64)
                    .ok_or_else(|| format!("{field} is out of range as milliseconds: {n}"))?,
            },
            Some(_) => {
                return Err(format!(
                    "{field} is neither an RFC 3339 time nor milliseconds since the epoch"
                ));
            }
        },
    };
    if (MIN_TIME_MS..=MAX_TIME_MS).contains(&t) {
        Ok(t)
    } else {
        Err(format!("{field}: the time is outside years 0000 to 9999"))
    }
}

/// The `[start, end)` windows (tumbling or sliding) a time falls in, by start.
pub fn windows_of(spec: &WindowSpec, t: i64) -> Vec<(i64, i64)> {
    let size = ms(spec.size_ms).max(1);
    match spec.kind {
        WindowKind::Tumbling => {
            let start = t.div_euclid(size).saturating_mul(size);
            vec![(start, start.saturating_add(size))]
        }
        WindowKind::Sliding => {
            let slide = ms(spec.slide_ms).max(1);
            let mut starts = Vec::new();
            let mut s = t.div_euclid(slide).saturating_mul(slide);
            while s.saturating_add(size) > t && starts.len() < 1_000_000 {
                starts.push((s, s.saturating_add(size)));
                s = s.saturating_sub(slide);
            }
            starts.reverse();
            starts
        }
        WindowKind::Session => Vec::new(),
    }
}

fn group_values(spec: &ReduceSpec, record: &Record) -> Vec<Value> {
    spec.group_by
        .iter()
        .map(|p| p.get(record).unwrap_or(Value::Null))
        .collect()
}

fn window_result(spec: &ReduceSpec, start: i64, end: i64, key: &str, group: Group) -> Record {
    let mut payload = group.payload(spec);
    payload.insert("window_start".into(), rfc3339(start));
    payload.insert("window_end".into(), rfc3339(end));
    Record {
        payload: Value::Object(payload),
        source: group.source,
        origin: format!("window/{start}/{end}/{key}"),
    }
}

impl OpenWindows {
    /// Folds one record (at time `t`) in; `Ok(false)`: it is late.
    fn add(
        &mut self,
        window: &WindowSpec,
        spec: &ReduceSpec,
        record: &Record,
        t: i64,
        watermark: Option<i64>,
    ) -> Result<bool, String> {
        let lateness = ms(window.allowed_lateness_ms);
        let closed = |end: i64| watermark.is_some_and(|wm| end.saturating_add(lateness) <= wm);
        let values = group_values(spec, record);
        let key = group_key(&values);
        if window.kind == WindowKind::Session {
            return self.add_to_session(window, spec, record, t, key, values, closed);
        }
        let open: Vec<(i64, i64)> = windows_of(window, t)
            .into_iter()
            .filter(|(_, end)| !closed(*end))
            .collect();
        if open.is_empty() {
            return Ok(false);
        }
        let new_windows = open
            .iter()
            .filter(|(s, e)| !self.windows.contains_key(&(*e, *s)))
            .count();
        if self.windows.len().saturating_add(new_windows) > MAX_OPEN_WINDOWS {
            return Err(format!(
                "more than {MAX_OPEN_WINDOWS} windows would be open at once"
            ));
        }
        for (start, end) in &open {
            if let Some(groups) = self.windows.get(&(*end, *start)) {
                match groups.get(&key) {
                    Some(group) => group.check(spec, record)?,
                    None if groups.len() >= MAX_GROUPS => {
                        return Err(format!("more than {MAX_GROUPS} groups in one window"));
                    }
                    None => {}
                }
            }
        }
        self.seq = self.seq.saturating_add(1);
        for (start, end) in open {
            self.windows
                .entry((end, start))
                .or_default()
                .entry(key.clone())
                .or_insert_with(|| Group::new(spec, values.clone(), record.source.clone()))
                .add(spec, record, self.seq);
        }
        Ok(true)
    }

    #[allow(clippy::too_many_arguments)]
    fn add_to_session(
        &mut self,
        window: &WindowSpec,
        spec: &ReduceSpec,
        record: &Record,
        t: i64,
        key: String,
        values: Vec<Value>,
        closed: impl Fn(i64) -> bool,
    ) -> Result<bool, String> {
        let gap = ms(window.gap_ms).max(1);
        let own_end = t.saturating_add(gap);
        let list = self
            .sessions
            .get(&key)
            .map(Vec::as_slice)
            .unwrap_or_default();
        // Sessions whose window [start, end) overlaps the record's own [t, t + gap).
        let touching: Vec<usize> = list
            .iter()
            .enumerate()
            .filter(|(_, s)| t < s.end && own_end > s.start)
            .map(|(i, _)| i)
            .collect();
        match touching.as_slice() {
            [] => {
                if closed(own_end) {
                    return Ok(false);
                }
                if self.ends.len() >= MAX_OPEN_WINDOWS {
                    return Err(format!(
                        "more than {MAX_OPEN_WINDOWS} sessions would be open at once"
                    ));
                }
                if list.is_empty() && self.sessions.len() >= MAX_GROUPS {
                    return Err(format!("more than {MAX_GROUPS} groups with open sessions"));
                }
                self.seq = self.seq.saturating_add(1);
                let mut group = Group::new(spec, values, record.source.clone());
                group.add(spec, record, self.seq);
                self.ends.insert((own_end, t, key.clone()));
                let list = self.sessions.entry(key).or_default();
                list.push(Session {
                    start: t,
                    end: own_end,
                    group,
                });
                list.sort_by_key(|s| s.start);
            }
            [only] => {
                let session = &list[*only];
                session.group.check(spec, record)?;
                let (old_start, old_end) = (session.start, session.end);
                self.seq = self.seq.saturating_add(1);
                let seq = self.seq;
                let Some(session) = self.sessions.get_mut(&key).and_then(|l| l.get_mut(*only))
                else {
                    return Err("internal: the session vanished".into());
                };
                session.group.add(spec, record, seq);
                session.start = session.start.min(t);
                session.end = session.end.max(own_end);
                let (start, end) = (session.start, session.end);
                self.ends.remove(&(old_end, old_start, key.clone()));
                self.ends.insert((end, start, key));
            }
            several => {
                // The record bridges sessions: they become one.
                let mut parts: Vec<Session> = several.iter().map(|i| list[*i].clone()).collect();
                let mut merged = parts.remove(0);
                for part in parts {
                    merged.start = merged.start.min(part.start);
                    merged.end = merged.end.max(part.end);
                    merged.group.merge(part.group)?;
                }
                merged.group.check(spec, record)?;
                self.seq = self.seq.saturating_add(1);
                merged.group.add(spec, record, self.seq);
                merged.start = merged.start.min(t);
                merged.end = merged.end.max(own_end);
                let list = self.sessions.entry(key.clone()).or_default();
                for i in several.iter().rev() {
                    let gone = list.remove(*i);
                    self.ends.remove(&(gone.end, gone.start, key.clone()));
                }
                self.ends.insert((merged.end, merged.start, key));
                list.push(merged);
                list.sort_by_key(|s| s.start);
            }
        }
        Ok(true)
    }

    /// Removes and returns the results of every window closed at `watermark`, by end, then
    /// start, then group key.
    fn close(&mut self, window: &WindowSpec, spec: &ReduceSpec, watermark: i64) -> Vec<Record> {
        let lateness = ms(window.allowed_lateness_ms);
        let mut out = Vec::new();
        while let Some(((end, start), _)) = self.windows.first_key_value() {
            let (end, start) = (*end, *start);
            if end.saturating_add(lateness) > watermark {
                break;
            }
            if let Some((_, groups)) = self.windows.pop_first() {
                for (key, group) in groups {
                    out.push(window_result(spec, start, end, &key, group));
                }
            }
        }
        while let Some((end, _, _)) = self.ends.first() {
            if end.saturating_add(lateness) > watermark {
                break;
            }
            let Some((end, start, key)) = self.ends.pop_first() else {
                break;
            };
            let Some(list) = self.sessions.get_mut(&key) else {
                continue;
            };
            if let Some(i) = list.iter().position(|s| s.start == start && s.end == end) {
                let session = list.remove(i);
                out.push(window_result(spec, start, end, &key, session.group));
            }
            if list.is_empty() {
                self.sessions.remove(&key);
            }
        }
        out
    }
}

impl RunningGroups {
    fn add(&mut self, spec: &ReduceSpec, record: Record) -> Result<Record, String> {
        let values = group_values(spec, &record);
        let key = group_key(&values);
        match self.groups.get(&key) {
            Some(group) => group.check(spec, &record)?,
            None if self.groups.len() >= MAX_GROUPS => {
                return Err(format!("more than {MAX_GROUPS} groups"));
            }
            None => {}
        }
        self.seq = self.seq.saturating_add(1);
        let group = self
            .groups
            .entry(key.clone())
            .or_insert_with(|| Group::new(spec, values, record.source.clone()));
        group.add(spec, &record, self.seq);
        Ok(Record {
            payload: Value::Object(group.payload(spec)),
            origin: format!("{}/group/{key}", record.origin),
            source: record.source,
        })
    }
}

fn key_of(fields: &[FieldPath], record: &Record) -> String {
    Value::Array(
        fields
            .iter()
            .map(|p| p.get(record).unwrap_or(Value::Null))
            .collect(),
    )
    .to_string()
}

impl KeyTimes {
    /// Whether the record passes (its key was not seen within `within_ms`).
    fn pass(&mut self, key: String, t: i64, within_ms: u64) -> bool {
        let within = ms(within_ms);
        while let Some((t0, _)) = self.order.first() {
            if t0.saturating_add(within) > t {
                break;
            }
            if let Some((_, k)) = self.order.pop_first() {
                self.at.remove(&k);
            }
        }
        if let Some(t0) = self.at.get(&key)
            && t.saturating_sub(*t0) < within
        {
            return false;
        }
        if let Some(t0) = self.at.insert(key.clone(), t) {
            self.order.remove(&(t0, key.clone()));
        }
        self.order.insert((t, key));
        while self.at.len() > MAX_KEYS {
            if let Some((_, k)) = self.order.pop_first() {
                self.at.remove(&k);
            }
        }
        true
    }
}

impl KeyCounts {
    /// Whether the record passes (fewer than `max` passed in its key's current window).
    fn pass(&mut self, key: String, t: i64, max: u64, per_ms: u64) -> bool {
        let w = t.div_euclid(ms(per_ms).max(1));
        while let Some((w0, _)) = self.order.first() {
            if *w0 >= w {
                break;
            }
            if let Some((_, k)) = self.order.pop_first() {
                self.counts.remove(&k);
            }
        }
        match self.counts.get_mut(&key) {
            Some((w0, n)) if *w0 == w => {
                if *n >= max {
                    return false;
                }
                *n = n.saturating_add(1);
                true
            }
            // An older window than the key's current one (records out of time order): it
            // passes without being counted.
            Some((w0, _)) if *w0 > w => true,
            _ => {
                if let Some((w0, _)) = self.counts.insert(key.clone(), (w, 1)) {
                    self.order.remove(&(w0, key.clone()));
                }
                self.order.insert((w, key));
                while self.counts.len() > MAX_KEYS {
                    if let Some((_, k)) = self.order.pop_first() {
                        self.counts.remove(&k);
                    }
                }
                true
            }
        }
    }
}

/// The window before operator `index`, when `index` is a reduce right after one.
fn window_before(definition: &PipelineDefinition, index: usize) -> Option<&WindowSpec> {
    match definition.operators.get(index.checked_sub(1)?) {
        Some(Operator::Window(w)) => Some(w),
        _ => None,
    }
}

fn fresh(definition: &PipelineDefinition, index: usize) -> OperatorState {
    match definition.operators.get(index) {
        Some(Operator::Dedupe { .. }) => OperatorState::Dedupe(KeyTimes::default()),
        Some(Operator::Throttle { .. }) => OperatorState::Throttle(KeyCounts::default()),
        Some(Operator::Reduce(_)) if window_before(definition, index).is_some() => {
            OperatorState::Windows(OpenWindows::default())
        }
        Some(Operator::Reduce(_)) => OperatorState::Groups(RunningGroups::default()),
        _ => OperatorState::Stateless,
    }
}

fn fits(state: &OperatorState, fresh: &OperatorState) -> bool {
    std::mem::discriminant(state) == std::mem::discriminant(fresh)
}

impl PipelineState {
    /// The empty state of a definition.
    pub fn new(definition: &PipelineDefinition) -> Self {
        Self {
            operators: (0..definition.operators.len())
                .map(|i| fresh(definition, i))
                .collect(),
            watermark_ms: None,
        }
    }

    /// The state of operator `index`, reset if it does not belong to that operator (a state
    /// written for another definition).
    fn slot(&mut self, definition: &PipelineDefinition, index: usize) -> &mut OperatorState {
        if self.operators.len() != definition.operators.len() {
            self.operators
                .resize(definition.operators.len(), OperatorState::Stateless);
        }
        let expected = fresh(definition, index);
        if !fits(&self.operators[index], &expected) {
            self.operators[index] = expected;
        }
        &mut self.operators[index]
    }

    /// Applies operator `index` (anything but `enrich` and `branch`) to `records`; what comes
    /// out goes on to operator `index + 1`.
    pub fn apply(
        &mut self,
        definition: &PipelineDefinition,
        index: usize,
        records: Vec<Record>,
        effects: &mut Effects,
    ) -> Vec<Record> {
        let Some(operator) = definition.operators.get(index) else {
            return records;
        };
        let fail = |effects: &mut Effects, message: String| {
            effects.errors.push(OperatorError {
                operator: index,
                message,
            });
        };
        let mut out = Vec::with_capacity(records.len());
        match operator {
            Operator::Enrich(_) | Operator::Branch(_) => return records,
            Operator::Filter(condition) => {
                for record in records {
                    if condition.matches(&record) {
                        out.push(record);
                    } else {
                        effects.filtered = effects.filtered.saturating_add(1);
                    }
                }
            }
            Operator::Map(map) => {
                for mut record in records {
                    match map.apply(&mut record) {
                        Ok(()) => out.push(record),
                        Err(e) => fail(effects, e),
                    }
                }
            }
            Operator::FlatMap { field } => {
                for record in records {
                    match flat_map(field, record) {
                        Ok(items) if items.is_empty() => {
                            effects.filtered = effects.filtered.saturating_add(1);
                        }
                        Ok(items) => out.extend(items),
                        Err(e) => fail(effects, e),
                    }
                }
            }
            Operator::Dedupe {
                key_fields,
                within_ms,
            } => {
                let OperatorState::Dedupe(seen) = self.slot(definition, index) else {
                    return records;
                };
                for record in records {
                    let key = key_of(key_fields, &record);
                    if seen.pass(key, record.source.time_ms(), *within_ms) {
                        out.push(record);
                    } else {
                        effects.filtered = effects.filtered.saturating_add(1);
                    }
                }
            }
            Operator::Throttle {
                per_key,
                max,
                per_ms,
            } => {
                let OperatorState::Throttle(counts) = self.slot(definition, index) else {
                    return records;
                };
                for record in records {
                    let key = key_of(per_key, &record);
                    if counts.pass(key, record.source.time_ms(), *max, *per_ms) {
                        out.push(record);
                    } else {
                        effects.filtered = effects.filtered.saturating_add(1);
                    }
                }
            }
            Operator::Window(window) => {
                for record in records {
                    match record_time(&window.time_field, &record) {
                        Ok(_) => out.push(record),
                        Err(e) => fail(effects, e),
                    }
                }
            }
            Operator::Reduce(spec) => match window_before(definition, index) {
                Some(window) => {
                    let mut watermark = self.watermark_ms;
                    let OperatorState::Windows(open) = self.slot(definition, index) else {
                        return records;
                    };
                    for record in records {
                        let t = match record_time(&window.time_field, &record) {
                            Ok(t) => t,
                            Err(message) => {
                                effects.errors.push(OperatorError {
                                    operator: index - 1,
                                    message,
                                });
                                continue;
                            }
                        };
                        match open.add(window, spec, &record, t, watermark) {
                            Ok(true) => {}
                            Ok(false) => effects.late = effects.late.saturating_add(1),
                            Err(e) => fail(effects, e),
                        }
                        let wm = watermark.map_or(t, |wm| wm.max(t));
                        watermark = Some(wm);
                        out.extend(open.close(window, spec, wm));
                    }
                    self.watermark_ms = watermark;
                }
                None => {
                    let OperatorState::Groups(groups) = self.slot(definition, index) else {
                        return records;
                    };
                    for record in records {
                        match groups.add(spec, record) {
                            Ok(result) => out.push(result),
                            Err(e) => fail(effects, e),
                        }
                    }
                }
            },
        }
        out
    }

    /// The clock says `now`: closes the windows whose end plus allowed lateness has passed, when
    /// the window's time is `@timestamp` (server-assigned, so no later event can belong to
    /// them). Returns the index of the window's `reduce` and the results, which go on to the
    /// operator at that index + 1.
    pub fn advance(
        &mut self,
        definition: &PipelineDefinition,
        now: DateTime<Utc>,
    ) -> Option<(usize, Vec<Record>)> {
        let (index, window, spec) =
            definition
                .operators
                .windows(2)
                .enumerate()
                .find_map(|(i, pair)| match pair {
                    [Operator::Window(w), Operator::Reduce(r)] => Some((i + 1, w, r)),
                    _ => None,
                })?;
        if window.time_field != FieldPath::Attribute(Attribute::Timestamp) {
            return None;
        }
        let now_ms = now.timestamp_millis();
        let wm = self.watermark_ms.map_or(now_ms, |wm| wm.max(now_ms));
        self.watermark_ms = Some(wm);
        let OperatorState::Windows(open) = self.slot(definition, index) else {
            return None;
        };
        let results = open.close(window, spec, wm);
        (!results.is_empty()).then_some((index, results))
    }
}
