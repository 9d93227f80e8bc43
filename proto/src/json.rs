//! Conversions between `serde_json::Value` and `google.protobuf.Value`.
//!
//! Protobuf numbers are doubles, so integers above 2^53 lose precision; integral
//! doubles come back as JSON integers so `3` does not turn into `3.0`.

use pbjson_types::value::Kind;
use pbjson_types::{ListValue, Struct, Value};

/// Converts JSON to a protobuf `Value`.
pub fn to_proto(value: &serde_json::Value) -> Value {
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(to_proto).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), to_proto(v))).collect(),
        }),
    };
    Value { kind: Some(kind) }
}

/// Converts a protobuf `Value` to JSON; an unset value is `null`.
pub fn from_proto(value: &Value) -> serde_json::Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => number(*n),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(list)) => {
            serde_json::Value::Array(list.values.iter().map(from_proto).collect())
        }
        Some(Kind::StructValue(s)) => serde_json::Value::Object(
            s.fields.iter().map(|(k, v)| (k.clone(), from_proto(v))).collect(),
        ),
    }
}

/// Converts an optional protobuf `Value`; absent is `null`.
pub fn from_proto_opt(value: Option<&Value>) -> serde_json::Value {
    value.map(from_proto).unwrap_or(serde_json::Value::Null)
}

const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0; // 2^53

fn number(n: f64) -> serde_json::Value {
    if n.fract() == 0.0 && n.abs() <= MAX_EXACT_INTEGER {
        // Exact: |n| <= 2^53 fits i64 without rounding.
        #[allow(clippy::cast_possible_truncation)]
        return serde_json::Value::from(n as i64);
    }
    serde_json::Number::from_f64(n)
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_nested_values_and_keeps_integers() {
        let original = json!({"a": 1, "b": [true, null, "x", 2.5, -7], "c": {"d": {}}});
        assert_eq!(from_proto(&to_proto(&original)), original);
    }

    #[test]
    fn unset_value_is_null() {
        assert_eq!(from_proto(&Value { kind: None }), serde_json::Value::Null);
        assert_eq!(from_proto_opt(None), serde_json::Value::Null);
    }

    #[test]
    fn non_finite_numbers_become_null() {
        let v = Value { kind: Some(Kind::NumberValue(f64::NAN)) };
        assert_eq!(from_proto(&v), serde_json::Value::Null);
    }
}
