//! Arrow values as JSON: the answer of a statement as the port's [`Table`].
//!
//! Integers and floats become JSON numbers (non-finite floats become `null`, JSON has no
//! NaN), booleans booleans, text text, timestamps RFC 3339 text in UTC with microseconds,
//! dates `YYYY-MM-DD`, lists JSON arrays; anything else (lists, structs, intervals, binary) is shown as Arrow
//! formats it, as text.

use allsource_application::ports::{SqlError, Table};
use arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, Float32Array, Float64Array, Int8Array, Int16Array,
    Int32Array, Int64Array, LargeStringArray, ListArray, RecordBatch, StringArray, StringViewArray,
    TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
    TimestampSecondArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Schema, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

/// The batches as a table; more than `max_rows` rows is [`SqlError::TooManyRows`].
pub fn table_of(
    schema: &Schema,
    batches: &[RecordBatch],
    max_rows: usize,
) -> Result<Table, SqlError> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if total > max_rows {
        return Err(SqlError::TooManyRows(max_rows));
    }
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut rows: Vec<Vec<Value>> = Vec::with_capacity(total);
    for batch in batches {
        let start = rows.len();
        rows.extend((0..batch.num_rows()).map(|_| Vec::with_capacity(columns.len())));
        for column in batch.columns() {
            let values = column_values(column)?;
            for (row, value) in rows[start..].iter_mut().zip(values) {
                row.push(value);
            }
        }
    }
    Ok(Table { columns, rows })
}

macro_rules! numbers {
    ($array:expr, $kind:ty) => {{
        let a = $array
            .as_any()
            .downcast_ref::<$kind>()
            .ok_or_else(|| mismatch($array))?;
        a.iter()
            .map(|v| v.map_or(Value::Null, |v| Value::from(v)))
            .collect()
    }};
}

fn mismatch(array: &ArrayRef) -> SqlError {
    SqlError::Internal(anyhow::anyhow!(
        "a column of type {} has an unexpected layout",
        array.data_type()
    ))
}

fn float(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

fn time(micros: Option<i64>) -> Value {
    micros
        .and_then(DateTime::<Utc>::from_timestamp_micros)
        .map_or(Value::Null, |t| {
            Value::String(t.to_rfc3339_opts(SecondsFormat::Micros, true))
        })
}

/// One column's values as JSON.
pub fn column_values(array: &ArrayRef) -> Result<Vec<Value>, SqlError> {
    let values: Vec<Value> = match array.data_type() {
        DataType::Null => vec![Value::Null; array.len()],
        DataType::Boolean => numbers!(array, BooleanArray),
        DataType::Int8 => numbers!(array, Int8Array),
        DataType::Int16 => numbers!(array, Int16Array),
        DataType::Int32 => numbers!(array, Int32Array),
        DataType::Int64 => numbers!(array, Int64Array),
        DataType::UInt8 => numbers!(array, UInt8Array),
        DataType::UInt16 => numbers!(array, UInt16Array),
        DataType::UInt32 => numbers!(array, UInt32Array),
        DataType::UInt64 => numbers!(array, UInt64Array),
        DataType::Float32 => {
            let a = array
                .as_any()
                .downcast_ref::<Float32Array>()
                .ok_or_else(|| mismatch(array))?;
            a.iter()
                .map(|v| v.map_or(Value::Null, |v| float(f64::from(v))))
                .collect()
        }
        DataType::Float64 => {
            let a = array
                .as_any()
                .downcast_ref::<Float64Array>()
                .ok_or_else(|| mismatch(array))?;
            a.iter().map(|v| v.map_or(Value::Null, float)).collect()
        }
        DataType::Utf8 => text(
            array
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| mismatch(array))?
                .iter(),
        ),
        DataType::LargeUtf8 => text(
            array
                .as_any()
                .downcast_ref::<LargeStringArray>()
                .ok_or_else(|| mismatch(array))?
                .iter(),
        ),
        DataType::Utf8View => text(
            array
                .as_any()
                .downcast_ref::<StringViewArray>()
                .ok_or_else(|| mismatch(array))?
                .iter(),
        ),
        DataType::Timestamp(unit, _) => {
            let micros: Vec<Option<i64>> = match unit {
                TimeUnit::Second => array
                    .as_any()
                    .downcast_ref::<TimestampSecondArray>()
                    .ok_or_else(|| mismatch(array))?
                    .iter()
                    .map(|v| v.and_then(|s| s.checked_mul(1_000_000)))
                    .collect(),
                TimeUnit::Millisecond => array
                    .as_any()
                    .downcast_ref::<TimestampMillisecondArray>()
                    .ok_or_else(|| mismatch(array))?
                    .iter()
                    .map(|v| v.and_then(|s| s.checked_mul(1000)))
                    .collect(),
                TimeUnit::Microsecond => array
                    .as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .ok_or_else(|| mismatch(array))?
                    .iter()
                    .collect(),
                TimeUnit::Nanosecond => array
                    .as_any()
                    .downcast_ref::<TimestampNanosecondArray>()
                    .ok_or_else(|| mismatch(array))?
                    .iter()
                    .map(|v| v.map(|n| n.div_euclid(1000)))
                    .collect(),
            };
            micros.into_iter().map(time).collect()
        }
        DataType::Date32 => {
            let a = array
                .as_any()
                .downcast_ref::<Date32Array>()
                .ok_or_else(|| mismatch(array))?;
            (0..a.len())
                .map(|i| {
                    if a.is_null(i) {
                        Value::Null
                    } else {
                        a.value_as_date(i)
                            .map_or(Value::Null, |d| Value::String(d.to_string()))
                    }
                })
                .collect()
        }
        DataType::List(_) => {
            let a = array
                .as_any()
                .downcast_ref::<ListArray>()
                .ok_or_else(|| mismatch(array))?;
            let mut out = Vec::with_capacity(a.len());
            for i in 0..a.len() {
                out.push(if a.is_null(i) {
                    Value::Null
                } else {
                    Value::Array(column_values(&a.value(i))?)
                });
            }
            out
        }
        _ => {
            let formatter = ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default())
                .map_err(|e| SqlError::Internal(anyhow::anyhow!("{e}")))?;
            (0..array.len())
                .map(|i| {
                    if array.is_null(i) {
                        Value::Null
                    } else {
                        Value::String(formatter.value(i).to_string())
                    }
                })
                .collect()
        }
    };
    Ok(values)
}

fn text<'a>(values: impl Iterator<Item = Option<&'a str>>) -> Vec<Value> {
    values
        .map(|v| v.map_or(Value::Null, |s| Value::String(s.to_owned())))
        .collect()
}
