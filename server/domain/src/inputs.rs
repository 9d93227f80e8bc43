//! Declared run inputs (`inputs:`): what a run is started with, checked and
//! completed with defaults once, the same way for `StartRun`, the REST API
//! and schedule fires.
//!
//! A workflow without `inputs:` takes any input object as it is. One with it
//! takes only the declared fields (plus [`SCHEDULED_FOR`], which schedule
//! fires set), each checked against its type (the JSON-Schema subset of
//! [`crate::types`]); a missing field gets its `default`, and a field
//! without a default is required.

use std::fmt;

use serde_json::{Map, Value};

use crate::model::WorkflowDefinition;
use crate::suggest;

/// The input field every scheduled run gets: the fire time, RFC 3339.
pub const SCHEDULED_FOR: &str = "scheduled_for";
/// Violations listed per input field.
const VIOLATIONS_SHOWN: usize = 3;

/// One way a run's input does not match the declared inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// The input field at fault (`date`), empty for the input as a whole.
    pub field: String,
    pub message: String,
}

impl fmt::Display for InputError {
    /// `field `input.date`: message`, the API's convention for naming a field.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "field `input`: {}", self.message)
        } else {
            write!(f, "field `input.{}`: {}", self.field, self.message)
        }
    }
}

/// Every problem of one input, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputErrors(pub Vec<InputError>);

impl fmt::Display for InputErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InputErrors {}

/// An input name: what `{{ run.input.NAME }}` can reach and `--input NAME=`
/// can set, so letters, digits, `_` and `-`, not starting with a digit.
pub fn check_input_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.len() <= 128;
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not an input name; use letters, digits, `_` and `-`, starting with a letter"
        ))
    }
}

/// The input a run of `def` starts with: `input` checked against the
/// declared inputs, with the defaults of missing fields filled in. Without
/// `inputs:`, `input` is returned as it is.
pub fn apply_inputs(def: &WorkflowDefinition, input: &Value) -> Result<Value, InputErrors> {
    let Some(declared) = &def.inputs else {
        return Ok(input.clone());
    };
    let given = match input {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        other => {
            return Err(InputErrors(vec![InputError {
                field: String::new(),
                message: format!("a run's input must be an object, got {other}"),
            }]));
        }
    };
    let mut errors = Vec::new();
    for key in given.keys() {
        if key == SCHEDULED_FOR || declared.iter().any(|d| &d.name == key) {
            continue;
        }
        let names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
        let hint = match suggest::closest(key, names.iter().copied()) {
            Some(close) => format!(" (did you mean `{close}`?)"),
            None => String::new(),
        };
        let known = if names.is_empty() {
            "it declares none".to_owned()
        } else {
            format!("its inputs are: {}", names.join(", "))
        };
        errors.push(InputError {
            field: key.clone(),
            message: format!(
                "workflow `{}` declares no input `{key}`{hint}; {known}",
                def.name
            ),
        });
    }
    let mut out = given.clone();
    for d in declared {
        match given.get(&d.name) {
            Some(value) => {
                if let Err(violations) = crate::types::validate_schema(value, &d.schema, &def.types)
                {
                    let shown: Vec<String> = violations
                        .iter()
                        .take(VIOLATIONS_SHOWN)
                        .map(|v| {
                            if v.path.is_empty() {
                                v.message.clone()
                            } else {
                                v.to_string()
                            }
                        })
                        .collect();
                    errors.push(InputError {
                        field: d.name.clone(),
                        message: shown.join("; "),
                    });
                }
            }
            None if d.required => errors.push(InputError {
                field: d.name.clone(),
                message: format!(
                    "the input `{}` is required (it has no default); give it, e.g. `--input {}=VALUE`",
                    d.name, d.name
                ),
            }),
            None => {
                out.insert(d.name.clone(), d.default.clone().unwrap_or(Value::Null));
            }
        }
    }
    if errors.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(InputErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{ParseOptions, parse_workflow};
    use serde_json::json;

    fn workflow(inputs: &str) -> WorkflowDefinition {
        let yaml =
            format!("name: w\ninputs:\n{inputs}\ntasks:\n  - name: t\n    command: [\"true\"]\n");
        parse_workflow(&yaml, &ParseOptions::default()).expect("valid workflow")
    }

    fn messages(result: Result<Value, InputErrors>) -> String {
        match result {
            Ok(v) => panic!("accepted: {v}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_fill_missing_fields_and_given_ones_win() {
        let def = workflow(
            "  date: {type: string, default: \"2026-11-26\"}\n  n: {type: integer, default: 3, minimum: 1}\n  note: {type: [string, \"null\"], default: null}",
        );
        assert_eq!(
            apply_inputs(&def, &json!({})).expect("ok"),
            json!({"date": "2026-11-26", "n": 3, "note": null})
        );
        assert_eq!(
            apply_inputs(&def, &json!({"n": 7, "scheduled_for": "x"})).expect("ok"),
            json!({"date": "2026-11-26", "n": 7, "note": null, "scheduled_for": "x"})
        );
        assert_eq!(
            apply_inputs(&def, &Value::Null).expect("ok")["date"],
            "2026-11-26"
        );
    }

    #[test]
    fn mismatches_name_the_field() {
        let def = workflow(
            "  date: {type: string}\n  n: {type: integer, default: 3, minimum: 1}\n  db:\n    type: object\n    default: {}\n    properties: {port: {type: integer}}",
        );
        expect_test::expect![[r#"
            field `input.date`: the input `date` is required (it has no default); give it, e.g. `--input date=VALUE`"#]]
        .assert_eq(&messages(apply_inputs(&def, &json!({}))));
        expect_test::expect![[r#"
            field `input.dat`: workflow `w` declares no input `dat` (did you mean `date`?); its inputs are: date, n, db
            field `input.n`: expected at least 1, found number 0
            field `input.db`: at /port: expected integer, found string "x""#]]
        .assert_eq(&messages(apply_inputs(
            &def,
            &json!({"dat": "x", "date": "d", "n": 0, "db": {"port": "x"}}),
        )));
        expect_test::expect![[r#"
            field `input`: a run's input must be an object, got [1]"#]]
        .assert_eq(&messages(apply_inputs(&def, &json!([1]))));
    }

    #[test]
    fn without_inputs_anything_goes() {
        let yaml = "name: w\ntasks:\n  - name: t\n    command: [\"true\"]\n";
        let def = parse_workflow(yaml, &ParseOptions::default()).expect("valid");
        assert_eq!(
            apply_inputs(&def, &json!({"x": [1]})).expect("ok"),
            json!({"x": [1]})
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(check_input_name("date").is_ok());
        assert!(check_input_name("_x-1").is_ok());
        assert!(check_input_name("1x").is_err());
        assert!(check_input_name("a.b").is_err());
        assert!(check_input_name("").is_err());
    }
}
