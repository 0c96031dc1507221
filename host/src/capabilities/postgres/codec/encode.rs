//! Guest values to parameters: each value is encoded for the type the server
//! inferred for its `$n`, so an `int64` can go to an `int4` column (range
//! checked) and the text of a numeric, uuid or json value needs no cast.
//! `None` from `encode_scalar` means "this value cannot be that type", which
//! becomes the guest's mismatch error naming both.

use super::numeric::numeric_to_binary;
use super::*;
use sqlx::{
    encode::IsNull,
    error::BoxDynError,
    postgres::{PgArgumentBuffer, Postgres, types::Oid},
};
use std::convert::Infallible;

/// One encoded parameter, declared with the type the server expects.
pub struct Param {
    oid: u32,
    bytes: Option<Vec<u8>>,
}

impl sqlx::Type<Postgres> for Param {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(TEXT))
    }
    fn compatible(_: &PgTypeInfo) -> bool {
        true
    }
}

impl sqlx::encode::Encode<'_, Postgres> for Param {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        match &self.bytes {
            Some(bytes) => {
                buf.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }
    fn produces(&self) -> Option<PgTypeInfo> {
        Some(PgTypeInfo::with_oid(Oid(self.oid)))
    }
    fn size_hint(&self) -> usize {
        self.bytes.as_ref().map_or(0, Vec::len)
    }
}

/// Encodes `value` for a parameter the server typed as `target`.
pub fn encode(value: &Value, target: &PgTypeInfo) -> Result<Param, String> {
    let oid = oid_of(target).unwrap_or(0);
    if matches!(value, Value::Null) {
        return Ok(Param { oid, bytes: None });
    }
    let bytes = if is_enum(target) {
        match value {
            Value::Text(s) => s.as_bytes().to_vec(),
            other => return Err(mismatch(other, target)),
        }
    } else {
        encode_scalar(value, oid).ok_or_else(|| mismatch(value, target))??
    };
    Ok(Param {
        oid,
        bytes: Some(bytes),
    })
}

fn mismatch(value: &Value, target: &PgTypeInfo) -> String {
    format!(
        "a {} value cannot be sent as {} (cast the parameter in SQL, e.g. $1::text)",
        kind_name(value),
        target.to_string().to_lowercase()
    )
}

/// `None`: the value cannot become this type; `Some(Err)`: it could, but is malformed.
pub(super) fn encode_scalar(value: &Value, oid: u32) -> Option<Result<Vec<u8>, String>> {
    use Value as V;
    let int = |v: &Value| -> Option<i64> {
        match *v {
            V::Int16(i) => Some(i.into()),
            V::Int32(i) => Some(i.into()),
            V::Int64(i) => Some(i),
            _ => None,
        }
    };
    let range = |i: i64, min: i64, max: i64, ty: &str| -> Result<i64, String> {
        if (min..=max).contains(&i) {
            Ok(i)
        } else {
            Err(format!("{i} is out of range for {ty}"))
        }
    };
    Some(Ok(match (oid, value) {
        (BOOL, V::Boolean(b)) => vec![u8::from(*b)],
        (INT2, v) => match range(int(v)?, i16::MIN.into(), i16::MAX.into(), "int2") {
            Ok(i) => (i as i16).to_be_bytes().to_vec(),
            Err(e) => return Some(Err(e)),
        },
        (INT4, v) => match range(int(v)?, i32::MIN.into(), i32::MAX.into(), "int4") {
            Ok(i) => (i as i32).to_be_bytes().to_vec(),
            Err(e) => return Some(Err(e)),
        },
        (OID, v) => match range(int(v)?, 0, u32::MAX.into(), "oid") {
            Ok(i) => (i as u32).to_be_bytes().to_vec(),
            Err(e) => return Some(Err(e)),
        },
        (INT8, v) => int(v)?.to_be_bytes().to_vec(),
        (FLOAT4, V::Float32(f)) => f.to_be_bytes().to_vec(),
        (FLOAT4, V::Float64(f)) => (*f as f32).to_be_bytes().to_vec(),
        (FLOAT8, V::Float32(f)) => f64::from(*f).to_be_bytes().to_vec(),
        (FLOAT8, V::Float64(f)) => f.to_be_bytes().to_vec(),
        (FLOAT4, v) => (int(v)? as f32).to_be_bytes().to_vec(),
        (FLOAT8, v) => (int(v)? as f64).to_be_bytes().to_vec(),
        (NUMERIC, V::Numeric(s) | V::Text(s)) => return Some(numeric_to_binary(s)),
        (NUMERIC, v) => return Some(numeric_to_binary(&int(v)?.to_string())),
        (
            TEXT | VARCHAR | BPCHAR | NAME | UNKNOWN | XML | CHAR,
            V::Text(s) | V::Numeric(s) | V::Uuid(s),
        ) => s.as_bytes().to_vec(),
        (BYTEA, V::Bytea(b)) => b.clone(),
        (JSON, V::Json(s) | V::Jsonb(s) | V::Text(s)) => s.as_bytes().to_vec(),
        (JSONB, V::Json(s) | V::Jsonb(s) | V::Text(s)) => {
            let mut out = Vec::with_capacity(s.len() + 1);
            out.push(1); // jsonb binary format version
            out.extend_from_slice(s.as_bytes());
            out
        }
        (UUID, V::Uuid(s) | V::Text(s)) => return Some(parse_uuid(s).map(|u| u.to_vec())),
        (DATE, V::Date(d)) => d.wrapping_sub(PG_EPOCH_DAYS).to_be_bytes().to_vec(),
        (TIMESTAMP, V::Timestamp(t) | V::Timestamptz(t))
        | (TIMESTAMPTZ, V::Timestamp(t) | V::Timestamptz(t)) => {
            t.wrapping_sub(PG_EPOCH_MICROS).to_be_bytes().to_vec()
        }
        (BOOL_ARRAY, V::BooleanArray(a)) => array(BOOL, a, |b| Ok(vec![u8::from(*b)])),
        (INT2_ARRAY, V::Int16Array(a)) => array(INT2, a, |i| Ok(i.to_be_bytes().to_vec())),
        (INT4_ARRAY, V::Int32Array(a)) => array(INT4, a, |i| Ok(i.to_be_bytes().to_vec())),
        (INT4_ARRAY, V::Int16Array(a)) => {
            array(INT4, a, |i| Ok(i32::from(*i).to_be_bytes().to_vec()))
        }
        (INT8_ARRAY, V::Int64Array(a)) => array(INT8, a, |i| Ok(i.to_be_bytes().to_vec())),
        (INT8_ARRAY, V::Int32Array(a)) => {
            array(INT8, a, |i| Ok(i64::from(*i).to_be_bytes().to_vec()))
        }
        (FLOAT4_ARRAY, V::Float32Array(a)) => array(FLOAT4, a, |f| Ok(f.to_be_bytes().to_vec())),
        (FLOAT8_ARRAY, V::Float64Array(a)) => array(FLOAT8, a, |f| Ok(f.to_be_bytes().to_vec())),
        (TEXT_ARRAY | VARCHAR_ARRAY | BPCHAR_ARRAY, V::TextArray(a)) => {
            let elem = match oid {
                VARCHAR_ARRAY => VARCHAR,
                BPCHAR_ARRAY => BPCHAR,
                _ => TEXT,
            };
            array(elem, a, |s| Ok(s.as_bytes().to_vec()))
        }
        (UUID_ARRAY, V::UuidArray(a) | V::TextArray(a)) => {
            return Some(try_array(UUID, a, |s: &String| {
                parse_uuid(s).map(|u| u.to_vec())
            }));
        }
        _ => return None,
    }))
}

