//! Conversion between `serde_json::Value` (what users type and read) and
//! `google.protobuf.Value` (what the API carries).
//!
//! Protobuf has only `f64` numbers, so integral numbers are turned back into
//! JSON integers on the way out: `{"count": 3}` must not come back as `3.0`.
//! A shared helper will replace this module once another crate provides one.

use pbjson_types::value::Kind;

/// Largest integer an `f64` holds exactly (2^53); beyond it a float stays a float.
const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// Turns user JSON into a protobuf `Value`.
pub fn to_proto(value: &serde_json::Value) -> pbjson_types::Value {
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(pbjson_types::ListValue {
            values: items.iter().map(to_proto).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(pbjson_types::Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), to_proto(v))).collect(),
        }),
    };
    pbjson_types::Value { kind: Some(kind) }
}

/// Turns a protobuf `Value` into JSON, with integral numbers as integers and
/// object keys sorted (protobuf keeps them in a hash map, so order is random).
pub fn from_proto(value: &pbjson_types::Value) -> serde_json::Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => number(*n),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(list)) => {
            serde_json::Value::Array(list.values.iter().map(from_proto).collect())
        }
        Some(Kind::StructValue(st)) => serde_json::Value::Object(
            st.fields
                .iter()
                .map(|(k, v)| (k.clone(), from_proto(v)))
                .collect(),
        ),
    }
}

/// A JSON number for `n`: an integer when `n` is integral and exact, `null`
/// for NaN and infinities (which JSON cannot hold).
pub fn number(n: f64) -> serde_json::Value {
    if n.fract() == 0.0 && n.abs() <= MAX_EXACT_INTEGER {
        // The range check above makes the cast exact.
        serde_json::Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_keeps_integers_and_nesting() {
        let value = json!({"n": 3, "f": 1.5, "neg": -2, "s": "x", "b": true, "z": null,
                           "list": [1, {"a": [2.25]}]});
        assert_eq!(from_proto(&to_proto(&value)), value);
    }

    #[test]
    fn huge_and_non_finite_numbers() {
        assert_eq!(number(1e300), json!(1e300));
        assert_eq!(number(f64::NAN), json!(null));
        assert_eq!(number(-0.0), json!(0));
    }
}
