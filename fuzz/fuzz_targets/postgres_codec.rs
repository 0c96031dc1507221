//! F3: the PostgreSQL value codec (`host/src/capabilities/postgres/codec.rs`):
//! any guest value encoded for any parameter type the codec knows, and any
//! bytes decoded as any result type. Oracle: no panic, on either side; what is
//! encoded decodes (the host reads back what it would send); a value sent as
//! its own type comes back identical (numerics in their canonical decimal text,
//! uuids lowercased); an integer sent to a narrower or wider integer type
//! arrives with its exact value or is refused, never wrapped; dates and
//! timestamps arrive as the same instant or are refused.
#![no_main]

use alorig_host::capabilities::postgres::{Value, codec};
use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use sqlx::{
    Encode as _,
    postgres::{PgArgumentBuffer, PgTypeInfo, types::Oid},
};
use std::sync::LazyLock;

/// Every type the codec names (OIDs from pg_type.dat), one it does not (point),
/// and an enum (oid 0 here), as sqlx's resolved type infos (xml, which sqlx
/// resolves as a custom type, is left out: it is encoded as text is).
const TYPES: &[(u32, &str)] = &[
    (16, "Bool"),
    (17, "Bytea"),
    (18, "Char"),
    (19, "Name"),
    (20, "Int8"),
    (21, "Int2"),
    (23, "Int4"),
    (25, "Text"),
    (26, "Oid"),
    (114, "Json"),
    (700, "Float4"),
    (701, "Float8"),
    (705, "Unknown"),
    (1042, "Bpchar"),
    (1043, "Varchar"),
    (1082, "Date"),
    (1114, "Timestamp"),
    (1184, "Timestamptz"),
    (1700, "Numeric"),
    (2950, "Uuid"),
    (2278, "Void"),
    (3802, "Jsonb"),
    (1000, "BoolArray"),
    (1005, "Int2Array"),
    (1007, "Int4Array"),
    (1009, "TextArray"),
    (1014, "BpcharArray"),
    (1015, "VarcharArray"),
    (1016, "Int8Array"),
    (1021, "Float4Array"),
    (1022, "Float8Array"),
    (2951, "UuidArray"),
    (600, "Point"),
    (
        0,
        r#"{"Custom":{"name":"mood","kind":{"Enum":["sad","ok"]}}}"#,
    ),
];

/// The type info the server's description of a parameter or column gives: a
/// resolved built-in type (`PgTypeInfo::with_oid` is only a declaration, which
/// sqlx resolves against the server before the host ever sees it). sqlx builds
/// them from the server's OIDs internally; from outside, its serde form
/// (`offline` feature) is the public way in.
static TYPE_INFOS: LazyLock<Vec<(u32, PgTypeInfo)>> = LazyLock::new(|| {
    TYPES
        .iter()
        .map(|(oid, name)| {
            let json = if name.starts_with('{') {
                name.to_string()
            } else {
                format!("{name:?}")
            };
            let ty: PgTypeInfo = serde_json::from_str(&json).expect(name);
            assert_eq!(ty.oid(), Some(Oid(*oid)), "{name}");
            (*oid, ty)
        })
        .collect()
});

/// A guest value as arbitrary data (mirrors `wit/postgres.wit`'s `value`).
#[derive(Arbitrary, Debug)]
enum V {
    Null,
    Boolean(bool),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    Float32(f32),
    Float64(f64),
    Numeric(String),
    /// A decimal built from digits, so most numerics are well-formed.
    Decimal(bool, u64, Option<u64>, u8),
    Text(String),
    Bytea(Vec<u8>),
    Json(String),
    Jsonb(String),
    Uuid(String),
    UuidBytes([u8; 16]),
    Date(i32),
    Timestamp(i64),
    Timestamptz(i64),
    BooleanArray(Vec<Option<bool>>),
    Int16Array(Vec<Option<i16>>),
    Int32Array(Vec<Option<i32>>),
    Int64Array(Vec<Option<i64>>),
    Float32Array(Vec<Option<f32>>),
    Float64Array(Vec<Option<f64>>),
    TextArray(Vec<Option<String>>),
    UuidArray(Vec<Option<String>>),
}

