//! Conversions between `serde_json::Value` and the protobuf `google.protobuf.Value`.
//!
//! Task inputs and outputs travel as `google.protobuf.Value`, whose only number type
//! is a double. The server, the CLI and every worker convert through these two
//! functions so that a JSON document survives the round trip the same way everywhere.

use pbjson_types::value::Kind;
use pbjson_types::{ListValue, Struct};

/// 2^63: the first double above every `i64`. Doubles below it (and at or above
/// `i64::MIN`) that have no fractional part convert to `i64` exactly.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
/// 2^64: the first double above every `u64`.
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

/// Converts a JSON value into a protobuf `Value`.
///
/// Every JSON number becomes a double, so integers beyond 2^53 lose precision:
/// that is a limit of `google.protobuf.Value`, not of this function.
pub fn to_proto(v: &serde_json::Value) -> pbjson_types::Value {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(to_proto).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), to_proto(v))).collect(),
        }),
    };
    pbjson_types::Value { kind: Some(kind) }
}

/// Converts a protobuf `Value` into a JSON value.
///
/// Doubles without a fractional part that fit an `i64` or `u64` become JSON
/// integers, so `{"n": 3}` comes back as `3` rather than `3.0`. A value with no
/// kind set, and NaN or infinite numbers (which JSON cannot represent), become
/// `null`.
pub fn from_proto(v: &pbjson_types::Value) -> serde_json::Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => number(*n),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(list)) => {
            serde_json::Value::Array(list.values.iter().map(from_proto).collect())
        }
        Some(Kind::StructValue(s)) => serde_json::Value::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), from_proto(v)))
                .collect(),
        ),
    }
}

/// A JSON number for a protobuf double: an integer when it is integral and
/// fits, `null` for NaN and infinities (which JSON cannot hold).
pub fn number(n: f64) -> serde_json::Value {
    if n.is_finite() && n.fract() == 0.0 {
        // The range checks make these casts exact: an integral double inside the
        // range is exactly representable in the integer type.
        if (-TWO_POW_63..TWO_POW_63).contains(&n) {
            return serde_json::Value::from(n as i64);
        }
        if (0.0..TWO_POW_64).contains(&n) {
            return serde_json::Value::from(n as u64);
        }
    }
    serde_json::Number::from_f64(n)
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}

/// Converts an optional protobuf `Value`; absent is `null`.
pub fn from_proto_opt(v: Option<&pbjson_types::Value>) -> serde_json::Value {
    v.map(from_proto).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_keeps_integers_nested_values_and_null() {
        let doc = json!({
            "count": 3,
            "negative": -42,
            "ratio": 0.25,
            "big": 9_007_199_254_740_992_i64,
            "name": "etl",
            "ok": true,
            "nothing": null,
            "items": [1, 2.5, "x", [null, {"deep": {"n": 7}}]],
            "empty_obj": {},
            "empty_list": []
        });
        let back = from_proto(&to_proto(&doc));
        assert_eq!(back, doc);
        // Integers must come back as integers, not as 3.0.
        assert!(back["count"].is_i64());
        assert_eq!(back["items"][3][1]["deep"]["n"].as_i64(), Some(7));
        assert!(back["ratio"].is_f64());
    }

    #[test]
    fn numbers_become_doubles_in_proto() {
        let v = to_proto(&json!(5));
        assert_eq!(v.kind, Some(Kind::NumberValue(5.0)));
        let v = to_proto(&json!(null));
        assert_eq!(v.kind, Some(Kind::NullValue(0)));
    }

    #[test]
    fn integral_doubles_become_integers_when_exact() {
        assert_eq!(number(-0.0), json!(0));
        assert!(number(1e15).is_i64());
        // Above i64::MAX but inside u64: still an exact integer.
        assert_eq!(number(1.8e19), json!(18_000_000_000_000_000_000_u64));
        // Beyond u64 the double stays a double.
        assert!(number(1e20).is_f64());
        assert!(number(-1e19).is_f64());
        assert_eq!(number(1.5), json!(1.5));
    }

    #[test]
    fn non_finite_and_unset_values_become_null() {
        let nan = pbjson_types::Value {
            kind: Some(Kind::NumberValue(f64::NAN)),
        };
        assert_eq!(from_proto(&nan), serde_json::Value::Null);
        let inf = pbjson_types::Value {
            kind: Some(Kind::NumberValue(f64::INFINITY)),
        };
        assert_eq!(from_proto(&inf), serde_json::Value::Null);
        assert_eq!(
            from_proto(&pbjson_types::Value { kind: None }),
            serde_json::Value::Null
        );
    }
}
