//! Decoding a request message from JSON (the REST gateway's bodies and
//! query strings), in the proto3 JSON mapping, with the wrong field named.
//!
//! Kept here, beside the messages, so the gateway and the fuzz target decode
//! exactly the same way.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a JSON value is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The field that was wrong (`limit`, `input.x`), when one was.
    pub field: Option<String>,
    /// What was wrong, as serde says it.
    pub message: String,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "field `{field}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Parses `value` into message `T`, naming the field that was wrong.
pub fn message<T: DeserializeOwned>(value: Value) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let field = if path == "." {
            message
                .strip_prefix("unknown field `")
                .and_then(|r| r.split_once('`'))
                .map(|(f, _)| f.to_owned())
        } else {
            Some(path)
        };
        DecodeError { field, message }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1;
    use serde_json::json;

    #[test]
    fn the_wrong_field_is_named() {
        let err = message::<v1::ListRunsRequest>(json!({"limit": "many"})).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("limit"), "{err:?}");
        let err = message::<v1::ListRunsRequest>(json!({"nope": 1})).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("nope"), "{err:?}");
        let ok = message::<v1::ListRunsRequest>(json!({"workflow": "etl", "limit": 3}));
        assert_eq!(ok.map(|r| r.limit), Ok(3));
    }
}