impl V {
    fn value(self) -> Value {
        match self {
            V::Null => Value::Null,
            V::Boolean(b) => Value::Boolean(b),
            V::Int16(i) => Value::Int16(i),
            V::Int32(i) => Value::Int32(i),
            V::Int64(i) => Value::Int64(i),
            V::Float32(f) => Value::Float32(f),
            V::Float64(f) => Value::Float64(f),
            V::Numeric(s) => Value::Numeric(s),
            V::Decimal(negative, int, frac, zeros) => {
                let mut s = String::new();
                if negative {
                    s.push('-');
                }
                s.push_str(&"0".repeat(zeros as usize % 4));
                s.push_str(&int.to_string());
                if let Some(frac) = frac {
                    s.push('.');
                    s.push_str(&"0".repeat(zeros as usize / 64));
                    s.push_str(&frac.to_string());
                }
                Value::Numeric(s)
            }
            V::Text(s) => Value::Text(s),
            V::Bytea(b) => Value::Bytea(b),
            V::Json(s) => Value::Json(s),
            V::Jsonb(s) => Value::Jsonb(s),
            V::Uuid(s) => Value::Uuid(s),
            V::UuidBytes(b) => Value::Uuid(uuid_text(&b)),
            V::Date(d) => Value::Date(d),
            V::Timestamp(t) => Value::Timestamp(t),
            V::Timestamptz(t) => Value::Timestamptz(t),
            V::BooleanArray(a) => Value::BooleanArray(a),
            V::Int16Array(a) => Value::Int16Array(a),
            V::Int32Array(a) => Value::Int32Array(a),
            V::Int64Array(a) => Value::Int64Array(a),
            V::Float32Array(a) => Value::Float32Array(a),
            V::Float64Array(a) => Value::Float64Array(a),
            V::TextArray(a) => Value::TextArray(a),
            V::UuidArray(a) => Value::UuidArray(a),
        }
    }
}

