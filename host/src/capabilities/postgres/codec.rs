//! Guest values to and from PostgreSQL's binary wire format.
//!
//! Parameters are encoded for the type the *server* inferred for each `$n` (the
//! statement is prepared first, and sqlx caches that per connection), so a guest
//! can pass an `int64` to an `int4` column, or the text of a numeric, uuid or
//! json value, and the server never has to guess. Results arrive in binary
//! format and are decoded by the column's type OID.

use super::Value;
use sqlx::{
    encode::IsNull,
    error::BoxDynError,
    postgres::{PgArgumentBuffer, PgTypeInfo, PgTypeKind, Postgres, types::Oid},
};
use std::fmt::Write as _;

// Type OIDs from PostgreSQL's pg_type.dat (stable for built-in types).
const BOOL: u32 = 16;
const BYTEA: u32 = 17;
const CHAR: u32 = 18;
const NAME: u32 = 19;
const INT8: u32 = 20;
const INT2: u32 = 21;
const INT4: u32 = 23;
const TEXT: u32 = 25;
const OID: u32 = 26;
const JSON: u32 = 114;
const XML: u32 = 142;
const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;
const UNKNOWN: u32 = 705;
const BPCHAR: u32 = 1042;
const VARCHAR: u32 = 1043;
const DATE: u32 = 1082;
const TIMESTAMP: u32 = 1114;
const TIMESTAMPTZ: u32 = 1184;
const NUMERIC: u32 = 1700;
const UUID: u32 = 2950;
const VOID: u32 = 2278;
const JSONB: u32 = 3802;

const BOOL_ARRAY: u32 = 1000;
const INT2_ARRAY: u32 = 1005;
const INT4_ARRAY: u32 = 1007;
const TEXT_ARRAY: u32 = 1009;
const BPCHAR_ARRAY: u32 = 1014;
const VARCHAR_ARRAY: u32 = 1015;
const INT8_ARRAY: u32 = 1016;
const FLOAT4_ARRAY: u32 = 1021;
const FLOAT8_ARRAY: u32 = 1022;
const UUID_ARRAY: u32 = 2951;

/// PostgreSQL counts dates and timestamps from 2000-01-01; the guest from 1970.
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

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

/// The OID the server uses for `ty`, treating enums as their text labels.
fn oid_of(ty: &PgTypeInfo) -> Option<u32> {
    ty.oid().map(|o| o.0)
}