/// [`try_array`] with an element encoder that cannot fail (the type says so).
fn array<T>(
    elem: u32,
    items: &[Option<T>],
    f: impl Fn(&T) -> Result<Vec<u8>, Infallible>,
) -> Vec<u8> {
    match try_array(elem, items, f) {
        Ok(bytes) => bytes,
        Err(never) => match never {},
    }
}

/// A one-dimensional array in PostgreSQL's binary array format.
pub(super) fn try_array<T, E>(
    elem: u32,
    items: &[Option<T>],
    f: impl Fn(&T) -> Result<Vec<u8>, E>,
) -> Result<Vec<u8>, E> {
    let mut out = Vec::with_capacity(20 + items.len() * 8);
    let has_null = items.iter().any(Option::is_none);
    out.extend_from_slice(&1i32.to_be_bytes()); // dimensions
    out.extend_from_slice(&i32::from(has_null).to_be_bytes());
    out.extend_from_slice(&elem.to_be_bytes());
    out.extend_from_slice(&(items.len() as i32).to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes()); // lower bound
    for item in items {
        match item {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                let bytes = f(v)?;
                out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                out.extend_from_slice(&bytes);
            }
        }
    }
    Ok(out)
}

pub(super) fn parse_uuid(s: &str) -> Result<[u8; 16], String> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let bad = || format!("{s:?} is not a uuid");
    if hex.len() != 32 {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(out)
}

fn kind_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Boolean(_) => "boolean",
        Value::Int16(_) => "int16",
        Value::Int32(_) => "int32",
        Value::Int64(_) => "int64",
        Value::Float32(_) => "float32",
        Value::Float64(_) => "float64",
        Value::Numeric(_) => "numeric",
        Value::Text(_) => "text",
        Value::Bytea(_) => "bytea",
        Value::Json(_) => "json",
        Value::Jsonb(_) => "jsonb",
        Value::Uuid(_) => "uuid",
        Value::Date(_) => "date",
        Value::Timestamp(_) => "timestamp",
        Value::Timestamptz(_) => "timestamptz",
        Value::BooleanArray(_) => "boolean-array",
        Value::Int16Array(_) => "int16-array",
        Value::Int32Array(_) => "int32-array",
        Value::Int64Array(_) => "int64-array",
        Value::Float32Array(_) => "float32-array",
        Value::Float64Array(_) => "float64-array",
        Value::TextArray(_) => "text-array",
        Value::UuidArray(_) => "uuid-array",
    }
}