fn uuid_text(b: &[u8; 16]) -> String {
    hyphenated(&b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

/// 32 hex digits as 8-4-4-4-12.
fn hyphenated(hex: &str) -> String {
    let parts = [
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..],
    ];
    parts.join("-")
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let types = &*TYPE_INFOS;
    let (Ok(which), Ok(v), Ok(raw)) = (
        u.int_in_range(0..=types.len() - 1),
        V::arbitrary(&mut u),
        <&[u8]>::arbitrary(&mut u),
    ) else {
        return;
    };
    let (oid, ty) = &types[which];
    let (oid, ty) = (*oid, ty);
    let decoder = codec::Decoder::for_type(ty);

    // Any bytes as a result column of this type: a value or an error, never a panic.
    if let Some(decoder) = decoder
        && let Ok(value) = decoder.decode(raw)
    {
        let _ = codec::guest_size(&value);
    }
    let _ = codec::numeric_from_binary(raw);

    let value = v.value();
    let _ = codec::guest_size(&value);
    let Ok(param) = codec::encode(&value, ty) else {
        return;
    };
    assert_eq!(
        param.produces().and_then(|t| t.oid()),
        Some(Oid(oid)),
        "declared with the server's type"
    );
    let mut buf = PgArgumentBuffer::default();
    let null = param.encode_by_ref(&mut buf).expect("encoding a Param");
    if matches!(value, Value::Null) {
        assert!(matches!(null, sqlx::encode::IsNull::Yes));
        return;
    }
    let bytes: &[u8] = &buf;
    let decoder = decoder.unwrap_or_else(|| panic!("encoded for oid {oid}, which is not decoded"));
    let back = decoder
        .decode(bytes)
        .unwrap_or_else(|e| panic!("{value:?} as oid {oid} does not decode: {e}"));
    check(&value, oid, &back);
});
/// What comes back for `sent`, sent as `oid`.
fn check(sent: &Value, oid: u32, back: &Value) {
    use Value as V;
    let int = |v: &Value| match *v {
        V::Int16(i) => Some(i64::from(i)),
        V::Int32(i) => Some(i64::from(i)),
        V::Int64(i) => Some(i),
        _ => None,
    };
    match (sent, back) {
        // Integers, into any integer type: exact.
        (s, b) if int(s).is_some() && int(b).is_some() => {
            assert_eq!(int(s), int(b), "oid {oid}")
        }
        (V::Float32(s), V::Float32(b)) => assert_eq!(s.to_bits(), b.to_bits()),
        (V::Float64(s), V::Float64(b)) => assert_eq!(s.to_bits(), b.to_bits()),
        (V::Float32(s), V::Float64(b)) => assert_eq!(f64::from(*s).to_bits(), b.to_bits()),
        (V::Float64(s), V::Float32(b)) => assert_eq!((*s as f32).to_bits(), b.to_bits()),
        (s, V::Float32(b)) if int(s).is_some() => assert_eq!(int(s).unwrap() as f32, *b),
        (s, V::Float64(b)) if int(s).is_some() => assert_eq!(int(s).unwrap() as f64, *b),
        (V::Numeric(s) | V::Text(s), V::Numeric(b)) => {
            assert_eq!(Some(b.as_str()), canonical_numeric(s).as_deref(), "{s:?}")
        }
        (s, V::Numeric(b)) if int(s).is_some() => assert_eq!(*b, int(s).unwrap().to_string()),
        (V::Text(s) | V::Numeric(s) | V::Uuid(s), V::Text(b)) => assert_eq!(s, b),
        (V::Json(s) | V::Jsonb(s) | V::Text(s), V::Json(b) | V::Jsonb(b)) => assert_eq!(s, b),
        (V::Uuid(s) | V::Text(s), V::Uuid(b)) => assert_eq!(*b, canonical_uuid(s), "{s:?}"),
        (V::Bytea(s), V::Bytea(b)) => assert_eq!(s, b),
        (V::Boolean(s), V::Boolean(b)) => assert_eq!(s, b),
        (V::Date(s), V::Date(b)) => assert_eq!(s, b, "date"),
        (V::Timestamp(s) | V::Timestamptz(s), V::Timestamp(b) | V::Timestamptz(b)) => {
            assert_eq!(s, b, "timestamp")
        }
        (V::BooleanArray(s), V::BooleanArray(b)) => assert_eq!(s, b),
        (V::Int16Array(s), V::Int16Array(b)) => assert_eq!(s, b),
        (V::Int32Array(s), V::Int32Array(b)) => assert_eq!(s, b),
        (V::Int16Array(s), V::Int32Array(b)) => {
            assert_eq!(s.iter().map(|x| x.map(i32::from)).collect::<Vec<_>>(), *b)
        }
        (V::Int64Array(s), V::Int64Array(b)) => assert_eq!(s, b),
        (V::Int32Array(s), V::Int64Array(b)) => {
            assert_eq!(s.iter().map(|x| x.map(i64::from)).collect::<Vec<_>>(), *b)
        }
        (V::Float32Array(s), V::Float32Array(b)) => {
            let bits =
                |a: &[Option<f32>]| a.iter().map(|x| x.map(f32::to_bits)).collect::<Vec<_>>();
            assert_eq!(bits(s), bits(b))
        }
        (V::Float64Array(s), V::Float64Array(b)) => {
            let bits =
                |a: &[Option<f64>]| a.iter().map(|x| x.map(f64::to_bits)).collect::<Vec<_>>();
            assert_eq!(bits(s), bits(b))
        }
        (V::TextArray(s), V::TextArray(b)) => assert_eq!(s, b),
        (V::UuidArray(s) | V::TextArray(s), V::UuidArray(b)) => {
            let canon: Vec<Option<String>> =
                s.iter().map(|x| x.as_deref().map(canonical_uuid)).collect();
            assert_eq!(canon, *b)
        }
        (s, b) => panic!("{s:?} sent as oid {oid} came back as {b:?}"),
    }
}

/// The exact decimal text PostgreSQL keeps for `text`: no `+`, no leading
/// zeros, the fraction's digits as written (they set the scale), no `-` on zero.
fn canonical_numeric(text: &str) -> Option<String> {
    let t = text.trim();
    match t.to_ascii_lowercase().as_str() {
        "nan" => return Some("NaN".into()),
        "infinity" | "+infinity" => return Some("Infinity".into()),
        "-infinity" => return Some("-Infinity".into()),
        _ => {}
    }
    let (negative, unsigned) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let int = int.trim_start_matches('0');
    let zero = int.is_empty() && frac.bytes().all(|b| b == b'0');
    let mut out = String::new();
    if negative && !zero {
        out.push('-');
    }
    out.push_str(if int.is_empty() { "0" } else { int });
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    Some(out)
}

/// Hyphenated lowercase, as PostgreSQL prints a uuid.
fn canonical_uuid(text: &str) -> String {
    let hex: String = text
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    hyphenated(&hex)
}
