//! Run labels: short `key=value` pairs a run carries from its start (given
//! by the caller) so run history can be filtered by them.
//!
//! The limits keep a label cheap to index and to show in a table row, and
//! bound what one client request can make the server store.

use std::collections::BTreeMap;

/// At most this many labels on one run (and label filters in one query).
pub const MAX_LABELS: usize = 16;
/// Longest label key, in bytes.
pub const MAX_KEY_LEN: usize = 63;
/// Longest label value, in bytes.
pub const MAX_VALUE_LEN: usize = 255;

/// Checks one key: 1–63 of `a-z A-Z 0-9 . _ - /`, starting with a letter
/// or digit (what a shell and a URL query carry without quoting).
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("a label key is empty: write labels as key=value".into());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!(
            "label key `{}…` is {} bytes long; the limit is {MAX_KEY_LEN}",
            key.chars().take(20).collect::<String>(),
            key.len()
        ));
    }
    let first_ok = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if !first_ok || !rest_ok {
        return Err(format!(
            "label key `{}` is not allowed: use letters, digits, `.`, `_`, `-` and `/`, starting with a letter or digit",
            key.escape_debug()
        ));
    }
    Ok(())
}

/// Checks one value: at most 255 bytes, no control characters.
pub fn check_value(key: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_VALUE_LEN {
        return Err(format!(
            "label `{key}`: the value is {} bytes long; the limit is {MAX_VALUE_LEN}",
            value.len()
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!(
            "label `{key}`: the value contains a control character"
        ));
    }
    Ok(())
}

/// Checks a run's labels against every limit.
pub fn check(labels: &BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!(
            "{} labels given; a run carries at most {MAX_LABELS}",
            labels.len()
        ));
    }
    for (key, value) in labels {
        check_key(key)?;
        check_value(key, value)?;
    }
    Ok(())
}

/// Parses `key=value` (the CLI's `--label` and the `label` filter of
/// ListRuns). The value may contain `=`; it may be empty.
pub fn parse_pair(text: &str) -> Result<(String, String), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!(
            "label `{}` has no `=`: write it as key=value, e.g. team=data",
            text.escape_debug()
        ));
    };
    check_key(key)?;
    check_value(key, value)?;
    Ok((key.to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_pair("team=data").unwrap(),
            ("team".into(), "data".into())
        );
        assert_eq!(parse_pair("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_pair("env=").unwrap(), ("env".into(), String::new()));
        assert!(parse_pair("team").unwrap_err().contains("key=value"));
        assert!(parse_pair("=x").unwrap_err().contains("empty"));
        assert!(parse_pair("te am=x").unwrap_err().contains("not allowed"));
        assert!(parse_pair("-x=y").unwrap_err().contains("starting with"));
        let long = "k".repeat(64);
        assert!(parse_pair(&format!("{long}=v")).unwrap_err().contains("63"));
        let value = "v".repeat(256);
        assert!(
            parse_pair(&format!("k={value}"))
                .unwrap_err()
                .contains("255")
        );
        assert!(parse_pair("k=a\nb").unwrap_err().contains("control"));
    }

    #[test]
    fn too_many_labels_are_refused() {
        let labels: BTreeMap<String, String> = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".to_owned()))
            .collect();
        assert!(check(&labels).unwrap_err().contains("at most 16"));
        let labels: BTreeMap<String, String> = (0..MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".to_owned()))
            .collect();
        check(&labels).unwrap();
    }
}