fn is_enum(ty: &PgTypeInfo) -> bool {
    matches!(ty.kind(), PgTypeKind::Enum(_))
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
fn encode_scalar(value: &Value, oid: u32) -> Option<Result<Vec<u8>, String>> {
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

fn array<T>(elem: u32, items: &[Option<T>], f: impl Fn(&T) -> Result<Vec<u8>, String>) -> Vec<u8> {
    try_array(elem, items, f).expect("infallible element encoder")
}

/// A one-dimensional array in PostgreSQL's binary array format.
fn try_array<T>(
    elem: u32,
    items: &[Option<T>],
    f: impl Fn(&T) -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, String> {
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

fn parse_uuid(s: &str) -> Result<[u8; 16], String> {
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

fn format_uuid(b: &[u8]) -> Result<String, String> {
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

const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

/// Decimal text ("-12.50", "NaN", "Infinity") to PostgreSQL's binary numeric:
/// base-10000 digit groups, a weight, a sign and the display scale.
pub fn numeric_to_binary(text: &str) -> Result<Vec<u8>, String> {
    let header = |ndigits: u16, weight: i16, sign: u16, dscale: u16| {
        let mut out = Vec::with_capacity(8);
        out.extend_from_slice(&ndigits.to_be_bytes());
        out.extend_from_slice(&weight.to_be_bytes());
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
        out
    };
    let t = text.trim();
    match t.to_ascii_lowercase().as_str() {
        "nan" => return Ok(header(0, 0, NUMERIC_NAN, 0)),
        "infinity" | "+infinity" => return Ok(header(0, 0, NUMERIC_PINF, 0)),
        "-infinity" => return Ok(header(0, 0, NUMERIC_NINF, 0)),
        _ => {}
    }
    let bad = || format!("{text:?} is not a decimal number");
    let (negative, unsigned) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int_part, frac_part) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part
            .bytes()
            .chain(frac_part.bytes())
            .all(|b| b.is_ascii_digit())
        || frac_part.len() > 16383
    {
        return Err(bad());
    }
    let int_part = int_part.trim_start_matches('0');
    // Pad the integer part on the left and the fraction on the right to whole groups.
    let int_pad = (4 - int_part.len() % 4) % 4;
    let frac_pad = (4 - frac_part.len() % 4) % 4;
    let digits: String = "0".repeat(int_pad) + int_part + frac_part + &"0".repeat(frac_pad);
    let mut groups: Vec<i16> = digits
        .as_bytes()
        .chunks(4)
        .map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + i16::from(d - b'0')))
        .collect();
    let mut weight = ((int_pad + int_part.len()) / 4) as i32 - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    if groups.len() > u16::MAX as usize || !(-(i16::MAX as i32)..=i16::MAX as i32).contains(&weight)
    {
        return Err(bad());
    }
    let sign = if negative && !groups.is_empty() {
        NUMERIC_NEG
    } else {
        0
    };
    let mut out = header(
        groups.len() as u16,
        weight as i16,
        sign,
        frac_part.len() as u16,
    );
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Ok(out)
}

/// PostgreSQL's binary numeric back to its exact decimal text.
pub fn numeric_from_binary(b: &[u8]) -> Result<String, String> {
    let bad = || "malformed numeric".to_string();
    let u16_at = |i: usize| {
        b.get(i..i + 2)
            .map(|s| u16::from_be_bytes([s[0], s[1]]))
            .ok_or_else(bad)
    };
    let ndigits = u16_at(0)? as usize;
    let weight = u16_at(2)? as i16 as i32;
    let sign = u16_at(4)?;
    let dscale = u16_at(6)? as usize;
    match sign {
        NUMERIC_NAN => return Ok("NaN".into()),
        NUMERIC_PINF => return Ok("Infinity".into()),
        NUMERIC_NINF => return Ok("-Infinity".into()),
        _ => {}
    }
    let digits = (0..ndigits)
        .map(|i| u16_at(8 + 2 * i))
        .collect::<Result<Vec<_>, _>>()?;
    let digit = |i: i32| {
        if i >= 0 {
            digits.get(i as usize).copied().unwrap_or(0)
        } else {
            0
        }
    };
    let mut s = String::new();
    if sign == NUMERIC_NEG {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for i in 0..=weight {
            if i == 0 {
                let _ = write!(s, "{}", digit(i));
            } else {
                let _ = write!(s, "{:04}", digit(i));
            }
        }
    }
    if dscale > 0 {
        s.push('.');
        let start = s.len();
        let mut i = weight + 1;
        while s.len() - start < dscale {
            let _ = write!(s, "{:04}", digit(i));
            i += 1;
        }
        s.truncate(start + dscale);
    }
    Ok(s)
}

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

/// Roughly what `value` takes in guest memory once lowered and lifted
/// (the canonical ABI's 16-byte slot plus the guest's own copy and payload).
pub fn guest_size(value: &Value) -> u64 {
    const SLOT: u64 = 48;
    let payload = match value {
        Value::Numeric(s) | Value::Text(s) | Value::Json(s) | Value::Jsonb(s) | Value::Uuid(s) => {
            s.len()
        }
        Value::Bytea(b) => b.len(),
        Value::BooleanArray(a) => a.len() * 2,
        Value::Int16Array(a) => a.len() * 4,
        Value::Int32Array(a) => a.len() * 8,
        Value::Float32Array(a) => a.len() * 8,
        Value::Int64Array(a) => a.len() * 16,
        Value::Float64Array(a) => a.len() * 16,
        Value::TextArray(a) | Value::UuidArray(a) => a
            .iter()
            .map(|s| 12 + s.as_ref().map_or(0, String::len))
            .sum(),
        _ => 0,
    };
    SLOT + payload as u64 * 2
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerics_round_trip_through_the_binary_form() {
        for text in [
            "0",
            "1",
            "-1",
            "12.50",
            "0.0001",
            "0.00001",
            "123456789.987654321",
            "-0.5",
            "10000",
            "1e0x",
        ] {
            match numeric_to_binary(text) {
                Ok(bin) => assert_eq!(numeric_from_binary(&bin).unwrap(), text, "{text}"),
                Err(_) => assert_eq!(text, "1e0x"),
            }
        }
        assert_eq!(
            numeric_from_binary(&numeric_to_binary("007.10").unwrap()).unwrap(),
            "7.10"
        );
        assert_eq!(
            numeric_from_binary(&numeric_to_binary("NaN").unwrap()).unwrap(),
            "NaN"
        );
    }

    /// Found by the `postgres_codec` fuzz target: an oid is unsigned, so -16127
    /// was sent as oid 4294951169 (and 3000000000 refused as out of int4 range).
    #[test]
    fn an_oid_parameter_is_unsigned_and_never_wraps() {
        let sent = |v: i64| encode_scalar(&Value::Int64(v), OID).unwrap();
        assert!(sent(-16127).is_err());
        assert_eq!(sent(3_000_000_000).unwrap(), 3_000_000_000u32.to_be_bytes());
        assert!(sent(1 << 32).is_err());
        match Decoder::Oid.decode(&sent(4_294_967_295).unwrap()).unwrap() {
            Value::Int64(v) => assert_eq!(v, 4_294_967_295),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn uuids_and_arrays_round_trip() {
        let id = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        assert_eq!(format_uuid(&parse_uuid(id).unwrap()).unwrap(), id);
        assert!(parse_uuid("not-a-uuid").is_err());
        let bin = try_array(INT4, &[Some(1i32), None, Some(-3)], |i| {
            Ok(i.to_be_bytes().to_vec())
        })
        .unwrap();
        match Decoder::Array(Elem::Int4).decode(&bin).unwrap() {
            Value::Int32Array(a) => assert_eq!(a, vec![Some(1), None, Some(-3)]),
            other => panic!("{other:?}"),
        }
    }
}
