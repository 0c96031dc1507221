//! Result columns to guest values: a [`Decoder`] is chosen once per statement
//! from each column's type OID (an enum reads as its text label), then decodes
//! every row's binary value. A type this interface does not carry has no
//! decoder, and the query fails naming the column instead of guessing.

use super::numeric::numeric_from_binary;
use super::*;
use std::fmt::Write as _;

/// How one result column is decoded, chosen once per statement.
#[derive(Clone, Copy, Debug)]
pub enum Decoder {
    /// `void` (what `SELECT pg_sleep(1)` returns): always null.
    Void,
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    Numeric,
    Text,
    Bytea,
    Json,
    Jsonb,
    Uuid,
    Date,
    Timestamp,
    Timestamptz,
    Array(Elem),
}

#[derive(Clone, Copy, Debug)]
pub enum Elem {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Text,
    Uuid,
}

impl Decoder {
    /// `None` for a type this interface does not carry.
    pub fn for_type(ty: &PgTypeInfo) -> Option<Decoder> {
        if is_enum(ty) {
            return Some(Decoder::Text);
        }
        Some(match oid_of(ty)? {
            VOID => Decoder::Void,
            BOOL => Decoder::Bool,
            INT2 => Decoder::Int2,
            INT4 => Decoder::Int4,
            INT8 => Decoder::Int8,
            OID => Decoder::Oid,
            FLOAT4 => Decoder::Float4,
            FLOAT8 => Decoder::Float8,
            NUMERIC => Decoder::Numeric,
            TEXT | VARCHAR | BPCHAR | NAME | UNKNOWN | XML | CHAR => Decoder::Text,
            BYTEA => Decoder::Bytea,
            JSON => Decoder::Json,
            JSONB => Decoder::Jsonb,
            UUID => Decoder::Uuid,
            DATE => Decoder::Date,
            TIMESTAMP => Decoder::Timestamp,
            TIMESTAMPTZ => Decoder::Timestamptz,
            BOOL_ARRAY => Decoder::Array(Elem::Bool),
            INT2_ARRAY => Decoder::Array(Elem::Int2),
            INT4_ARRAY => Decoder::Array(Elem::Int4),
            INT8_ARRAY => Decoder::Array(Elem::Int8),
            FLOAT4_ARRAY => Decoder::Array(Elem::Float4),
            FLOAT8_ARRAY => Decoder::Array(Elem::Float8),
            TEXT_ARRAY | VARCHAR_ARRAY | BPCHAR_ARRAY => Decoder::Array(Elem::Text),
            UUID_ARRAY => Decoder::Array(Elem::Uuid),
            _ => return None,
        })
    }

    /// Decodes one non-null value from its binary form.
    pub fn decode(self, b: &[u8]) -> Result<Value, String> {
        Ok(match self {
            Decoder::Void => Value::Null,
            Decoder::Bool => Value::Boolean(fixed::<1>(b)?[0] != 0),
            Decoder::Int2 => Value::Int16(i16::from_be_bytes(fixed(b)?)),
            Decoder::Int4 => Value::Int32(i32::from_be_bytes(fixed(b)?)),
            Decoder::Int8 => Value::Int64(i64::from_be_bytes(fixed(b)?)),
            Decoder::Oid => Value::Int64(u32::from_be_bytes(fixed(b)?).into()),
            Decoder::Float4 => Value::Float32(f32::from_be_bytes(fixed(b)?)),
            Decoder::Float8 => Value::Float64(f64::from_be_bytes(fixed(b)?)),
            Decoder::Numeric => Value::Numeric(numeric_from_binary(b)?),
            Decoder::Text => Value::Text(utf8(b)?),
            Decoder::Bytea => Value::Bytea(b.to_vec()),
            Decoder::Json => Value::Json(utf8(b)?),
            Decoder::Jsonb => match b.split_first() {
                Some((1, rest)) => Value::Jsonb(utf8(rest)?),
                _ => return Err("unknown jsonb format version".into()),
            },
            Decoder::Uuid => Value::Uuid(format_uuid(b)?),
            Decoder::Date => {
                Value::Date(i32::from_be_bytes(fixed(b)?).saturating_add(PG_EPOCH_DAYS))
            }
            Decoder::Timestamp => {
                Value::Timestamp(i64::from_be_bytes(fixed(b)?).saturating_add(PG_EPOCH_MICROS))
            }
            Decoder::Timestamptz => {
                Value::Timestamptz(i64::from_be_bytes(fixed(b)?).saturating_add(PG_EPOCH_MICROS))
            }
            Decoder::Array(elem) => {
                let items = array_items(b)?;
                macro_rules! each {
                    ($variant:ident, $f:expr) => {
                        Value::$variant(
                            items
                                .into_iter()
                                .map(|i| i.map($f).transpose())
                                .collect::<Result<_, String>>()?,
                        )
                    };
                }
                match elem {
                    Elem::Bool => each!(BooleanArray, |b: &[u8]| Ok(fixed::<1>(b)?[0] != 0)),
                    Elem::Int2 => each!(Int16Array, |b: &[u8]| Ok(i16::from_be_bytes(fixed(b)?))),
                    Elem::Int4 => each!(Int32Array, |b: &[u8]| Ok(i32::from_be_bytes(fixed(b)?))),
                    Elem::Int8 => each!(Int64Array, |b: &[u8]| Ok(i64::from_be_bytes(fixed(b)?))),
                    Elem::Float4 => {
                        each!(Float32Array, |b: &[u8]| Ok(f32::from_be_bytes(fixed(b)?)))
                    }
                    Elem::Float8 => {
                        each!(Float64Array, |b: &[u8]| Ok(f64::from_be_bytes(fixed(b)?)))
                    }
                    Elem::Text => each!(TextArray, utf8),
                    Elem::Uuid => each!(UuidArray, format_uuid),
                }
            }
        })
    }
}

fn fixed<const N: usize>(b: &[u8]) -> Result<[u8; N], String> {
    b.try_into()
        .map_err(|_| format!("expected {N} bytes, got {}", b.len()))
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "text that is not UTF-8".to_string())
}

/// The elements of a binary array of at most one dimension.
fn array_items(b: &[u8]) -> Result<Vec<Option<&[u8]>>, String> {
    let bad = || "malformed array".to_string();
    let i32_at = |i: usize| {
        b.get(i..i + 4)
            .map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
            .ok_or_else(bad)
    };
    let ndim = i32_at(0)?;
    if ndim == 0 {
        return Ok(Vec::new());
    }
    if ndim != 1 {
        return Err("multi-dimensional arrays are not carried; unnest them in SQL".into());
    }
    let len = i32_at(12)?.max(0) as usize;
    let mut items = Vec::with_capacity(len.min(b.len() / 4));
    let mut at = 20;
    for _ in 0..len {
        let n = i32_at(at)?;
        at += 4;
        if n < 0 {
            items.push(None);
        } else {
            let end = at + n as usize;
            items.push(Some(b.get(at..end).ok_or_else(bad)?));
            at = end;
        }
    }
    Ok(items)
}

pub(super) fn format_uuid(b: &[u8]) -> Result<String, String> {
    if b.len() != 16 {
        return Err("a uuid must be 16 bytes".into());
    }
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{byte:02x}");
    }
    Ok(s)
}
