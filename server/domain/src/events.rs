//! Events: names, ids, subscription filters and the input of the runs they
//! start. Pure; the server records each event once (`state::events`) and
//! starts one run of every workflow whose `on:` matches.
//!
//! A workflow subscribes with `on: {event: NAME, filter: {PATH: VALUE}}`:
//! every published event of that name whose data has each `PATH` (dotted,
//! into nested objects) equal to its `VALUE` starts one run, with the
//! event as its input: `{"event": {"id", "name", "data"}}`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::OnTriggers;

/// Longest event name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest event id, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Most fields one filter compares.
pub const MAX_FILTER_FIELDS: usize = 16;
/// Longest secret name, in bytes.
pub const MAX_SECRET_NAME_LEN: usize = 128;

/// An event name: 1–128 letters, digits, `.`, `_`, `-` and `/`, starting
/// with a letter or digit (`order.created`, `github/push`).
pub fn check_name(name: &str) -> Result<(), String> {
    let fine = (1..=MAX_NAME_LEN).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if fine {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid event name; use 1 to {MAX_NAME_LEN} letters, digits, `.`, `_`, `-` and `/`, starting with a letter or digit (e.g. `order.created`)",
            name.chars().take(80).collect::<String>()
        ))
    }
}

/// An event id: 1–128 printable ASCII characters without spaces.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_LEN || !id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "use 1 to {MAX_ID_LEN} printable ASCII characters without spaces as an event id (or leave it out to get a generated one)"
        ));
    }
    Ok(())
}

/// A secret name: 1–128 letters, digits, `_`, `-` and `.`, not starting
/// with `.` (it names a file in the server's secrets folder).
pub fn check_secret_name(name: &str) -> Result<(), String> {
    let fine = (1..=MAX_SECRET_NAME_LEN).contains(&name.len())
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if fine {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid secret name; use 1 to {MAX_SECRET_NAME_LEN} letters, digits, `_`, `-` and `.`, not starting with `.`",
            name.chars().take(80).collect::<String>()
        ))
    }
}

/// A filter path: dot-separated non-empty keys.
pub fn check_filter_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.split('.').any(str::is_empty) || path.len() > 256 {
        return Err(format!(
            "`{}` is not a field path; use keys separated by dots, e.g. `customer.tier`",
            path.chars().take(80).collect::<String>()
        ));
    }
    Ok(())
}

/// Whether `data` has every filtered field equal to its value.
pub fn matches(filter: &BTreeMap<String, Value>, data: &Value) -> bool {
    filter.iter().all(|(path, want)| {
        path.split('.')
            .try_fold(data, |v, key| v.get(key))
            .is_some_and(|got| got == want)
    })
}

/// Whether a workflow's `on:` subscribes to this event.
pub fn subscribes(on: &OnTriggers, name: &str, data: &Value) -> bool {
    on.event.as_deref() == Some(name) && matches(&on.filter, data)
}

/// The input of a run an event starts.
pub fn run_input(id: &str, name: &str, data: &Value) -> Value {
    json!({ "event": { "id": id, "name": name, "data": data } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compare_nested_fields() {
        let filter = BTreeMap::from([
            ("region".to_owned(), json!("eu")),
            ("customer.tier".to_owned(), json!("gold")),
        ]);
        assert!(matches(
            &filter,
            &json!({"region": "eu", "customer": {"tier": "gold", "id": 7}})
        ));
        assert!(!matches(
            &filter,
            &json!({"region": "eu", "customer": {"tier": "silver"}})
        ));
        assert!(!matches(&filter, &json!({"region": "eu"})));
        assert!(matches(&BTreeMap::new(), &json!(null)));
    }

    #[test]
    fn names_ids_and_paths_are_checked() {
        assert!(check_name("order.created").is_ok());
        assert!(check_name("github/push").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name(".hidden").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_id("delivery-1").is_ok());
        assert!(check_id("has space").is_err());
        assert!(check_id(&"x".repeat(129)).is_err());
        assert!(check_filter_path("a.b").is_ok());
        assert!(check_filter_path("a..b").is_err());
        assert!(check_secret_name("github-hook").is_ok());
        assert!(check_secret_name("../etc/passwd").is_err());
    }
}
