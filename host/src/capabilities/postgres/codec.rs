//! Guest values to and from PostgreSQL's binary wire format.
//!
//! Parameters are encoded for the type the *server* inferred for each `$n` (the
//! statement is prepared first, and sqlx caches that per connection), so a guest
//! can pass an `int64` to an `int4` column, or the text of a numeric, uuid or
//! json value, and the server never has to guess. Results arrive in binary
//! format and are decoded by the column's type OID.
//!
//! This file holds what both directions share (the type OIDs, the epochs, the
//! guest-memory estimate); `encode` and `decode` are the two directions, and
//! `numeric` the one type whose binary form is a small codec of its own.

use super::Value;
use sqlx::postgres::{PgTypeInfo, PgTypeKind};

mod decode;
mod encode;
mod numeric;

pub use decode::Decoder;
pub use encode::encode;
pub use numeric::numeric_from_binary;

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

/// The OID the server uses for `ty`, treating enums as their text labels.
fn oid_of(ty: &PgTypeInfo) -> Option<u32> {
    ty.oid().map(|o| o.0)
}

fn is_enum(ty: &PgTypeInfo) -> bool {
    matches!(ty.kind(), PgTypeKind::Enum(_))
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

#[cfg(test)]
mod tests {
    use super::decode::{Elem, format_uuid};
    use super::encode::{parse_uuid, try_array};
    use super::numeric::{numeric_from_binary, numeric_to_binary};
    use super::*;

    /// Found by the `postgres_codec` fuzz target: an oid is unsigned, so -16127
    /// was sent as oid 4294951169 (and 3000000000 refused as out of int4 range).
    #[test]
    fn an_oid_parameter_is_unsigned_and_never_wraps() {
        let sent = |v: i64| super::encode::encode_scalar(&Value::Int64(v), OID).unwrap();
        assert!(sent(-16127).is_err());
        assert_eq!(sent(3_000_000_000).unwrap(), 3_000_000_000u32.to_be_bytes());
        assert!(sent(1 << 32).is_err());
        match Decoder::Oid.decode(&sent(4_294_967_295).unwrap()).unwrap() {
            Value::Int64(v) => assert_eq!(v, 4_294_967_295),
            other => panic!("{other:?}"),
        }
    }

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

    #[test]
    fn uuids_and_arrays_round_trip() {
        let id = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        assert_eq!(format_uuid(&parse_uuid(id).unwrap()).unwrap(), id);
        assert!(parse_uuid("not-a-uuid").is_err());
        let bin = try_array(INT4, &[Some(1i32), None, Some(-3)], |i| {
            Ok::<_, String>(i.to_be_bytes().to_vec())
        })
        .unwrap();
        match Decoder::Array(Elem::Int4).decode(&bin).unwrap() {
            Value::Int32Array(a) => assert_eq!(a, vec![Some(1), None, Some(-3)]),
            other => panic!("{other:?}"),
        }
    }
}
