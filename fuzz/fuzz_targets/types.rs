//! Any JSON as declared types plus a value: checking the declarations, and
//! validating the value against each declared type, return errors (bounded
//! in depth and count), never panic.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use ork_domain::types::{check_types, validate};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    // `TYPES \n VALUE`: two JSON documents separated by the first newline.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (types, value) = text.split_once('\n').unwrap_or((text, "null"));
    let Ok(types) = serde_json::from_str::<BTreeMap<String, Value>>(types) else {
        return;
    };
    let Ok(value) = serde_json::from_str::<Value>(value) else {
        return;
    };
    if !check_types(&types).is_empty() {
        return;
    }
    for name in types.keys() {
        let _ = validate(&value, name, &types);
    }
});
